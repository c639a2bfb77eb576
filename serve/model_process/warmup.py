"""Warm-up before /ping turns 200: TF Serving's warm-up records when the SavedModel carries them,
else one synthetic inference per signature (``Model.warm_up``).

TF Serving replays ``assets.extra/tf_serving_warmup_requests``, a TFRecord file of ``PredictionLog``
protos (at most 1,000), before it reports a model available; a record it cannot read or run fails
the load. So here: predict, classify and regress logs run through the signature they name, in
file order; anything else is a start-up failure that says why.

``PredictionLog`` is TF Serving's message (tensorflow_serving/apis/prediction_log.proto). Its
Python classes ship in ``tensorflow-serving-api``, which depends on the full ``tensorflow``
package and would put a second TensorFlow beside ``tensorflow-cpu`` in the x86 image. The classes
are built here instead, at run time, from a FileDescriptorProto holding the part of those protos a
replay reads, with TF Serving's field numbers (the wire format is the numbers; fields left out are
skipped as unknown). ``TensorProto`` and ``Example`` are TensorFlow's own; the TFRecord framing is
read by TensorFlow's reader, which checks each record's CRCs.
"""
from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import numpy as np

from serve.contract.signature import DEFAULT_SIGNATURE, Model

log = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000    # TF Serving's WarmupConsts::kMaxNumRecords


class WarmupError(Exception):
    """A warm-up record file that cannot be read, or a record that cannot be run."""


# (message name, [(field name, number, label, type, type name or None, oneof index or None)], oneofs, nested)
_OPTIONAL, _REPEATED = 1, 3
_STRING, _MESSAGE = 9, 11
_MESSAGES = [
    ("ModelSpec", [("name", 1, _OPTIONAL, _STRING, None, None),
                   ("signature_name", 3, _OPTIONAL, _STRING, None, None)], [], []),
    ("PredictRequest", [("model_spec", 1, _OPTIONAL, _MESSAGE, ".tensorflow.serving.ModelSpec", None),
                        ("inputs", 2, _REPEATED, _MESSAGE, ".tensorflow.serving.PredictRequest.InputsEntry", None),
                        ("output_filter", 3, _REPEATED, _STRING, None, None)], [],
     [("InputsEntry", [("key", 1, _OPTIONAL, _STRING, None, None),
                       ("value", 2, _OPTIONAL, _MESSAGE, ".tensorflow.TensorProto", None)])]),
    ("ExampleList", [("examples", 1, _REPEATED, _MESSAGE, ".tensorflow.Example", None)], [], []),
    ("ExampleListWithContext", [("examples", 1, _REPEATED, _MESSAGE, ".tensorflow.Example", None),
                                ("context", 2, _OPTIONAL, _MESSAGE, ".tensorflow.Example", None)], [], []),
    ("Input", [("example_list", 1, _OPTIONAL, _MESSAGE, ".tensorflow.serving.ExampleList", 0),
               ("example_list_with_context", 2, _OPTIONAL, _MESSAGE,
                ".tensorflow.serving.ExampleListWithContext", 0)], ["kind"], []),
    ("ClassificationRequest", [("model_spec", 1, _OPTIONAL, _MESSAGE, ".tensorflow.serving.ModelSpec", None),
                               ("input", 2, _OPTIONAL, _MESSAGE, ".tensorflow.serving.Input", None)], [], []),
    ("RegressionRequest", [("model_spec", 1, _OPTIONAL, _MESSAGE, ".tensorflow.serving.ModelSpec", None),
                           ("input", 2, _OPTIONAL, _MESSAGE, ".tensorflow.serving.Input", None)], [], []),
    ("PredictLog", [("request", 1, _OPTIONAL, _MESSAGE, ".tensorflow.serving.PredictRequest", None)], [], []),
    ("ClassifyLog", [("request", 1, _OPTIONAL, _MESSAGE, ".tensorflow.serving.ClassificationRequest", None)], [], []),
    ("RegressLog", [("request", 1, _OPTIONAL, _MESSAGE, ".tensorflow.serving.RegressionRequest", None)], [], []),
    ("OtherLog", [], [], []),   # the log types a replay does not run: only which one it is matters
    ("PredictionLog", [("classify_log", 2, _OPTIONAL, _MESSAGE, ".tensorflow.serving.ClassifyLog", 0),
                       ("regress_log", 3, _OPTIONAL, _MESSAGE, ".tensorflow.serving.RegressLog", 0),
                       ("multi_inference_log", 4, _OPTIONAL, _MESSAGE, ".tensorflow.serving.OtherLog", 0),
                       ("session_run_log", 5, _OPTIONAL, _MESSAGE, ".tensorflow.serving.OtherLog", 0),
                       ("predict_log", 6, _OPTIONAL, _MESSAGE, ".tensorflow.serving.PredictLog", 0),
                       ("predict_streamed_log", 7, _OPTIONAL, _MESSAGE, ".tensorflow.serving.OtherLog", 0)],
     ["log_type"], []),
]


def _message(descriptor, name: str, fields, oneofs, nested=()) -> None:
    descriptor.name = name
    for oneof in oneofs:
        descriptor.oneof_decl.add(name=oneof)
    for field_name, number, label, kind, type_name, oneof in fields:
        field = descriptor.field.add(name=field_name, number=number, label=label, type=kind)
        if type_name:
            field.type_name = type_name
        if oneof is not None:
            field.oneof_index = oneof
    for nested_name, nested_fields in nested:
        entry = descriptor.nested_type.add()
        _message(entry, nested_name, nested_fields, [])
        entry.options.map_entry = True


def _add_with_dependencies(pool, file_descriptor, added: set) -> None:
    from google.protobuf import descriptor_pb2

    if file_descriptor.name in added:
        return
    for dependency in file_descriptor.dependencies:
        _add_with_dependencies(pool, dependency, added)
    proto = descriptor_pb2.FileDescriptorProto()
    file_descriptor.CopyToProto(proto)
    pool.Add(proto)
    added.add(file_descriptor.name)


@functools.lru_cache(maxsize=1)
def prediction_log_class():
    """TF Serving's PredictionLog message class, built from the descriptor above in a pool of its own."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from tensorflow.core.example import example_pb2
    from tensorflow.core.framework import tensor_pb2

    pool = descriptor_pool.DescriptorPool()
    added: set = set()
    for module in (tensor_pb2, example_pb2):
        _add_with_dependencies(pool, module.DESCRIPTOR, added)
    proto = descriptor_pb2.FileDescriptorProto(
        name="serve/tensorflow_serving_prediction_log.proto", package="tensorflow.serving", syntax="proto3",
        dependency=[tensor_pb2.DESCRIPTOR.name, example_pb2.DESCRIPTOR.name])
    for name, fields, oneofs, nested in _MESSAGES:
        _message(proto.message_type.add(), name, fields, oneofs, nested)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.PredictionLog"))


def read_records(path: Path) -> list:
    """The PredictionLogs in PATH, in order; WarmupError for a file TF Serving would not load."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    prediction_log = prediction_log_class()
    logs = []
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
            if index >= MAX_RECORDS:
                raise WarmupError(f"{path} holds more than {MAX_RECORDS} warm-up records, TF Serving's limit")
            entry = prediction_log()
            try:
                entry.ParseFromString(record)
            except DecodeError as exc:
                raise WarmupError(f"{path}: record {index + 1} is not a PredictionLog ({exc})") from None
            logs.append(entry)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as exc:
        raise WarmupError(f"{path} is not a readable TFRecord file of PredictionLogs "
                          f"(after {len(logs)} records): {exc.message}") from None
    return logs


def _examples(request_input) -> np.ndarray:
    """Serialized Examples of a classify/regress request's Input, the context's features under each
    example's own (as TF Serving merges an ExampleListWithContext)."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        examples = []
        for example in listed.examples:
            merged = type(listed.context)()   # this module's pool's Example, wire-identical to TensorFlow's
            merged.CopyFrom(listed.context)
            for name, feature in example.features.feature.items():
                merged.features.feature[name].CopyFrom(feature)
            examples.append(merged.SerializeToString())
    else:
        raise WarmupError("its input holds no examples")
    if not examples:
        raise WarmupError("its input holds no examples")
    out = np.empty(len(examples), dtype=object)
    out[:] = examples
    return out


def replay(model: Model, logs: list) -> None:
    """Run every log through the signature it names, as a request would; WarmupError naming the
    first one that fails."""
    import tensorflow as tf

    for index, entry in enumerate(logs, 1):
        kind = entry.WhichOneof("log_type")
        try:
            if kind == "predict_log":
                request = entry.predict_log.request
                signature = model.signature(request.model_spec.signature_name or DEFAULT_SIGNATURE)
                inputs = {name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()}
                signature.call(signature.prepare(inputs))
            elif kind in ("classify_log", "regress_log"):
                request = getattr(entry, kind).request
                method = kind.split("_")[0]
                signature = model.signature(request.model_spec.signature_name or DEFAULT_SIGNATURE, method)
                signature.call({signature.example_input: _examples(request.input)})
            else:
                raise WarmupError(f"it is a {kind or 'empty log'}; warm-up replays predict, classify and "
                                  f"regress logs")
        except WarmupError as exc:
            raise WarmupError(f"warm-up record {index}: {exc}") from None
        except Exception as exc:  # the model's own refusal, or a BadRequest from the signature checks
            raise WarmupError(f"warm-up record {index} ({kind}) failed: {getattr(exc, 'message', exc)}") from None


def warm_up(model: Model) -> tuple[float, str]:
    """Warm MODEL up: (seconds it took, what ran) -- its warm-up records, else synthetic inputs."""
    path = None if model.location.kind != "savedmodel" else model.location.path / WARMUP_FILE
    if path is None or not path.is_file():
        return model.warm_up(), "synthetic inputs (no assets.extra/tf_serving_warmup_requests)"
    start = time.perf_counter()
    logs = read_records(path)
    replay(model, logs)
    return time.perf_counter() - start, f"{len(logs)} warm-up records from {WARMUP_FILE}"
