"""The errors the request path raises, each with the HTTP status it maps to.

Routes never pick status codes themselves: they raise one of these, and the app
turns it into ``{"error": message}`` with the status below.
"""
from __future__ import annotations


class ServeError(Exception):
    status = 500

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:  # relaying a status decided elsewhere (e.g. the model's answer)
            self.status = status


class BadRequest(ServeError):
    """The body cannot be parsed, or does not fit the signature."""
    status = 400


class NotFound(ServeError):
    """No loaded model or version by the name the request gives (TF Serving answers 404 too)."""
    status = 404


class UnsupportedContentType(ServeError):
    status = 415


class NotAcceptable(ServeError):
    status = 406


class PayloadTooLarge(ServeError):
    status = 413


class UserCodeError(ServeError):
    """An exception raised inside the user's inference.py."""
    status = 500


class ModelNotReady(ServeError):
    status = 503


class Overloaded(ServeError):
    """More requests queued than SAGEMAKER_TFS_MAX_ENQUEUED_BATCHES allows."""
    status = 503


class RequestTimeout(ServeError):
    status = 504

