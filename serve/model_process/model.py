"""Load the models that ``layout.find_models`` located, describe their signatures, check inputs, call them.

Every model runs as a graph in a ``tf.compat.v1`` session, as TF Serving runs SavedModels, and each
signature is called through a prepared callable (``Session.make_callable``: the feeds and fetches
resolved once), which costs far less per call than an eager or ``tf.function`` call (measured in
docs/performance.md):
- SavedModels, TF2 and TF1 alike (``tf.estimator`` exports too: placeholders of unknown rank,
  ``ParseExample`` graphs with classify and regress signatures), through the SavedModel loader;
- Keras files (.keras, .h5): the model is traced once as a function of its inputs, its weights
  folded into that graph as constants, and the graph imported into a session.
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


def _session(graph):
    """A session on GRAPH with the process's thread pools."""
    import tensorflow as tf

    v1 = tf.compat.v1
    threads = tf.config.threading
    config = v1.ConfigProto(intra_op_parallelism_threads=threads.get_intra_op_parallelism_threads(),
                            inter_op_parallelism_threads=threads.get_inter_op_parallelism_threads())
    return v1.Session(graph=graph, config=config)


def _prepared_call(session, feeds: dict[str, str], fetches: dict[str, str]):
    """The signature's call: a callable the session prepared once for these feeds and fetches
    (C++ ``Session::MakeCallable``, as TF Serving runs a signature; Python's ``Session.make_callable``
    with feeds is only ``Session.run`` again), one per set of inputs given, in case a caller leaves
    an optional input out."""
    from tensorflow.core.protobuf.config_pb2 import CallableOptions

    keys = list(fetches)
    fetch_names = [fetches[k] for k in keys]
    prepared: dict[tuple, object] = {}

    def call(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = tuple(feed)
        run = prepared.get(names)
        if run is None:
            options = CallableOptions(feed=[feeds[n] for n in names], fetch=fetch_names)
            run = prepared[names] = session._make_callable_from_options(options)
        return dict(zip(keys, run(*feed.values())))

    return call


def _load_in_session(location: ModelLocation, meta) -> Model:
    """A SavedModel (TF2, TF1, estimator) in a tf.compat.v1 Session, with the thread pools already set."""
    import tensorflow as tf

    graph = tf.Graph()
    session = _session(graph)
    tf.compat.v1.saved_model.loader.load(session, list(meta.meta_info_def.tags), str(location.path))
    signatures = {}
    for key, sig in meta.signature_def.items():
        if key == "__saved_model_init_op":
            continue
        inputs = {n: _session_info(n, t, graph, key) for n, t in sig.inputs.items()}
        outputs = {n: _session_info(n, t, graph, key) for n, t in sig.outputs.items()}
        call = _prepared_call(session, {n: t.name for n, t in sig.inputs.items()},
                              {n: t.name for n, t in sig.outputs.items()})
        signatures[key] = Signature(key, inputs, outputs, _guarded(key, inputs, call), _method(sig.method_name))
    return Model(location, signatures, session, loader="session")


def _keras_signature(model):
    """The Keras model's signature, and the session that runs it (the model itself is not kept)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    in_names = [t.name for t in model.inputs]
    out_names = list(getattr(model, "output_names", None) or [t.name for t in model.outputs])
    inputs = {n: TensorInfo(n, tuple(t.shape), np.dtype(str(t.dtype))) for n, t in zip(in_names, model.inputs)}
    outputs = {n: TensorInfo(n, tuple(t.shape), np.dtype(str(t.dtype))) for n, t in zip(out_names, model.outputs)}
    spec = [tf.TensorSpec(t.shape, t.dtype.name) for t in inputs.values()]

    @tf.function(input_signature=spec)
    def serve_fn(*args):
        out = model(list(args) if len(args) > 1 else args[0], training=False)
        if isinstance(out, dict):
            return [out[n] for n in out_names]
        return list(out) if isinstance(out, (list, tuple)) else [out]

    frozen = convert_variables_to_constants_v2(serve_fn.get_concrete_function())
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
    session = _session(graph)
    call = _prepared_call(session, {n: t.name for n, t in zip(in_names, frozen.inputs)},
                          {n: t.name for n, t in zip(out_names, frozen.outputs)})
    return Signature(DEFAULT_SIGNATURE, inputs, outputs, _guarded(DEFAULT_SIGNATURE, inputs, call)), session


def load_model(location: ModelLocation) -> Model:
    if location.kind == "keras":
        import keras

        signature, session = _keras_signature(keras.models.load_model(location.path, compile=False))
        return Model(location, {DEFAULT_SIGNATURE: signature}, session, loader="keras")
    meta = _meta_graph(location.path)
    model = _load_in_session(location, meta)
    if not model.signatures:
        raise ModelNotFound(f"SavedModel at {location.path} has no signatures to serve")
    return model
