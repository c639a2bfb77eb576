"""From an invocation to a response body on the default path: decode -> route -> signature ->
``infer`` -> encode.

``DefaultHandler`` is one ``Handler`` (``handle(Invocation) -> Result``). In an HTTP worker its
``infer`` sends the arrays to the model process (``serve.http_worker.modelclient``); in the model process it
is the batcher itself. The user's inference.py, in either style, is ``serve.usercode``: its
handlers have the same interface and fall back to this one.
"""
from __future__ import annotations

import logging
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from serve.contract import codecs
from serve.contract.errors import BadRequest, Overloaded
from model_archive.layout import version_number
from serve.contract.signature import METHODS, Model, Repository, Signature, scalar_rows, unrow

log = logging.getLogger(__name__)


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
        if version is not None:
            number = version_number(version)
            if number is None:
                raise BadRequest(f"tfs-model-version={version} is not a version number")
            version = number  # as TF Serving reads it: 00000123 is 123
        return cls(name or None, version, method)

    @classmethod
    def from_attributes(cls, header: str | None) -> "Target":
        """X-Amzn-SageMaker-Custom-Attributes' tfs-model-name, tfs-model-version and tfs-method."""
        attrs = tfs_attributes(header)
        return cls.of(attrs.get("tfs-model-name"), attrs.get("tfs-model-version"), attrs.get("tfs-method"))


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
            prepared = signature.prepare(inputs)
            outputs = self._infer(model, signature.name, prepared, None, self._timeout)
        return unrow(outputs, scalar_rows(inputs, prepared))

    def handle(self, invocation: Invocation, target: Target | None = None) -> Result:
        target = target or Target.from_attributes(invocation.custom_attributes)
        model = self.repository.get(target.name, target.version)  # a 404 costs nothing
        accept = codecs.negotiate(invocation.accept)  # nor does a 406
        with self._admitted():
            decoded = codecs.decode(invocation.body, invocation.content_type)
            method, signature, examples = _request(model, decoded, target)
            inputs = None if examples is not None else signature.prepare(decoded.inputs)
            outputs = self._infer(model, signature.name, inputs, examples, self._timeout)
        if inputs is not None:  # scalars in, scalars out, as TF Serving answers them
            outputs = unrow(outputs, scalar_rows(decoded.inputs, inputs))
        return Result(*decoded.reply(outputs, accept, method))

    @contextmanager
    def _admitted(self):
        """TF Serving's max_enqueued_batches: past it a request is refused at once, not queued."""
        if self._max_queued is None:   # no bound: nothing to count (and no lock on every request)
            yield
            return
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


def tfs_attributes(header: str | None) -> dict[str, str]:
    """The tfs-* key=value pairs of a custom-attributes header, found as AWS's container finds them."""
    if not header:
        return {}
    return {k.strip(): v.strip() for k, v in
            (m.split("=", 1) for m in re.findall(r"(tfs-[a-z\-]+=[^,]+)", header))}


