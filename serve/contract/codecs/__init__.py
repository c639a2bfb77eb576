"""Request bodies to NumPy, and NumPy back to response bodies, by media type: one module per
format, each pairing its decoder with its encoder (``json_codec``, ``csv_codec``,
``numpy_codec``), ``media`` for the names and Accept negotiation, and ``decoded.Decoded``, which
a request decodes to and which encodes that request's own reply (``Decoded.reply``).

No HTTP library is imported here: headers arrive as strings.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from serve.contract.errors import BadRequest, NotAcceptable, UnsupportedContentType
from serve.contract.codecs.csv_codec import decode_csv, encode_csv
from serve.contract.codecs.decoded import Decoded, Inputs
from serve.contract.codecs.json_codec import (FAST_JSON_MIN_BYTES, decode_json, decode_jsonlines, encode_error, encode_json,
                         encode_jsonlines, encode_results)
from serve.contract.codecs.media import CSV, DECODABLE, ENCODABLE, JSON, JSONLINES, NPY, NPZ, media_type, negotiate
from serve.contract.codecs.numpy_codec import MAX_NPZ_EXPANDED_BYTES, decode_npy, decode_npz, encode_npy, encode_npz

__all__ = ["CSV", "DECODABLE", "ENCODABLE", "FAST_JSON_MIN_BYTES", "JSON", "JSONLINES", "MAX_NPZ_EXPANDED_BYTES",
           "NPY", "NPZ", "Decoded", "Inputs", "decode", "encode", "encode_error", "encode_results", "media_type",
           "negotiate"]

_DECODERS = {JSON: decode_json, JSONLINES: decode_jsonlines, CSV: decode_csv, NPY: decode_npy, NPZ: decode_npz}
_ENCODERS = {JSON: encode_json, JSONLINES: encode_jsonlines, CSV: encode_csv, NPY: encode_npy, NPZ: encode_npz}


def decode(body: bytes, content_type: str | None) -> Decoded:
    kind = media_type(content_type)
    if kind not in DECODABLE:
        raise UnsupportedContentType(
            f"Content-Type {content_type!r} is not supported; use one of {', '.join(DECODABLE)}")
    if not body:
        raise BadRequest("request body is empty")
    return _DECODERS[kind](body)


def encode(outputs: Mapping[str, np.ndarray], accept: str, columnar: bool = False) -> tuple[bytes, str]:
    """Encode model outputs for the negotiated media type (see ``negotiate``)."""
    encoder = _ENCODERS.get(accept)
    if encoder is None:
        raise NotAcceptable(f"cannot encode {accept}; supported: {', '.join(ENCODABLE)}")
    return encoder(outputs, columnar), accept
