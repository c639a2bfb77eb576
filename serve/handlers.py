"""From an invocation to a response body: the default path, or the user's inference.py.

Handlers share one interface (``handle(Invocation) -> Result``):
- ``DefaultHandler``: decode -> route -> signature -> ``infer`` -> encode. In an HTTP worker
  ``infer`` sends the arrays to the model process (``serve.modelclient``); in the model process
  it is the batcher itself.
- ``TfsHandler``: scripts written for AWS's TensorFlow serving container
  (``input_handler``/``output_handler`` or ``handler``), run in the HTTP workers as that
  container runs them in gunicorn, given the same ``context`` fields and a real
  ``requests.Response`` from the model.
- ``ToolkitHandler``: scripts written for the sagemaker-inference-toolkit (``model_fn``,
  ``input_fn``, ``predict_fn``, ``output_fn`` or ``transform_fn``), run in the model process
  next to the model; what a script leaves out falls back to the defaults. The HTTP worker
  hands such a request over whole (``modelclient.ModelClient.script``).
"""
from __future__ import annotations

import inspect
import io
import logging
import re
import threading
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np
import orjson

from . import codecs
from .batching import Batcher
from .errors import BadRequest, Overloaded, RequestTimeout, ServeError, UserCodeError
from .model import METHODS, Model, Repository, Signature
from .usercode import TOOLKIT_FUNCTIONS

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)


# The field names of AWS's TensorFlow serving container's context, in its order.
Context = namedtuple(
    "Context",
    "model_name, model_version, method, rest_uri, grpc_port, channel, "
    "custom_attributes, request_content_type, accept_header, content_length")


@dataclass(frozen=True)
class Invocation:
    body: bytes
    content_type: str | None
    accept: str | None
    custom_attributes: str | None = None


@dataclass(frozen=True)
class Result:
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Target:
    """Which model, version and TF Serving method a request is for (None: the defaults)."""
    name: str | None = None
    version: str | None = None
    method: str = "predict"

    @classmethod
    def of(cls, name: str | None, version: str | None, method: str | None) -> "Target":
        method = method or "predict"
        if method not in METHODS:
            raise BadRequest(f"tfs-method={method} is not one of {', '.join(METHODS)}")
        if version is not None and not version.isdigit():
            raise BadRequest(f"tfs-model-version={version} is not a version number")
        return cls(name or None, version, method)

    @classmethod
    def from_attributes(cls, header: str | None) -> "Target":
        """X-Amzn-SageMaker-Custom-Attributes' tfs-model-name, tfs-model-version and tfs-method."""
        attrs = tfs_attributes(header)
        return cls.of(attrs.get("tfs-model-name"), attrs.get("tfs-model-version"), attrs.get("tfs-method"))


@dataclass(frozen=True)
class Servable:
    """One loaded model version and the batcher that owns its calls (in the model process)."""
    model: Model
    batcher: Batcher


# infer(model, signature name, prepared inputs or None, (examples, context) or None, timeout) -> outputs
Infer = Callable[[Model, str, "dict[str, np.ndarray] | None", "tuple | None", float], "dict[str, np.ndarray]"]


class Handler(Protocol):
    def handle(self, invocation: Invocation) -> Result: ...


class DefaultHandler:
    """decode -> route (model, version, method) -> signature -> batcher -> encode."""

    def __init__(self, repository: Repository[Model], infer: Infer, timeout: float, max_queued: int | None = None):
        self.repository = repository
        self._infer = infer
        self._timeout = timeout
        self._max_queued = max_queued
        self._queued = 0
        self._lock = threading.Lock()

    @property
    def model(self) -> Model:
        return self.repository.get()

    def predict(self, inputs: codecs.Inputs, signature_name: str | None = None,
                target: Target = Target()) -> dict[str, np.ndarray]:
        model = self.repository.get(target.name, target.version)
        signature = model.signature(signature_name)
        with self._admitted():
            return self._infer(model, signature.name, signature.prepare(inputs), None, self._timeout)

    def handle(self, invocation: Invocation, target: Target | None = None) -> Result:
        target = target or Target.from_attributes(invocation.custom_attributes)
        model = self.repository.get(target.name, target.version)  # a 404 costs nothing
        accept = codecs.negotiate(invocation.accept)  # nor does a 406
        with self._admitted():
            decoded = codecs.decode(invocation.body, invocation.content_type)
            method, signature, examples = _request(model, decoded, target)
            inputs = None if examples is not None else signature.prepare(decoded.inputs)
            outputs = self._infer(model, signature.name, inputs, examples, self._timeout)
        if method != "predict":
            return Result(*codecs.encode_results(method, outputs))
        return Result(*codecs.encode(outputs, accept, columnar=decoded.columnar))

    @contextmanager
    def _admitted(self):
        """TF Serving's max_enqueued_batches: past it a request is refused at once, not queued."""
        with self._lock:
            if self._max_queued is not None and self._queued >= self._max_queued:
                raise Overloaded(f"{self._queued} requests are already queued "
                                 f"(SAGEMAKER_TFS_MAX_ENQUEUED_BATCHES x SAGEMAKER_TFS_MAX_BATCH_SIZE); retry later")
            self._queued += 1
        try:
            yield
        finally:
            with self._lock:
                self._queued -= 1


def _request(model: Model, decoded: codecs.Decoded, target: Target) -> tuple[str, Signature, tuple | None]:
    """The method and signature a decoded body asks for, as TF Serving reads them, and its
    (examples, context) when it is a classify or regress body (serialized where TensorFlow is)."""
    if decoded.examples is None:
        if target.method != "predict":
            raise BadRequest(f'{target.method} takes TF Serving\'s {{"examples": [...]}} body, '
                             f'not "instances" or "inputs"')
        return "predict", model.signature(decoded.signature_name), None
    method = target.method
    if method == "predict":  # the signature says what the examples are for
        signature = model.signature(decoded.signature_name)
        if signature.method == "predict":
            raise BadRequest('"examples" are for classify and regress: send tfs-method=classify or regress in '
                             'X-Amzn-SageMaker-Custom-Attributes (or POST to /v1/models/NAME:classify), '
                             'and name a classify or regress signature in "signature_name"')
        method = signature.method
    else:
        signature = model.signature(decoded.signature_name, method)
    signature.example_input  # noqa: B018 -- a 400 here if it takes no Examples, before any work
    return method, signature, (decoded.examples, decoded.context)


class Watchdog:
    """Runs user code on a pool thread so that a hung script answers 504 instead of hanging.

    A call still running after its caller got the 504 holds its thread. When every thread is
    held so, no request can be served any more: ``exhausted`` says so (and ``on_change`` is told),
    so that /ping answers 503 and SageMaker replaces the instance instead of billing a server
    that only answers 504.
    """

    def __init__(self, timeout: float, threads: int, on_change: Callable[[bool], None] | None = None):
        self._timeout = timeout
        self._threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="user-code")
        self._hung = 0
        self._lock = threading.Lock()
        self.on_change = on_change

    @property
    def exhausted(self) -> bool:
        return self._hung >= self._threads

    def _count(self, delta: int) -> None:
        with self._lock:
            before = self.exhausted
            self._hung += delta
            after = self.exhausted
        if before != after:
            log.error("user code holds all %d of its threads, hung past the timeout; /ping answers 503",
                      self._threads) if after else log.info("user code threads free again")
            if self.on_change is not None:
                self.on_change(after)

    def run(self, fn: Callable[[], Result]) -> Result:
        if self.exhausted:
            raise RequestTimeout("inference.py has hung on every thread it has; this server cannot answer")
        future = self._pool.submit(fn)
        try:
            return future.result(timeout=self._timeout)
        except FutureTimeout:
            self._count(+1)
            future.add_done_callback(lambda _: self._count(-1))
            raise RequestTimeout(f"inference.py did not answer within {self._timeout:.0f} s "
                                 f"(SAGEMAKER_MODEL_SERVER_TIMEOUT)") from None


def _user_call(what: str, fn: Callable, *args):
    """Call into inference.py; its exceptions become 500s carrying their message. So do SystemExit,
    KeyboardInterrupt and the like: user code may end its own request, never its process."""
    try:
        return fn(*args)
    except ServeError:
        raise
    except BaseException as exc:
        log.error("%s raised %s", what, type(exc).__name__, exc_info=not isinstance(exc, SystemExit))
        raise UserCodeError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def _to_bytes(body: Any) -> bytes:
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _as_outputs(prediction: Any) -> dict[str, np.ndarray]:
    if isinstance(prediction, dict):
        return {str(k): np.asarray(v) for k, v in prediction.items()}
    if hasattr(prediction, "numpy"):
        prediction = prediction.numpy()
    return {"output": np.asarray(prediction)}


def tfs_attributes(header: str | None) -> dict[str, str]:
    """The tfs-* key=value pairs of a custom-attributes header, found as AWS's container finds them."""
    if not header:
        return {}
    return {k.strip(): v.strip() for k, v in
            (m.split("=", 1) for m in re.findall(r"(tfs-[a-z\-]+=[^,]+)", header))}


class TfsHandler:
    """AWS TensorFlow serving container scripts, run unchanged."""

    def __init__(self, module: ModuleType, default: DefaultHandler, port: int, watchdog: Watchdog):
        self._module = module
        self._default = default
        self._port = port
        self._watchdog = watchdog
        self._handler = getattr(module, "handler", None)
        self._input = getattr(module, "input_handler", None)
        self._output = getattr(module, "output_handler", None)

    def context(self, invocation: Invocation) -> Context:
        attrs = tfs_attributes(invocation.custom_attributes)
        name = attrs.get("tfs-model-name", self._default.repository.default)
        version = attrs.get("tfs-model-version")
        method = attrs.get("tfs-method", "predict")
        uri = f"http://127.0.0.1:{self._port}/v1/models/{name}"
        uri += (f"/versions/{version}" if version else "") + f":{method}"
        return Context(name, version, method, uri, None, None, invocation.custom_attributes,
                       invocation.content_type or codecs.JSON, invocation.accept or codecs.JSON,
                       len(invocation.body))

    def model_response(self, request_body: Any, context: Context) -> "requests.Response":
        """What TF Serving's REST API would have answered, as the requests.Response scripts expect."""
        import requests  # only scripts of this style need it

        response = requests.Response()
        response.headers["Content-Type"] = codecs.JSON
        response.encoding = "utf-8"
        try:
            target = Target.of(context.model_name, context.model_version, context.method)
            result = self._default.handle(Invocation(_to_bytes(request_body), codecs.JSON, codecs.JSON), target)
            response.status_code, response._content = 200, result.body
        except ServeError as exc:
            response.status_code, response._content = exc.status, codecs.encode_error(exc.message)
        response.reason = requests.status_codes._codes.get(response.status_code, ("",))[0].upper()
        return response

    def handle(self, invocation: Invocation) -> Result:
        return self._watchdog.run(lambda: self._handle(invocation))

    def _handle(self, invocation: Invocation) -> Result:
        context = self.context(invocation)
        data = io.BytesIO(invocation.body)
        if self._handler is not None:
            body, content_type = _user_call("handler", self._handler, data, context)
            return Result(_to_bytes(body), content_type or context.accept_header)
        request_body = (_user_call("input_handler", self._input, data, context)
                        if self._input else invocation.body)
        response = self.model_response(request_body, context)
        if self._output is None:
            if response.status_code != 200:
                raise ServeError(response.json()["error"], status=response.status_code)
            return Result(response.content, codecs.JSON)
        try:
            body, content_type = _user_call("output_handler", self._output, response, context)
        except UserCodeError as exc:
            if response.status_code != 200:  # the script re-raised the model's own complaint
                raise ServeError(response.json()["error"], status=response.status_code) from exc
            raise
        return Result(_to_bytes(body), content_type or context.accept_header)


def _takes_context(fn: Callable, required: int) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) > required or any(p.kind == p.VAR_POSITIONAL for p in params)


class ToolkitHandler:
    """sagemaker-inference-toolkit scripts, run unchanged; missing functions use the defaults."""

    def __init__(self, module: ModuleType, model: Any, default: DefaultHandler | None, watchdog: Watchdog):
        self._model = model
        self._default = default
        self._watchdog = watchdog
        self._fns = {name: getattr(module, name, None) for name in TOOLKIT_FUNCTIONS}

    def _call(self, name: str, context: Context, *args):
        fn = self._fns[name]
        required = len(args)
        if _takes_context(fn, required):
            args = (*args, context)
        return _user_call(name, fn, *args)

    def handle(self, invocation: Invocation) -> Result:
        return self._watchdog.run(lambda: self._handle(invocation))

    def _default_predict(self, data: Any, signature_name: str | None, target: Target) -> dict[str, np.ndarray]:
        if self._default is not None and isinstance(self._model, Model):
            return self._default.predict(data, signature_name, target)
        model = self._model
        fn = getattr(model, "predict", None) or model
        return _as_outputs(_user_call("the model returned by model_fn", fn, data))

    def _handle(self, invocation: Invocation) -> Result:
        content_type = invocation.content_type or codecs.JSON
        accept = invocation.accept or codecs.JSON
        target = Target.from_attributes(invocation.custom_attributes)
        context = Context(target.name or getattr(self._model, "name", "model"), target.version, target.method,
                          None, None, None, invocation.custom_attributes, content_type, accept,
                          len(invocation.body))
        if self._fns["transform_fn"]:
            result = self._call("transform_fn", context, self._model, invocation.body, content_type, accept)
            return self._result(result, accept)
        if self._fns["output_fn"] is None:
            codecs.negotiate(invocation.accept)  # fail a bad Accept before doing any work
        signature, columnar = None, False
        if self._fns["input_fn"]:
            data = self._call("input_fn", context, invocation.body, content_type)
        else:
            decoded = codecs.decode(invocation.body, content_type)
            data, signature, columnar = decoded.inputs, decoded.signature_name, decoded.columnar
        if self._fns["predict_fn"]:
            prediction = self._call("predict_fn", context, data, self._model)
        else:
            prediction = self._default_predict(data, signature, target)
        if self._fns["output_fn"]:
            return self._result(self._call("output_fn", context, prediction, accept), accept)
        return Result(*codecs.encode(_as_outputs(prediction), codecs.negotiate(invocation.accept), columnar))

    @staticmethod
    def _result(result: Any, accept: str) -> Result:
        if isinstance(result, tuple) and len(result) == 2:
            return Result(_to_bytes(result[0]), result[1] or accept)
        return Result(_to_bytes(result), accept)
