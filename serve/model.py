"""Load the model that ``layout.find_model`` located, describe its signatures, check inputs, call it."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from .errors import BadRequest
from .layout import ModelLocation, ModelNotFound

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype

    def describe(self) -> str:
        dims = ", ".join("-1" if d is None else str(d) for d in self.shape)
        return f"'{self.name}' shape ({dims}) {self.dtype.name}"


@dataclass(frozen=True)
class Signature:
    name: str
    inputs: Mapping[str, TensorInfo]
    outputs: Mapping[str, TensorInfo]
    call: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

    def describe(self) -> str:
        ins = ", ".join(t.describe() for t in self.inputs.values())
        outs = ", ".join(t.describe() for t in self.outputs.values())
        return f"{self.name}: inputs [{ins}] -> outputs [{outs}]"

    @property
    def batched(self) -> bool:
        """Every input and output has a leading batch dimension, so calls can be stacked."""
        return all(t.shape and t.shape[0] is None for t in (*self.inputs.values(), *self.outputs.values()))

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


def _fit(array: np.ndarray, spec: TensorInfo) -> np.ndarray:
    want = spec.shape
    if array.dtype == object:
        raise BadRequest(f"input {spec.describe()}: values are ragged or not all of one type; "
                         f"every instance must have the same shape")
    # A single instance without its batch dimension, or flat rows (CSV) for a shaped input.
    if want and want[0] is None and array.ndim == len(want) - 1 and _matches(array.shape, want[1:]):
        array = array[np.newaxis]
    elif (want and want[0] is None and len(want) > 2 and array.ndim == 2
          and None not in want[1:] and array.shape[1] == int(np.prod(want[1:]))):
        array = array.reshape((array.shape[0], *want[1:]))
    if not _matches(array.shape, want):
        got = "(" + ", ".join(map(str, array.shape)) + ")"
        raise BadRequest(f"input {spec.describe()} does not accept shape {got}")
    return _cast(array, spec)


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
        if array.size:
            limits = np.iinfo(target)
            if array.min() < limits.min or array.max() > limits.max:
                raise BadRequest(f"input {spec.describe()} holds numbers outside {target.name}'s "
                                 f"range [{limits.min}, {limits.max}]")
        return array.astype(target)
    if kind == "b" and source in "biu":
        return array.astype(target)
    if kind in "OSU" and source in "SUO":
        return array.astype(object)
    raise BadRequest(f"input {spec.describe()} does not accept {array.dtype.name} values")


class Model:
    """A loaded model: its signatures, by name, and how to call them."""

    def __init__(self, location: ModelLocation, signatures: dict[str, Signature], keep_alive: object):
        self.location = location
        self.signatures = signatures
        self._keep_alive = keep_alive  # the loaded object owns the variables the functions use

    @property
    def name(self) -> str:
        return self.location.name

    def signature(self, name: str | None) -> Signature:
        name = name or DEFAULT_SIGNATURE
        try:
            return self.signatures[name]
        except KeyError:
            raise BadRequest(f"unknown signature_name '{name}'; this model has {sorted(self.signatures)}") from None

    def warm_up(self) -> float:
        """One real inference per signature with zeros, so the first request is not the slow one."""
        start = time.perf_counter()
        for sig in self.signatures.values():
            feed = {}
            for t in sig.inputs.values():
                shape = tuple(1 if d is None else d for d in t.shape)
                feed[t.name] = np.zeros(shape, dtype=t.dtype) if t.dtype != object else np.full(shape, b"", object)
            try:
                sig.call(feed)
            except Exception as exc:  # a signature that rejects zeros still loaded fine
                log.warning("warm-up of signature %s failed: %s", sig.name, exc)
        return time.perf_counter() - start


def configure_threads(intra: int, inter: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)


def _np_dtype(tf_dtype) -> np.dtype:
    import tensorflow as tf

    return np.dtype(object) if tf_dtype == tf.string else np.dtype(tf_dtype.as_numpy_dtype)


def _info(name: str, spec) -> TensorInfo:
    shape = tuple(spec.shape.as_list()) if spec.shape.rank is not None else ()
    return TensorInfo(name, shape, _np_dtype(spec.dtype))


def _tensor_out(result) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in result.items()}


def _saved_model_signature(name: str, fn) -> Signature:
    import tensorflow as tf

    _, kwargs = fn.structured_input_signature
    inputs = {k: _info(k, spec) for k, spec in kwargs.items()}
    outputs = {k: _info(k, spec) for k, spec in fn.structured_outputs.items()}

    def call(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _tensor_out(fn(**{k: tf.convert_to_tensor(v) for k, v in feed.items()}))

    return Signature(name, inputs, outputs, call)


def _keras_signature(model) -> Signature:
    import tensorflow as tf

    in_names = [t.name for t in model.inputs]
    out_names = list(getattr(model, "output_names", None) or [t.name for t in model.outputs])
    inputs = {n: TensorInfo(n, tuple(t.shape), np.dtype(str(t.dtype))) for n, t in zip(in_names, model.inputs)}
    outputs = {n: TensorInfo(n, tuple(t.shape), np.dtype(str(t.dtype))) for n, t in zip(out_names, model.outputs)}
    spec = [tf.TensorSpec(t.shape, t.dtype.name, name=t.name) for t in inputs.values()]

    @tf.function(input_signature=spec, reduce_retracing=True)
    def serve_fn(*args):
        out = model(list(args) if len(args) > 1 else args[0], training=False)
        if isinstance(out, dict):
            return out
        out = out if isinstance(out, (list, tuple)) else [out]
        return dict(zip(out_names, out))

    def call(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _tensor_out(serve_fn(*(tf.convert_to_tensor(feed[n]) for n in in_names)))

    return Signature(DEFAULT_SIGNATURE, inputs, outputs, call)


def load_model(location: ModelLocation) -> Model:
    import tensorflow as tf

    if location.kind == "keras":
        import keras

        loaded = keras.models.load_model(location.path, compile=False)
        return Model(location, {DEFAULT_SIGNATURE: _keras_signature(loaded)}, loaded)
    loaded = tf.saved_model.load(str(location.path))
    signatures = {name: _saved_model_signature(name, fn) for name, fn in loaded.signatures.items()}
    if not signatures:
        raise ModelNotFound(f"SavedModel at {location.path} has no signatures to serve")
    return Model(location, signatures, loaded)
