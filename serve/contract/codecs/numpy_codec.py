"""NumPy's .npy (one array) and .npz (named arrays), both ways; every size a body claims is checked
against the bytes it holds or expands to."""
from __future__ import annotations

import io
import lzma
import math
import zipfile
import zlib
from typing import Mapping

import numpy as np

from serve.contract.errors import BadRequest, NotAcceptable, PayloadTooLarge
from serve.contract.codecs.decoded import Decoded
from serve.contract.codecs.media import JSON, NPY, NPZ

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
    # Python's integers: NumPy's int64 product wraps (2**32 x 2**32 is 0, which an empty body matches)
    count = math.prod(shape)
    offset = buf.tell()
    if count * dtype.itemsize != len(data) - offset:
        raise BadRequest(f"{what}: the .npy header says shape {shape} {dtype.name} "
                         f"({count * dtype.itemsize} bytes) but {len(data) - offset} bytes follow it")
    # a copy, so user code that edits its input in place (as it could after np.load) still can
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset).copy()
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)

# The decode budget: what the members of one .npz may expand to, in all. Compressed members may
# expand far beyond their body (a few hundred bytes of deflate can claim gigabytes), so this, not
# SAGEMAKER_MAX_PAYLOAD_IN_MB, bounds what one request can make the server hold. Over it is a 413.
MAX_NPZ_EXPANDED_BYTES = 256 * 1024 * 1024


def _over_budget(claim: str) -> PayloadTooLarge:
    return PayloadTooLarge(f".npz {claim} more than the {MAX_NPZ_EXPANDED_BYTES >> 20} MiB a request may decode to "
                           f"(the .npz decode budget); send fewer or smaller arrays, or several requests")

def decode_npy(body: bytes) -> Decoded:
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
                raise _over_budget(f"member {member.filename!r} expands to")
            crc = zlib.crc32(piece, crc)
            pieces.append(piece)
    # zipfile checks the CRC only when the compressed stream ends, which a corrupt one may never do
    if crc != member.CRC:
        raise BadRequest(f".npz member {member.filename!r} is corrupt (CRC mismatch)")
    return b"".join(pieces)

def decode_npz(body: bytes) -> Decoded:
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
                raise _over_budget("members declare")
            budget = [MAX_NPZ_EXPANDED_BYTES]
            return Decoded({m.filename.removesuffix(".npy"): _npy_array(_member(archive, m, budget),
                                                                        f".npz member {m.filename!r}")
                            for m in members}, None, columnar=True)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError, ValueError, OSError, EOFError,
            NotImplementedError, RuntimeError) as exc:  # RuntimeError: an encrypted member
        raise BadRequest(f"body is not a .npz archive (np.savez output): {exc}") from None


def encode_npy(outputs: Mapping[str, np.ndarray], columnar: bool = False) -> bytes:
    if len(outputs) != 1:
        raise NotAcceptable(f"{NPY} holds one array but the model returns {sorted(outputs)}; "
                            f"ask for {NPZ} or {JSON}")
    buf = io.BytesIO()
    np.save(buf, next(iter(outputs.values())), allow_pickle=False)
    return buf.getvalue()


def encode_npz(outputs: Mapping[str, np.ndarray], columnar: bool = False) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **outputs)
    return buf.getvalue()
