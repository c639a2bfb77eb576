"""Layer 2: the steps on AWS. Endpoint lifecycle, staging, scaling, waiting, clean-up, batch
transform, migration, invocation, multi-model prefixes.

Imports local/ and core/, never commands/.
"""
