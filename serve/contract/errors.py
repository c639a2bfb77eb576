"""The errors the request path raises, each with the HTTP status it maps to.

Routes never pick status codes themselves: they raise one of these, and the app
turns it into ``{"error": message}`` with the status below.
"""
from __future__ import annotations

import os
import sysconfig
import traceback
from pathlib import Path


class ServeError(Exception):
    status = 500
    close_connection = False   # part of the body may still be on the wire: never read it as a request
    close_at_once = False      # ... and none is coming: no linger for it

    def __init__(self, message: str, status: int | None = None, plain: bool = False):
        super().__init__(message)
        self.message = message
        # PLAIN: the message holds only what the caller sent and fixed text (a path it gave, a route),
        # so it goes out as is, without the path cutting meant for messages from inside
        self.plain = plain
        if status is not None:  # relaying a status decided elsewhere (e.g. the model's answer)
            self.status = status


class BadRequest(ServeError):
    """The body cannot be parsed, or does not fit the signature."""
    status = 400


class NotFound(ServeError):
    """No loaded model or version by the name the request gives (TF Serving answers 404 too)."""
    status = 404


class IncompleteBody(BadRequest):
    """Fewer bytes than Content-Length announced (the client closed, or stalled past the deadline)."""
    close_connection = True
    close_at_once = True


class MalformedBody(BadRequest):
    """A chunked body whose framing is broken (a chunk-size line that is not hex, a missing CRLF):
    where the next request would start is unknown, so the connection closes after the answer."""
    close_connection = True


class TooMuchMemory(ServeError):
    """Decoding the body, or building its arrays, needed more memory than could be allocated.

    A 413 (the request is larger than the server is able to process), not a 500: the same request
    fails the same way every time, and the caller fixes it by sending fewer or smaller instances;
    the process goes on serving."""
    status = 413

    @classmethod
    def of(cls, exc: MemoryError) -> "TooMuchMemory":
        # NumPy's own message names the shape and dtype it could not allocate
        return cls(f"the request decodes to more memory than this server can allocate "
                   f"({exc or type(exc).__name__}); send fewer or smaller instances")


class UnsupportedContentType(ServeError):
    status = 415


class NotAcceptable(ServeError):
    status = 406


class PayloadTooLarge(ServeError):
    status = 413
    close_connection = True


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



_STDLIB = tuple({sysconfig.get_paths()[key] + os.sep for key in ("stdlib", "platstdlib")})


def describe_failure(exc: BaseException) -> str:
    """One line: the exception, its first message line, and where in the user's code it was raised."""
    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not any(part in f.filename for part in ("site-packages", "<frozen", f"{os.sep}serve{os.sep}"))
              and not f.filename.startswith(_STDLIB)]   # signal.signal's own line is not the user's
    if frames:
        text += f" (at {Path(frames[-1].filename).name}, line {frames[-1].lineno})"
    return text
