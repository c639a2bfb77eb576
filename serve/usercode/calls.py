"""How the server calls into user code: the context it passes, what it catches, what it takes back.

Shared by both script styles (``tfs.py``, ``toolkit.py``): the ``context`` fields of AWS's
TensorFlow serving container, ``user_call`` (a script may end its own request, never its
process), and the bodies and predictions a script may return.
"""
from __future__ import annotations

import inspect
import logging
from collections import namedtuple
from typing import Any, Callable

import numpy as np
import orjson

from serve.contract.errors import ServeError, UserCodeError

log = logging.getLogger(__name__)


# The field names of AWS's TensorFlow serving container's context, in its order.
Context = namedtuple(
    "Context",
    "model_name, model_version, method, rest_uri, grpc_port, channel, "
    "custom_attributes, request_content_type, accept_header, content_length")


def user_call(what: str, fn: Callable, *args):
    """Call into inference.py; its exceptions become 500s carrying their message. So do SystemExit,
    KeyboardInterrupt and the like: user code may end its own request, never its process."""
    try:
        return fn(*args)
    except ServeError:
        raise
    except BaseException as exc:
        log.error("%s raised %s", what, type(exc).__name__, exc_info=not isinstance(exc, SystemExit))
        raise UserCodeError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def to_bytes(body: Any) -> bytes:
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def as_outputs(prediction: Any) -> dict[str, np.ndarray]:
    if isinstance(prediction, dict):
        return {str(k): np.asarray(v) for k, v in prediction.items()}
    if hasattr(prediction, "numpy"):
        prediction = prediction.numpy()
    return {"output": np.asarray(prediction)}


def takes_context(fn: Callable, required: int) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) > required or any(p.kind == p.VAR_POSITIONAL for p in params)
