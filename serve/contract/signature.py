"""What a model offers, as both processes see it: its signatures (inputs and outputs by name, shape
and dtype), the checks a request's arrays pass before they reach the model (``Signature.prepare``),
and the repository of models by name and version. No TensorFlow: the HTTP workers hold these
descriptions (from the model process's catalog) with ``call`` unset; the model process fills
``call`` in when it loads the model (``serve.model_process.model``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Generic, Mapping, TypeVar

import numpy as np

from serve.contract.errors import BadRequest, NotFound
from model_archive.layout import ModelLocation, ModelNotFound, version_number

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
METHODS = ("predict", "classify", "regress")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | None, ...] | None   # None: unknown rank (TF1 placeholders often are)
    dtype: np.dtype

    def describe(self) -> str:
        dtype = "string" if self.dtype == object else self.dtype.name
        if self.shape is None:
            return f"'{self.name}' shape unknown {dtype}"
        dims = ", ".join("-1" if d is None else str(d) for d in self.shape)
        return f"'{self.name}' shape ({dims}) {dtype}"


@dataclass(frozen=True)
class Signature:
    name: str
    inputs: Mapping[str, TensorInfo]
    outputs: Mapping[str, TensorInfo]
    call: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    method: str = "predict"          # TF Serving's method_name: predict, classify or regress

    def describe(self) -> str:
        ins = ", ".join(t.describe() for t in self.inputs.values())
        outs = ", ".join(t.describe() for t in self.outputs.values())
        method = "" if self.method == "predict" else f" ({self.method})"
        return f"{self.name}{method}: inputs [{ins}] -> outputs [{outs}]"

    @property
    def batched(self) -> bool:
        """Every input and output has a leading batch dimension, so calls can be stacked."""
        return all(t.shape and t.shape[0] is None for t in (*self.inputs.values(), *self.outputs.values()))

    @property
    def example_input(self) -> str:
        """The input that takes serialized tf.train.Examples (classify and regress signatures)."""
        strings = [n for n, t in self.inputs.items() if t.dtype == object]
        if len(self.inputs) != 1 or len(strings) != 1:
            raise BadRequest(f"signature '{self.name}' does not take serialized tf.train.Examples "
                             f"(its inputs: {', '.join(t.describe() for t in self.inputs.values())})")
        return strings[0]

    def prepare(self, inputs: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """Match request arrays to the signature: names, dtype and shape; raise BadRequest saying what fits."""
        if isinstance(inputs, np.ndarray) or not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                raise BadRequest(
                    f"signature '{self.name}' has {len(self.inputs)} inputs "
                    f"({', '.join(self.inputs)}); send them by name, e.g. {{\"inputs\": {{\"{next(iter(self.inputs))}\": ...}}}}")
            inputs = {next(iter(self.inputs)): inputs}
        missing = [n for n in self.inputs if n not in inputs]
        unknown = [n for n in inputs if n not in self.inputs]
        if missing or unknown:
            raise BadRequest(
                f"signature '{self.name}' expects inputs {sorted(self.inputs)}; "
                f"missing {missing}, unknown {unknown}")
        prepared = {name: _fit(np.asarray(inputs[name]), spec) for name, spec in self.inputs.items()}
        if self.batched and len(prepared) > 1:
            sizes = {a.shape[0] for a in prepared.values()}
            if len(sizes) > 1:
                raise BadRequest(f"inputs of signature '{self.name}' have different batch sizes {sorted(sizes)}")
        return prepared


def scalar_rows(inputs: Mapping[str, np.ndarray] | np.ndarray, prepared: Mapping[str, np.ndarray]) -> int | None:
    """N when the request sent N scalars per input where the signature takes (-1, 1) rows, which
    ``prepare`` made (N, 1). TF Serving feeds such a list as it is, shape (N,), so an element-wise
    graph (TF Serving's own half_plus_two) answers N scalars: see ``unrow``."""
    if isinstance(inputs, np.ndarray) or not isinstance(inputs, Mapping):
        inputs = {next(iter(prepared)): inputs} if len(prepared) == 1 else {}
    sizes = {np.shape(inputs[n])[0] for n, a in prepared.items()
             if n in inputs and np.ndim(inputs[n]) == 1 and a.shape == (np.shape(inputs[n])[0], 1)}
    return sizes.pop() if len(sizes) == 1 else None


def unrow(outputs: Mapping[str, np.ndarray], rows: int | None) -> dict[str, np.ndarray]:
    """Outputs of shape (ROWS, 1) as ROWS scalars, when the request sent scalars (``scalar_rows``)."""
    if rows is None:
        return dict(outputs)
    return {k: v[:, 0] if np.shape(v) == (rows, 1) else v for k, v in outputs.items()}


def _fit(array: np.ndarray, spec: TensorInfo) -> np.ndarray:
    want = spec.shape
    if array.dtype == object and not _all_bytes_or_str(array):
        raise BadRequest(f"input {spec.describe()}: values are ragged or not all of one type; "
                         f"every instance must have the same shape")
    if want is None:  # unknown rank: check the dtype, leave the shape to TensorFlow
        return _cast(array, spec)
    # A single instance without its batch dimension, or flat rows (CSV) for a shaped input.
    if want and want[0] is None and array.ndim == len(want) - 1 and _matches(array.shape, want[1:]):
        array = array[np.newaxis]
    elif (want and want[0] is None and len(want) > 2 and array.ndim == 2
          and None not in want[1:] and array.shape[1] == int(np.prod(want[1:]))):
        array = array.reshape((array.shape[0], *want[1:]))
    elif want and len(want) == 2 and want[0] is None and want[1] == 1 and array.ndim == 1:
        array = array[:, np.newaxis]  # one value per line (single-column CSV) for an (-1, 1) input
    if not _matches(array.shape, want):
        got = "(" + ", ".join(map(str, array.shape)) + ")"
        raise BadRequest(f"input {spec.describe()} does not accept shape {got}")
    return _cast(array, spec)


def _all_bytes_or_str(array: np.ndarray) -> bool:
    return all(isinstance(v, (bytes, str)) for v in array.flat)


def _matches(shape: tuple[int, ...], want: tuple[int | None, ...]) -> bool:
    return len(shape) == len(want) and all(w is None or w == s for s, w in zip(shape, want))


def _cast(array: np.ndarray, spec: TensorInfo) -> np.ndarray:
    """The array in the signature's dtype, refusing any value the cast would change."""
    target = spec.dtype
    source = array.dtype.kind
    if source == "f" and not np.isfinite(array).all():
        raise BadRequest(f"input {spec.describe()} holds NaN or Infinity; send finite numbers")
    if array.dtype == target:
        return array
    kind = target.kind
    if kind == "f" and source in "fiub":
        cast = array.astype(target, copy=False)
        if source == "f" and not np.isfinite(cast).all():
            raise BadRequest(f"input {spec.describe()} holds numbers too large for {target.name} "
                             f"(largest is {np.finfo(target).max:.4g})")
        return cast
    if kind in "iu" and source in "iubf":
        if source == "f" and not (np.mod(array, 1) == 0).all():
            raise BadRequest(f"input {spec.describe()} takes whole numbers; it got fractions")
        if source == "f" and array.size and np.abs(array).max() >= 2 ** 53:
            # a JSON integer beyond int64 (or mixed with one) arrives as a float, which is no longer exact
            raise BadRequest(f"input {spec.describe()} holds integers beyond 2**53 that did not arrive as exact "
                             f"integers (outside {target.name}'s range, or mixed with such); send them within range, "
                             f"or as .npy")
        if array.size:
            limits = np.iinfo(target)
            if array.min() < limits.min or array.max() > limits.max:
                raise BadRequest(f"input {spec.describe()} holds numbers outside {target.name}'s "
                                 f"range [{limits.min}, {limits.max}]")
        return array.astype(target)
    if kind == "b" and source in "biu":
        return array.astype(target)
    if kind in "OSU" and source in "SUO":
        # TensorFlow's strings are bytes; text goes in as UTF-8, as TF Serving converts JSON strings
        out = np.empty(array.shape, dtype=object)
        out.flat[:] = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in array.flat]
        return out
    raise BadRequest(f"input {spec.describe()} does not accept {array.dtype.name} values")


class Model:
    """A loaded model: its signatures, by name, and how to call them."""

    def __init__(self, location: ModelLocation, signatures: dict[str, Signature], keep_alive: object,
                 loader: str = "tf2"):
        self.location = location
        self.signatures = signatures
        self.loader = loader            # "session" (SavedModels), "keras", or "tf2" for one a model_fn built
        self._keep_alive = keep_alive   # the loaded object owns the variables the functions use

    def close(self) -> None:
        """Free what the loaded object holds now (a model process's session: its variables and
        constants), not whenever the garbage collector finds it: a multi-model unload."""
        close = getattr(self._keep_alive, "close", None)
        if callable(close):
            close()

    @property
    def name(self) -> str:
        return self.location.name

    @property
    def version(self) -> str | None:
        return self.location.version

    def signature(self, name: str | None, method: str = "predict") -> Signature:
        name = name or DEFAULT_SIGNATURE
        try:
            signature = self.signatures[name]
        except KeyError:
            raise BadRequest(f"unknown signature_name '{name}'; this model has {sorted(self.signatures)}") from None
        if method != "predict" and signature.method != method:
            able = sorted(n for n, s in self.signatures.items() if s.method == method)
            hint = (f"name one of {able} in \"signature_name\"" if able
                    else f"this model has no {method} signature")
            raise BadRequest(f"signature '{name}' is a {signature.method} signature, not {method}; {hint}")
        return signature

    def warm_up(self) -> float:
        """One real inference per signature with zeros, so the first request is not the slow one."""
        start = time.perf_counter()
        for sig in self.signatures.values():
            if any(t.shape is None for t in sig.inputs.values()) or sig.method != "predict":
                continue  # no shape to make zeros of, or Examples that zeros cannot be
            feed = {}
            for t in sig.inputs.values():
                shape = tuple(1 if d is None else d for d in t.shape)
                feed[t.name] = np.zeros(shape, dtype=t.dtype) if t.dtype != object else np.full(shape, b"", object)
            try:
                sig.call(feed)
            except Exception as exc:  # a signature that rejects zeros still loaded fine
                log.warning("warm-up of signature %s failed: %s", sig.name, exc)
        return time.perf_counter() - start


def version_status(versions) -> dict:
    """TF Serving's GET /v1/models/NAME answer for VERSIONS (as listed, None for an unversioned model)."""
    return {"model_version_status": [
        {"version": v or "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        for v in versions]}


T = TypeVar("T")
U = TypeVar("U")


class Repository(Generic[T]):
    """Every loaded servable by model name and version, and which one a request without names gets.

    Versions are kept lowest first, so a name's default is its highest version, as in TF Serving.
    """

    def __init__(self, entries: dict[str, dict[str | None, T]], default: str):
        if default not in entries:
            raise ModelNotFound(f"SAGEMAKER_TFS_DEFAULT_MODEL_NAME={default!r} is not among the models found: "
                                f"{', '.join(entries)}")
        self.entries = entries
        self.default = default

    def versions(self, name: str) -> list[str | None]:
        return list(self.entries[name])

    def get(self, name: str | None = None, version: str | None = None) -> T:
        name = name or self.default
        versions = self.entries.get(name)
        if versions is None:
            raise NotFound(f"no model named '{name}'; this server has {self.describe()}")
        if version is None:
            return versions[list(versions)[-1]]
        version = version_number(str(version)) or version  # TF Serving's numbering: 0123 is 123
        if version not in versions:
            have = ", ".join(v or "unversioned" for v in versions)
            raise NotFound(f"model '{name}' has no version {version}; it has {have}")
        return versions[version]

    def describe(self) -> str:
        return "; ".join(f"'{n}' (version{'s' if len(v) > 1 else ''} {', '.join(x or '-' for x in v)})"
                         for n, v in self.entries.items())

    def __iter__(self):
        for versions in self.entries.values():
            yield from versions.values()

    def map(self, fn: Callable[[T], "U"]) -> "Repository[U]":
        """The same names and versions, each entry passed through FN."""
        return Repository({n: {v: fn(e) for v, e in versions.items()} for n, versions in self.entries.items()},
                          self.default)
