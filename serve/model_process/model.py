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
from pathlib import Path
from typing import Mapping

import numpy as np

from serve.contract.errors import BadRequest, TooMuchMemory
from serve.contract.signature import DEFAULT_SIGNATURE, METHODS, Model, Signature, TensorInfo
from model_archive.layout import ModelLocation, ModelNotFound

log = logging.getLogger(__name__)


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
        except tf.errors.ResourceExhaustedError as exc:
            # the input asked TensorFlow for more memory than there is (a shape taken from its values,
            # a huge batch): the request's size, as NumPy's MemoryError is; TensorFlow gave the memory
            # back when the op failed, and the batcher runs the others of its batch alone
            got = ", ".join(f"'{n}' {tuple(np.shape(v))}" for n, v in feed.items())
            said = str(getattr(exc, "message", exc))
            oom = next((line.strip().split(" on /job:")[0] for line in said.splitlines() if "OOM when" in line),
                       _model_complaint(exc))
            raise TooMuchMemory(f"the model ran out of memory on the input of signature '{name}' ({got}): "
                                f"{oom}; send fewer or smaller instances") from None
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


def _session_info(name: str, tensor_info, graph, signature: str) -> TensorInfo:
    """An input or output as TF Serving reads it: it feeds and fetches by tensor name, so the graph's
    own tensor has the last word. A TensorInfo without a tensor_shape field says nothing about the
    shape (old exports write none; it is not a scalar); one whose dtype or shape contradicts the
    tensor it names (a regress input marked DT_FLOAT that names the string placeholder of serialized
    Examples) is read from the tensor."""
    import tensorflow as tf

    declared_dtype = tf.dtypes.as_dtype(tensor_info.dtype) if tensor_info.dtype else None
    declared = tf.TensorShape(tensor_info.tensor_shape) if tensor_info.HasField("tensor_shape") else None
    try:
        tensor = graph.get_tensor_by_name(tensor_info.name) if tensor_info.name else None
    except (KeyError, ValueError):
        tensor = None
    if tensor is None:  # a composite (sparse, ragged) encoding, or a name the graph lacks: as declared
        shape, dtype = declared if declared is not None else tf.TensorShape(None), declared_dtype
    else:
        dtype = tensor.dtype
        if declared_dtype is not None and declared_dtype != dtype:
            log.info("signature %s %s: its TensorInfo says %s, the tensor it names (%s) is %s; "
                     "serving it as the graph says", signature, name, declared_dtype.name, tensor_info.name,
                     dtype.name)
        shape = tensor.shape
        if declared is not None:
            if declared.is_compatible_with(shape):
                shape = declared.merge_with(shape)
            else:
                log.info("signature %s %s: its TensorInfo says shape %s, the tensor it names (%s) has %s; "
                         "serving it as the graph says", signature, name, declared, tensor_info.name, shape)
    dims = None if shape.rank is None else tuple(shape.as_list())
    return TensorInfo(name, dims, _np_dtype(dtype))


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
        inputs = {n: _session_info(n, t, graph, key) for n, t in sig.inputs.items()}
        outputs = {n: _session_info(n, t, graph, key) for n, t in sig.outputs.items()}
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
