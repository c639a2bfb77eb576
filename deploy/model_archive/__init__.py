"""What a SageMaker model archive holds and how to unpack one safely: standard library only.

Written once for both sides: the `deploy` command packages and checks archives with it, and the
server finds its models and unpacks user code with it. It lives in the deploy distribution
(deploy/pyproject.toml) because the server may depend on the light package, never the reverse;
the root distribution (the server) ships this package too, so the image carries no deploy code.
"""
