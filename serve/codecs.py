"""Request bodies to NumPy, and NumPy back to response bodies, by media type.

Decoding and encoding go straight between bytes and arrays (orjson, np.loadtxt,
np.load/np.save) with no Python loop over elements; the only loops are over
instances or named tensors.
"""
from __future__ import annotations

import base64
import csv
import io
import itertools
import lzma
import re
import threading
import zipfile
import zlib
from dataclasses import dataclass
from typing import Mapping, Union

import numpy as np
import orjson
import simdjson

from .errors import BadRequest, NotAcceptable, UnsupportedContentType

JSON = "application/json"
JSONLINES = "application/jsonlines"
CSV = "text/csv"
NPY = "application/x-npy"
NPZ = "application/x-npz"

_ALIASES = {
    "application/json": JSON, "application/x-json": JSON,
    "application/jsonlines": JSONLINES, "application/jsonl": JSONLINES, "application/jsons": JSONLINES,
    "application/x-jsonlines": JSONLINES, "application/x-ndjson": JSONLINES,
    "text/csv": CSV, "application/csv": CSV,
    "application/x-npy": NPY, "application/npy": NPY,
    "application/x-npz": NPZ, "application/npz": NPZ,
}
DECODABLE = (JSON, JSONLINES, CSV, NPY, NPZ)
ENCODABLE = (JSON, JSONLINES, CSV, NPY, NPZ)

Inputs = Union[np.ndarray, dict[str, np.ndarray]]


@dataclass(frozen=True)
class Decoded:
    inputs: Inputs | None          # one unnamed array, or arrays by input name (None for examples)
    signature_name: str | None
    columnar: bool                 # TF Serving's {"inputs": ...}: answer {"outputs": ...}
    examples: list | None = None   # TF Serving's classify/regress {"examples": [...]}
    context: dict | None = None    # ... and its optional "context" features shared by every example


def media_type(header: str | None, default: str = JSON) -> str:
    """'Application/JSON; charset=utf-8' -> 'application/json', with known aliases folded."""
    if not header:
        return default
    base = header.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


_WILDCARDS = {"*/*": JSON, "application/*": JSON, "text/*": CSV}


def negotiate(accept_header: str | None) -> str:
    """The response media type for an Accept header; JSON when it is missing or */*.

    Highest quality first; among equals, the first one the client listed (AWS's TensorFlow
    container labels its answer with the first listed type). Parameters such as charset are
    ignored: every text answer is UTF-8.
    """
    if not accept_header or not accept_header.strip():
        return JSON
    offers = []
    for position, item in enumerate(accept_header.split(",")):
        media, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media:
            offers.append((-quality, position, media.lower()))
    for negative_quality, _, media in sorted(offers):
        if negative_quality >= 0:
            break
        known = _ALIASES.get(media) or _WILDCARDS.get(media)
        if known:
            return known
    raise NotAcceptable(f"cannot answer with Accept: {accept_header}; supported: {', '.join(ENCODABLE)}")


# -- decoding ---------------------------------------------------------------------------------------

def decode(body: bytes, content_type: str | None) -> Decoded:
    kind = media_type(content_type)
    if kind not in DECODABLE:
        raise UnsupportedContentType(
            f"Content-Type {content_type!r} is not supported; use one of {', '.join(DECODABLE)}")
    if not body:
        raise BadRequest("request body is empty")
    return _DECODERS[kind](body)


def _array(value, what: str) -> np.ndarray:
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


def _loads(body: bytes, what: str):
    try:
        return orjson.loads(body)
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
    arrays = sum(int(np.prod(shape[:i])) for i in range(len(shape)))
    return flat.reshape(shape), arrays


_parsers = threading.local()


def _parse(body: bytes):
    """simdjson with one reusable parser per thread (a new parser costs more than a small body)."""
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = simdjson.Parser()
    try:
        return parser.parse(body)
    except RuntimeError:  # a document from this parser is still referenced somewhere
        _parsers.parser = simdjson.Parser()
        return _parsers.parser.parse(body)


# An integer token of 16 or more digits (beyond 2**53 a float64 is no longer exact); digits after a
# '.' or in an exponent are parts of a float and do not count.
_LONG_INTEGER = re.compile(rb"(?<![\d.eE])\d{16,}(?![\d.eE])")


def _fast_json(body: bytes) -> Decoded | None:
    """The common TF Serving bodies of plain numbers, parsed by simdjson straight into NumPy.

    Any other shape of body (named instances, strings, b64, ragged or malformed input) returns
    None and goes through orjson. Every '[' in the body must belong to an array we decoded,
    which rules out a nested array hiding among numbers.
    """
    if _LONG_INTEGER.search(body):
        return None  # float64 would round it: the exact path keeps integers whole
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


def _decode_json(body: bytes) -> Decoded:
    fast = _fast_json(body) if len(body) >= FAST_JSON_MIN_BYTES else None
    return fast or _exact_json(body)


def _exact_json(body: bytes) -> Decoded:
    try:
        doc = orjson.loads(body)
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


def _decode_jsonlines(body: bytes) -> Decoded:
    """One instance per line; a single line is read as a JSON body, as AWS's container does."""
    lines = _lines(body)
    if not lines:
        raise BadRequest("JSON Lines body has no instances")
    if len(lines) == 1:
        return _decode_json(lines[0])
    return _instance_per_line(lines)


def _decode_csv(body: bytes) -> Decoded:
    """One instance per line; a single column gives one scalar per line. Text that is not all
    numbers is read as strings (for string inputs), as AWS's container quotes it."""
    try:
        array = np.loadtxt(io.BytesIO(body), delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as exc:
        array = _csv_strings(body, exc)
    return Decoded(array[:, 0] if array.ndim == 2 and array.shape[1] == 1 else array, None, columnar=False)


def _csv_strings(body: bytes, number_error: ValueError) -> np.ndarray:
    try:
        rows = [row for row in csv.reader(io.StringIO(body.decode("utf-8"))) if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadRequest(f"CSV must be UTF-8 text with one instance per row: {exc}") from None
    if not rows or len({len(r) for r in rows}) != 1:
        raise BadRequest(f"CSV must hold one instance per row, every row with the same number of "
                         f"columns, no header ({number_error})")
    return np.array(rows, dtype=str)


def _npy_array(data: bytes, what: str) -> np.ndarray:
    """A .npy file as an array; the header must match the bytes that follow it.

    np.load would allocate whatever the header claims before reading, so a lying header could
    ask for gigabytes: here the claimed size is checked against the bytes actually sent first.
    """
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported (1.0 and 2.0 are)")
    except Exception as exc:  # numpy's header parser raises ValueError, SyntaxError, TokenError, ...
        raise BadRequest(f"{what} is not a .npy array (np.save output): {exc}") from None
    if dtype.hasobject:
        raise BadRequest(f"{what} holds Python objects; send numbers (np.save with allow_pickle=False)")
    if dtype.itemsize == 0 or not all(isinstance(d, int) and 0 <= d < 2 ** 40 for d in shape):
        raise BadRequest(f"{what}: the .npy header's shape {shape} {dtype.name} is not one of an array")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    offset = buf.tell()
    if count * dtype.itemsize != len(data) - offset:
        raise BadRequest(f"{what}: the .npy header says shape {shape} {dtype.name} "
                         f"({count * dtype.itemsize} bytes) but {len(data) - offset} bytes follow it")
    # a copy, so user code that edits its input in place (as it could after np.load) still can
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset).copy()
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


# Compressed .npz members may expand; this bounds what one request can make the server hold.
MAX_NPZ_EXPANDED_BYTES = 256 * 1024 * 1024


def _decode_npy(body: bytes) -> Decoded:
    return Decoded(_npy_array(body, "body"), None, columnar=False)


def _member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, budget: list[int]) -> bytes:
    """A member, expanded in pieces against what is left of the request's budget: the sizes a zip
    declares are not trusted (a few hundred bytes can claim little and expand to gigabytes)."""
    pieces, crc = [], 0
    with archive.open(member) as stream:
        while True:
            piece = stream.read(1 << 20)
            if not piece:
                break
            budget[0] -= len(piece)
            if budget[0] < 0:
                raise BadRequest(f".npz expands to more than {MAX_NPZ_EXPANDED_BYTES >> 20} MiB")
            crc = zlib.crc32(piece, crc)
            pieces.append(piece)
    # zipfile checks the CRC only when the compressed stream ends, which a corrupt one may never do
    if crc != member.CRC:
        raise BadRequest(f".npz member {member.filename!r} is corrupt (CRC mismatch)")
    return b"".join(pieces)


def _decode_npz(body: bytes) -> Decoded:
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            for m in members:
                # np.savez stores, np.savez_compressed deflates; zipfile expands a bzip2 or lzma member
                # in blocks it does not bound, so a few hundred bytes could take gigabytes
                if m.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise BadRequest(f".npz member {m.filename!r} is compressed with method {m.compress_type}; "
                                     f"send np.savez or np.savez_compressed output (stored or deflated)")
            if sum(m.file_size for m in members) > MAX_NPZ_EXPANDED_BYTES:
                raise BadRequest(f".npz expands to more than {MAX_NPZ_EXPANDED_BYTES >> 20} MiB")
            budget = [MAX_NPZ_EXPANDED_BYTES]
            return Decoded({m.filename.removesuffix(".npy"): _npy_array(_member(archive, m, budget),
                                                                        f".npz member {m.filename!r}")
                            for m in members}, None, columnar=True)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError, ValueError, OSError, EOFError,
            NotImplementedError, RuntimeError) as exc:  # RuntimeError: an encrypted member
        raise BadRequest(f"body is not a .npz archive (np.savez output): {exc}") from None


_DECODERS = {JSON: _decode_json, JSONLINES: _decode_jsonlines, CSV: _decode_csv, NPY: _decode_npy,
             NPZ: _decode_npz}


# -- encoding ---------------------------------------------------------------------------------------

_ORJSON = orjson.OPT_SERIALIZE_NUMPY


def _text(value, binary: bool):
    if not isinstance(value, bytes):
        return value
    return {"b64": base64.b64encode(value).decode("ascii")} if binary else value.decode("utf-8", "replace")


def _json_ready(array: np.ndarray, binary: bool = False):
    """An output for orjson; tf.string values as text, or as {"b64": ...} for outputs whose name
    ends in _bytes (TF Serving's rule for binary outputs)."""
    if array.ndim == 0:
        return _text(array.item(), binary)
    if array.dtype == object:  # tf.string outputs
        return np.frompyfunc(lambda v: _text(v, binary), 1, 1)(array).tolist()
    return np.ascontiguousarray(array)


def _binary(name: str) -> bool:
    return name.endswith("_bytes")


def _rows(outputs: Mapping[str, np.ndarray]) -> list:
    """Row format for several outputs: one {name: value} per instance, as TF Serving answers."""
    count = len(next(iter(outputs.values())))
    return [{n: _json_ready(np.asarray(a[i]), _binary(n)) for n, a in outputs.items()} for i in range(count)]


def _only(outputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
    return next(iter(outputs.values())) if len(outputs) == 1 else None


def encode(outputs: Mapping[str, np.ndarray], accept: str, columnar: bool = False) -> tuple[bytes, str]:
    """Encode model outputs for the negotiated media type (see ``negotiate``)."""
    single = _only(outputs)
    binary = single is not None and _binary(next(iter(outputs)))
    if accept == JSON:
        if columnar:
            value = _json_ready(single, binary) if single is not None else \
                {n: _json_ready(a, _binary(n)) for n, a in outputs.items()}
            return orjson.dumps({"outputs": value}, option=_ORJSON), JSON
        value = _json_ready(single, binary) if single is not None else _rows(outputs)
        return orjson.dumps({"predictions": value}, option=_ORJSON), JSON
    if accept == JSONLINES:
        rows = [_json_ready(r, binary) for r in single] if single is not None else _rows(outputs)
        return b"\n".join(orjson.dumps(r, option=_ORJSON) for r in rows) + b"\n", JSONLINES
    if accept == CSV:
        return _encode_csv(outputs), CSV
    if accept == NPY:
        if single is None:
            raise NotAcceptable(f"{NPY} holds one array but the model returns {sorted(outputs)}; "
                                f"ask for {NPZ} or {JSON}")
        buf = io.BytesIO()
        np.save(buf, single, allow_pickle=False)
        return buf.getvalue(), NPY
    if accept == NPZ:
        buf = io.BytesIO()
        np.savez(buf, **outputs)
        return buf.getvalue(), NPZ
    raise NotAcceptable(f"cannot encode {accept}; supported: {', '.join(ENCODABLE)}")


def _encode_csv(outputs: Mapping[str, np.ndarray]) -> bytes:
    columns = []
    for name, array in outputs.items():
        if array.dtype == object or array.ndim == 0:
            raise NotAcceptable(f"output '{name}' cannot be written as CSV; ask for {JSON}")
        columns.append(array.reshape(array.shape[0], -1))
    table = np.concatenate(columns, axis=1) if len(columns) > 1 else columns[0]
    fmt = "%d" if table.dtype.kind in "iub" else "%.9g"
    buf = io.BytesIO()
    np.savetxt(buf, table, fmt=fmt, delimiter=",")
    return buf.getvalue()


def encode_results(method: str, outputs: Mapping[str, np.ndarray]) -> tuple[bytes, str]:
    """TF Serving's classify and regress answers: {"results": [...]}, one entry per example.

    regress: one number per example (from the "outputs" tensor). classify: per example, a list
    of [label, score] pairs from "classes" and "scores" (label "" when the model has no classes).
    """
    if method == "regress":
        values = outputs.get("outputs", _only(outputs))
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
    results = [[[_text(classes[i, j], False) if classes is not None else "",
                 float(scores[i, j]) if scores is not None else 0.0] for j in range(width)]
               for i in range(count)]
    return orjson.dumps({"results": results}), JSON


def encode_error(message: str) -> bytes:
    return orjson.dumps({"error": message})
