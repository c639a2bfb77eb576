"""JSON (TF Serving's row and columnar formats, AWS's container's conventions) and JSON Lines, both ways.

Decoding goes straight from bytes to arrays: simdjson into NumPy for the common bodies of plain
numbers (``_fast_json``), orjson for everything else (the exact path). No Python loop runs over
elements; the only loops are over instances or named tensors.
"""
from __future__ import annotations

import base64
import itertools
import json
import re
import types
from typing import Mapping

import numpy as np
import orjson
import simdjson

from serve.contract.errors import BadRequest
from serve.contract.codecs.decoded import Decoded, Inputs, text_array
from serve.contract.codecs.media import JSON

# -- decoding ---------------------------------------------------------------------------------------

def _first_leaf(value):
    while isinstance(value, list) and value:
        value = value[0]
    return value


def _array(value, what: str) -> np.ndarray:
    if isinstance(_first_leaf(value), (str, bytes)):
        return text_array(value, what)
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged nesting
        raise BadRequest(f"{what}: every instance must have the same shape ({exc})") from None
    if array.dtype.kind == "S":  # binary strings from {"b64": ...}: NumPy's S type would drop trailing NULs
        array = np.array(value, dtype=object)
    if array.dtype == object and not all(isinstance(v, bytes) for v in array.flat):
        raise BadRequest(f"{what}: every instance must have the same shape and hold numbers or strings")
    return array

def _stack_rows(rows: list, what: str) -> Inputs:
    """Row format: a list of instances, each a value or a {input_name: value} object."""
    if rows and all(isinstance(r, dict) for r in rows):
        names = rows[0].keys()
        if any(r.keys() != names for r in rows):
            raise BadRequest(f"{what}: every instance must name the same inputs")
        return {n: _array([r[n] for r in rows], f"{what} input '{n}'") for n in names}
    return _array(rows, what)

_NON_FINITE = re.compile(rb"NaN|Infinity")


def _python_json(body: bytes):
    """orjson's parse; a body it refuses that holds NaN, Infinity or -Infinity, the tokens Python's
    json.dumps writes for non-finite floats, is parsed by Python's json, which reads them (and is
    otherwise as strict), so the values reach the input check and get its 400 naming the input."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        if not _NON_FINITE.search(body):
            raise
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass
        raise


def _loads(body: bytes, what: str):
    try:
        return _python_json(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None

def _unb64(value):
    """TF Serving's {"b64": "..."} objects, anywhere in a parsed body, as the bytes they encode."""
    if isinstance(value, list):
        return [_unb64(v) for v in value]
    if isinstance(value, dict):
        if value.keys() == {"b64"}:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (ValueError, TypeError) as exc:
                raise BadRequest(f'a {{"b64": ...}} value is not valid base64: {exc}') from None
        return {k: _unb64(v) for k, v in value.items()}
    return value

def _one_instance(array: np.ndarray) -> np.ndarray:
    """A bare JSON array whose first element is not an array is one instance (AWS's container wraps it)."""
    return array[np.newaxis] if array.ndim == 1 else array

def _numeric_array(node) -> tuple[np.ndarray, int] | None:
    """A simdjson array of numbers -> (float64 ndarray, number of JSON arrays in it), in C.

    Returns None unless the array is regular (every level has one length) and all numbers;
    the caller then takes the exact path, which also produces the precise error.
    """
    shape, level = [], [node]
    while True:
        lengths = set(map(len, level))
        if len(lengths) != 1:
            return None
        length = lengths.pop()
        if length == 0:
            return None
        shape.append(length)
        if not isinstance(level[0][0], simdjson.Array):
            break
        level = list(itertools.chain.from_iterable(level))
    flat = np.frombuffer(node.as_buffer(of_type="d"), dtype=np.float64)
    if flat.size != int(np.prod(shape)):
        return None
    if flat.size and float(np.abs(flat).max()) >= _ROUNDED_FROM:
        return None  # an integer there may have been rounded to float64: the exact path keeps it whole
    arrays = sum(int(np.prod(shape[:i])) for i in range(len(shape)))
    return flat.reshape(shape), arrays

_parsers = types.SimpleNamespace(parser=None)   # one per process: a parse holds the GIL throughout

# A parser keeps buffers of about 3.5x the largest document it parsed, for as long as it lives.
KEEP_PARSER_MAX_BYTES = 1 << 20


def _parse(body: bytes):
    """simdjson with one reusable parser per process (a new parser costs more than a small body; the
    HTTP worker's requests are greenlets of one thread, so a parser per thread would be one per
    connection); a large body gets a parser of its own, freed with its document, so that no process
    keeps megabytes of buffers for the largest body it ever saw."""
    if len(body) > KEEP_PARSER_MAX_BYTES:
        return simdjson.Parser().parse(body)
    parser = _parsers.parser
    if parser is None:
        parser = _parsers.parser = simdjson.Parser()
    try:
        return parser.parse(body)
    except RuntimeError:  # a document from this parser is still referenced somewhere (another request's)
        _parsers.parser = simdjson.Parser()
        return _parsers.parser.parse(body)

# From 2**53 on, float64 no longer holds every integer; a body with a number that large takes the exact
# path (a regex over the body for integer tokens of 16 digits cost 1.5 ms of CPU for the CIFAR body of
# 64 KB, twice the rest of its decoding).
_ROUNDED_FROM = 2.0 ** 53

def _fast_json(body: bytes) -> Decoded | None:
    """The common TF Serving bodies of plain numbers, parsed by simdjson straight into NumPy.

    Any other shape of body (named instances, strings, b64, ragged or malformed input) returns
    None and goes through orjson. Every '[' in the body must belong to an array we decoded,
    which rules out a nested array hiding among numbers.
    """
    try:
        doc = _parse(body)
        brackets, signature, columnar = 0, None, False
        if isinstance(doc, simdjson.Array):
            decoded = _numeric_array(doc)
            if decoded is None:
                return None
            inputs, brackets = decoded
            inputs = _one_instance(inputs)
        elif isinstance(doc, simdjson.Object):
            keys = set(doc.keys())
            signature = doc.get("signature_name")
            if not keys <= {"instances", "inputs", "signature_name"} or len(keys & {"instances", "inputs"}) != 1 \
                    or not isinstance(signature, (str, type(None))):
                return None
            columnar = "inputs" in keys
            value = doc["inputs" if columnar else "instances"]
            if isinstance(value, simdjson.Array):
                decoded = _numeric_array(value)
                if decoded is None:
                    return None
                inputs, brackets = decoded
            elif columnar and isinstance(value, simdjson.Object):
                inputs = {}
                for name in value.keys():
                    decoded = _numeric_array(value[name]) if isinstance(value[name], simdjson.Array) else None
                    if decoded is None:
                        return None
                    inputs[name], count = decoded
                    brackets += count + name.count("[")
            else:
                return None
            brackets += (signature or "").count("[")
        else:
            return None
        if body.count(b"[") != brackets:
            return None
        return Decoded(inputs, signature, columnar)
    except (ValueError, TypeError, RuntimeError, KeyError, IndexError):
        return None

# Below this size orjson's Python objects are cheaper than simdjson's fixed cost (bench/results/tuning.md).
FAST_JSON_MIN_BYTES = 16 * 1024

def decode_json(body: bytes) -> Decoded:
    fast = _fast_json(body) if len(body) >= FAST_JSON_MIN_BYTES else None
    return fast or _exact_json(body)

def _exact_json(body: bytes) -> Decoded:
    try:
        doc = _python_json(body)
    except orjson.JSONDecodeError as exc:
        # several JSON documents one after another (JSON Lines sent as JSON): one instance each
        if len(_lines(body)) > 1:
            try:
                return _instance_per_line(_lines(body))
            except BadRequest:
                pass
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if b'"b64"' in body:
        doc = _unb64(doc)
    return _json_document(doc)

def _json_document(doc) -> Decoded:
    """TF Serving's request objects; anything else is one instance, as AWS's container wraps it."""
    if isinstance(doc, list):
        if doc and (isinstance(doc[0], list) or all(isinstance(r, dict) for r in doc)):
            return Decoded(_stack_rows(doc, "JSON array"), None, columnar=False)
        return Decoded(_stack_rows([doc], "JSON array"), None, columnar=False)
    if not isinstance(doc, dict) or not doc.keys() & {"instances", "inputs", "examples"}:
        return Decoded(_stack_rows([doc], "JSON body"), None, columnar=False)
    signature = doc.get("signature_name")
    if signature is not None and not isinstance(signature, str):
        raise BadRequest("signature_name must be a string")
    if len(doc.keys() & {"instances", "inputs", "examples"}) > 1:
        raise BadRequest('send one of "instances" (row format), "inputs" (columnar format) or "examples" '
                         '(classify/regress), not several')
    if "examples" in doc:
        return Decoded(None, signature, columnar=False, examples=doc["examples"], context=doc.get("context"))
    if "instances" in doc:
        rows = doc["instances"]
        if not isinstance(rows, list):
            raise BadRequest('"instances" must be a list with one entry per instance')
        return Decoded(_stack_rows(rows, '"instances"'), signature, columnar=False)
    if "inputs" in doc:
        cols = doc["inputs"]
        if isinstance(cols, dict):
            return Decoded({n: _array(v, f'"inputs" \'{n}\'') for n, v in cols.items()}, signature, True)
        return Decoded(_array(cols, '"inputs"'), signature, columnar=True)
    raise AssertionError("unreachable")

def _lines(body: bytes) -> list[bytes]:
    return [line for line in body.splitlines() if line.strip()]

def _instance_per_line(lines: list[bytes]) -> Decoded:
    rows = [_loads(line, f"line {i + 1}") for i, line in enumerate(lines)]
    if any(b'"b64"' in line for line in lines):
        rows = _unb64(rows)
    return Decoded(_stack_rows(rows, "JSON Lines"), None, columnar=False)

def decode_jsonlines(body: bytes) -> Decoded:
    """One instance per line; a single line is read as a JSON body, as AWS's container does."""
    lines = _lines(body)
    if not lines:
        raise BadRequest("JSON Lines body has no instances")
    if len(lines) == 1:
        return decode_json(lines[0])
    return _instance_per_line(lines)


# -- encoding ---------------------------------------------------------------------------------------

_ORJSON = orjson.OPT_SERIALIZE_NUMPY

def text(value, binary: bool):
    if not isinstance(value, bytes):
        return value
    return {"b64": base64.b64encode(value).decode("ascii")} if binary else value.decode("utf-8", "replace")

def _json_ready(array: np.ndarray, binary: bool = False):
    """An output for orjson; tf.string values as text, or as {"b64": ...} for outputs whose name
    ends in _bytes (TF Serving's rule for binary outputs)."""
    if array.ndim == 0:
        return text(array.item(), binary)
    if array.dtype == object:  # tf.string outputs
        return np.frompyfunc(lambda v: text(v, binary), 1, 1)(array).tolist()
    return np.ascontiguousarray(array)

def _binary(name: str) -> bool:
    return name.endswith("_bytes")

def _rows(outputs: Mapping[str, np.ndarray]) -> list:
    """Row format for several outputs: one {name: value} per instance, as TF Serving answers."""
    count = len(next(iter(outputs.values())))
    return [{n: _json_ready(np.asarray(a[i]), _binary(n)) for n, a in outputs.items()} for i in range(count)]

def only(outputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
    return next(iter(outputs.values())) if len(outputs) == 1 else None


def encode_json(outputs: Mapping[str, np.ndarray], columnar: bool) -> bytes:
    """{"predictions": ...} (row format), or {"outputs": ...} when the request was columnar."""
    single = only(outputs)
    binary = single is not None and _binary(next(iter(outputs)))
    if columnar:
        value = _json_ready(single, binary) if single is not None else \
            {n: _json_ready(a, _binary(n)) for n, a in outputs.items()}
        return orjson.dumps({"outputs": value}, option=_ORJSON)
    value = _json_ready(single, binary) if single is not None else _rows(outputs)
    return orjson.dumps({"predictions": value}, option=_ORJSON)


def encode_jsonlines(outputs: Mapping[str, np.ndarray], columnar: bool = False) -> bytes:
    """One prediction per line (what batch transform's AssembleWith=Line needs)."""
    single = only(outputs)
    binary = single is not None and _binary(next(iter(outputs)))
    rows = [_json_ready(r, binary) for r in single] if single is not None else _rows(outputs)
    return b"\n".join(orjson.dumps(r, option=_ORJSON) for r in rows) + b"\n"


def encode_results(method: str, outputs: Mapping[str, np.ndarray]) -> tuple[bytes, str]:
    """TF Serving's classify and regress answers: {"results": [...]}, one entry per example.

    regress: one number per example (from the "outputs" tensor). classify: per example, a list
    of [label, score] pairs from "classes" and "scores" (label "" when the model has no classes).
    """
    if method == "regress":
        values = outputs.get("outputs", only(outputs))
        if values is None:
            raise BadRequest(f"the regress signature returns {sorted(outputs)}; TF Serving expects 'outputs'")
        return orjson.dumps({"results": np.asarray(values, np.float64).reshape(len(values), -1)[:, 0]},
                            option=_ORJSON), JSON
    scores, classes = outputs.get("scores"), outputs.get("classes")
    if scores is None and classes is None:
        raise BadRequest(f"the classify signature returns {sorted(outputs)}; TF Serving expects 'classes' and/or 'scores'")
    count = len(scores if scores is not None else classes)
    scores = None if scores is None else np.asarray(scores, np.float64).reshape(count, -1)
    classes = None if classes is None else np.asarray(classes).reshape(count, -1)
    width = (scores if scores is not None else classes).shape[1]
    results = [[[text(classes[i, j], False) if classes is not None else "",
                 float(scores[i, j]) if scores is not None else 0.0] for j in range(width)]
               for i in range(count)]
    return orjson.dumps({"results": results}), JSON


def encode_error(message: str) -> bytes:
    return orjson.dumps({"error": message})
