"""Request bodies to NumPy, and NumPy back to response bodies, by media type.

Decoding and encoding go straight between bytes and arrays (orjson, np.loadtxt,
np.load/np.save) with no Python loop over elements; the only loops are over
instances or named tensors.
"""
from __future__ import annotations

import io
import itertools
import lzma
import threading
import zipfile
import zlib
from dataclasses import dataclass
from typing import Mapping, Union

import numpy as np
import orjson
import simdjson
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from .errors import BadRequest, NotAcceptable, UnsupportedContentType

JSON = "application/json"
JSONLINES = "application/jsonlines"
CSV = "text/csv"
NPY = "application/x-npy"
NPZ = "application/x-npz"

_ALIASES = {
    "application/json": JSON, "application/x-json": JSON,
    "application/jsonlines": JSONLINES, "application/jsonl": JSONLINES,
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
    inputs: Inputs                 # one unnamed array, or arrays by input name
    signature_name: str | None
    columnar: bool                 # TF Serving's {"inputs": ...}: answer {"outputs": ...}


def media_type(header: str | None, default: str = JSON) -> str:
    """'Application/JSON; charset=utf-8' -> 'application/json', with known aliases folded."""
    if not header:
        return default
    base = header.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def negotiate(accept_header: str | None) -> str:
    """The response media type for an Accept header; JSON when it is missing or */*."""
    if not accept_header or accept_header.strip() in ("*/*", ""):
        return JSON
    accept = parse_accept_header(accept_header, MIMEAccept)
    best = accept.best_match(list(_ALIASES), default=None)
    if best is None:
        raise NotAcceptable(
            f"cannot answer with Accept: {accept_header}; supported: {', '.join(ENCODABLE)}")
    return _ALIASES[best]


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
    if array.dtype == object:
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
    doc = _loads(body, "request body")
    if isinstance(doc, list):
        return Decoded(_array(doc, "JSON array"), None, columnar=False)
    if not isinstance(doc, dict):
        raise BadRequest('JSON body must be {"instances": [...]}, {"inputs": ...} or an array')
    signature = doc.get("signature_name")
    if signature is not None and not isinstance(signature, str):
        raise BadRequest("signature_name must be a string")
    if "instances" in doc and "inputs" in doc:
        raise BadRequest('send either "instances" (row format) or "inputs" (columnar format), not both')
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
    raise BadRequest('JSON object must have "instances" (row format) or "inputs" (columnar format)')


def _decode_jsonlines(body: bytes) -> Decoded:
    rows = [_loads(line, f"line {i + 1}") for i, line in enumerate(body.splitlines()) if line.strip()]
    if not rows:
        raise BadRequest("JSON Lines body has no instances")
    return Decoded(_stack_rows(rows, "JSON Lines"), None, columnar=False)


def _decode_csv(body: bytes) -> Decoded:
    try:
        array = np.loadtxt(io.BytesIO(body), delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise BadRequest(f"CSV must hold one instance per row, numbers only, no header: {exc}") from None
    return Decoded(array, None, columnar=False)


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


def _member(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    data = archive.read(member)
    # zipfile checks the CRC only when the compressed stream ends, which a corrupt one may never do
    if zlib.crc32(data) != member.CRC:
        raise BadRequest(f".npz member {member.filename!r} is corrupt (CRC mismatch)")
    return data


def _decode_npz(body: bytes) -> Decoded:
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if sum(m.file_size for m in members) > MAX_NPZ_EXPANDED_BYTES:
                raise BadRequest(f".npz expands to more than {MAX_NPZ_EXPANDED_BYTES >> 20} MiB")
            return Decoded({m.filename.removesuffix(".npy"): _npy_array(_member(archive, m), f".npz member {m.filename!r}")
                            for m in members}, None, columnar=True)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError, ValueError, OSError, EOFError,
            NotImplementedError, RuntimeError) as exc:  # RuntimeError: an encrypted member
        raise BadRequest(f"body is not a .npz archive (np.savez output): {exc}") from None


_DECODERS = {JSON: _decode_json, JSONLINES: _decode_jsonlines, CSV: _decode_csv, NPY: _decode_npy,
             NPZ: _decode_npz}


# -- encoding ---------------------------------------------------------------------------------------

_ORJSON = orjson.OPT_SERIALIZE_NUMPY


def _json_ready(array: np.ndarray):
    if array.ndim == 0:
        value = array.item()
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if array.dtype == object:  # tf.string outputs
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.ravel()] \
            if array.ndim <= 1 else array.tolist()
    return np.ascontiguousarray(array)


def _rows(outputs: Mapping[str, np.ndarray]) -> list:
    """Row format for several outputs: one {name: value} per instance, as TF Serving answers."""
    count = len(next(iter(outputs.values())))
    return [{n: _json_ready(np.asarray(a[i])) for n, a in outputs.items()} for i in range(count)]


def _only(outputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
    return next(iter(outputs.values())) if len(outputs) == 1 else None


def encode(outputs: Mapping[str, np.ndarray], accept: str, columnar: bool = False) -> tuple[bytes, str]:
    """Encode model outputs for the negotiated media type (see ``negotiate``)."""
    single = _only(outputs)
    if accept == JSON:
        if columnar:
            value = _json_ready(single) if single is not None else {n: _json_ready(a) for n, a in outputs.items()}
            return orjson.dumps({"outputs": value}, option=_ORJSON), JSON
        value = _json_ready(single) if single is not None else _rows(outputs)
        return orjson.dumps({"predictions": value}, option=_ORJSON), JSON
    if accept == JSONLINES:
        rows = [_json_ready(r) for r in single] if single is not None else _rows(outputs)
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


def encode_error(message: str) -> bytes:
    return orjson.dumps({"error": message})
