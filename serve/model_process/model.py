"""Load the models that ``layout.find_models`` located, describe their signatures, check inputs, call them.

Two loaders, chosen by what the SavedModel is, as TF Serving would load it:
- TF2 SavedModels (they carry an object graph) through ``tf.saved_model.load``;
- TF1 and ``tf.estimator`` exports (no object graph: placeholders of unknown rank, ``ParseExample``
  graphs with classify and regress signatures) in a ``tf.compat.v1`` session, which is how TF
  Serving runs them; the TF2 loader cannot convert many of them. A TF2 load that fails falls
  back to the session too.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, Mapping, TypeVar

import numpy as np

from serve.contract.errors import BadRequest, NotFound
from model_archive.layout import ModelLocation, ModelNotFound

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
        self.loader = loader            # "tf2", "session" (TF1/estimator) or "keras"
        self._keep_alive = keep_alive   # the loaded object owns the variables the functions use

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


def configure_threads(intra: int, inter: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)


def _np_dtype(tf_dtype) -> np.dtype:
    import tensorflow as tf

    return np.dtype(object) if tf_dtype == tf.string else np.dtype(tf_dtype.as_numpy_dtype)


def _info(name: str, spec) -> TensorInfo:
    shape = tuple(spec.shape.as_list()) if spec.shape.rank is not None else None
    return TensorInfo(name, shape, _np_dtype(spec.dtype))


def _model_complaint(exc: Exception) -> str:
    """TensorFlow's own sentence from an error, without the graph stack it wraps it in."""
    lines = [line.strip() for line in str(getattr(exc, "message", exc)).splitlines()]
    kept = [line for line in lines if line and not line.startswith(("[[", "File ", "Detected at node", "defined at"))
            and line not in ("Graph execution error:",)]
    return kept[-1] if kept else type(exc).__name__


def _guarded(name: str, inputs: Mapping[str, TensorInfo], call):
    """A model call whose input-caused TensorFlow errors are 400s naming the signature's inputs."""
    import tensorflow as tf

    def guarded(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return call(feed)
        except (tf.errors.InvalidArgumentError, ValueError) as exc:
            got = ", ".join(f"'{n}' {tuple(np.shape(v))}" for n, v in feed.items())
            raise BadRequest(f"the model refused the input of signature '{name}' ({got}; it expects "
                             f"{', '.join(t.describe() for t in inputs.values())}): {_model_complaint(exc)}") from None

    return guarded


def _method(method_name: str) -> str:
    """'tensorflow/serving/classify' -> 'classify'; anything else is served as predict."""
    tail = method_name.rsplit("/", 1)[-1]
    return tail if tail in METHODS else "predict"


def _meta_graph(path: Path):
    """The serving MetaGraphDef of a SavedModel (read with protobuf only, no graph is built)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    for meta in saved.meta_graphs:
        if "serve" in meta.meta_info_def.tags:
            return meta
    if not saved.meta_graphs:
        raise ModelNotFound(f"SavedModel at {path} holds no graph")
    return saved.meta_graphs[0]


def _tensor_out(result) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in result.items()}


def _saved_model_signature(name: str, fn, method: str) -> Signature:
    import tensorflow as tf

    _, kwargs = fn.structured_input_signature
    inputs = {k: _info(k, spec) for k, spec in kwargs.items()}
    outputs = {k: _info(k, spec) for k, spec in fn.structured_outputs.items()}

    def call(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _tensor_out(fn(**{k: tf.convert_to_tensor(v) for k, v in feed.items()}))

    return Signature(name, inputs, outputs, _guarded(name, inputs, call), method)


def _session_info(name: str, tensor_info) -> TensorInfo:
    import tensorflow as tf

    shape = tensor_info.tensor_shape
    dims = None if shape.unknown_rank else tuple(None if d.size < 0 else d.size for d in shape.dim)
    return TensorInfo(name, dims, _np_dtype(tf.dtypes.as_dtype(tensor_info.dtype)))


def _load_in_session(location: ModelLocation, meta) -> Model:
    """A TF1 / estimator SavedModel in a tf.compat.v1 Session, with the thread pools already set."""
    import tensorflow as tf

    v1 = tf.compat.v1
    threads = tf.config.threading
    config = v1.ConfigProto(intra_op_parallelism_threads=threads.get_intra_op_parallelism_threads(),
                            inter_op_parallelism_threads=threads.get_inter_op_parallelism_threads())
    graph = tf.Graph()
    session = v1.Session(graph=graph, config=config)
    v1.saved_model.loader.load(session, list(meta.meta_info_def.tags), str(location.path))
    signatures = {}
    for key, sig in meta.signature_def.items():
        if key == "__saved_model_init_op":
            continue
        inputs = {n: _session_info(n, t) for n, t in sig.inputs.items()}
        outputs = {n: _session_info(n, t) for n, t in sig.outputs.items()}
        feeds = {n: t.name for n, t in sig.inputs.items()}
        fetches = {n: t.name for n, t in sig.outputs.items()}

        def call(feed, feeds=feeds, fetches=fetches):
            return session.run(fetches, {feeds[n]: v for n, v in feed.items()})

        signatures[key] = Signature(key, inputs, outputs, _guarded(key, inputs, call), _method(sig.method_name))
    return Model(location, signatures, session, loader="session")


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

    return Signature(DEFAULT_SIGNATURE, inputs, outputs, _guarded(DEFAULT_SIGNATURE, inputs, call))


def load_model(location: ModelLocation) -> Model:
    import tensorflow as tf

    if location.kind == "keras":
        import keras

        loaded = keras.models.load_model(location.path, compile=False)
        return Model(location, {DEFAULT_SIGNATURE: _keras_signature(loaded)}, loaded, loader="keras")
    meta = _meta_graph(location.path)
    if not meta.HasField("object_graph_def"):
        model = _load_in_session(location, meta)
    else:
        try:
            loaded = tf.saved_model.load(str(location.path))
            methods = {k: _method(v.method_name) for k, v in meta.signature_def.items()}
            signatures = {name: _saved_model_signature(name, fn, methods.get(name, "predict"))
                          for name, fn in loaded.signatures.items()}
            model = Model(location, signatures, loaded)
        except Exception as exc:
            log.info("the TF2 loader cannot serve %s (%s: %s); loading it in a TF1 session",
                     location.path, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            model = _load_in_session(location, meta)
    if not model.signatures:
        raise ModelNotFound(f"SavedModel at {location.path} has no signatures to serve")
    return model
