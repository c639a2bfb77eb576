from importlib.metadata import version as _v
__all__ = ["__version__"]
try:
    __version__ = _v("sagemaker-tf-graviton")
except Exception:  # running from a source tree that is not installed
    __version__ = "0.0.0"
