"""TF Serving's classify and regress request bodies, turned into serialized ``tf.train.Example``s.

``{"examples": [{"x": 1.0, "tag": "a"}, ...], "context": {...}}``: each example (with the
context's features merged in, the example's own winning) becomes one Example whose features
are typed as TF Serving's REST API types them: whole numbers are an int64_list, other numbers a
float_list, strings and ``{"b64": ...}`` values (already bytes here) a bytes_list; a value may be
one scalar or a list of one kind. The Example protobuf comes from TensorFlow's own package, so
this runs where the model is.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from serve.contract.errors import BadRequest

_INT64 = (-(2 ** 63), 2 ** 63 - 1)


def serialize(examples: list, context: dict | None = None) -> np.ndarray:
    """A 1-D object array of serialized Examples, one per entry of EXAMPLES."""
    from tensorflow.core.example import example_pb2

    if not isinstance(examples, list) or not examples:
        raise BadRequest('"examples" must be a non-empty list of {feature name: value} objects')
    if context is not None and not isinstance(context, dict):
        raise BadRequest('"context" must be an object of {feature name: value}')
    out = np.empty(len(examples), dtype=object)
    for i, example in enumerate(examples):
        if not isinstance(example, dict):
            raise BadRequest(f'"examples"[{i}] must be an object of {{feature name: value}}, not {_kind(example)}')
        proto = example_pb2.Example()
        for name, value in {**(context or {}), **example}.items():
            _fill(proto.features.feature[name], value, f'"examples"[{i}] feature \'{name}\'')
        out[i] = proto.SerializeToString()
    return out


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", bytes: "bytes",
            list: "a list", dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _fill(feature, value: Any, what: str) -> None:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise BadRequest(f"{what} is an empty list; give at least one value")
    kinds = {type(v) for v in values}
    if kinds <= {bytes, str}:
        feature.bytes_list.value.extend(v.encode("utf-8") if isinstance(v, str) else v for v in values)
    elif kinds == {int}:
        if not all(_INT64[0] <= v <= _INT64[1] for v in values):
            raise BadRequest(f"{what} holds integers outside int64's range")
        feature.int64_list.value.extend(values)
    elif kinds <= {int, float}:
        if not all(math.isfinite(v) for v in values):
            raise BadRequest(f"{what} holds NaN or Infinity; send finite numbers")
        feature.float_list.value.extend(float(v) for v in values)
    else:
        found = ", ".join(sorted(_kind(v) for v in {type(v): v for v in values}.values()))
        raise BadRequest(f"{what} must be numbers or strings (one kind per feature), not {found}")
