"""CSV, both ways: one instance per line, no header."""
from __future__ import annotations

import csv
import io
from typing import Mapping

import numpy as np

from serve.contract.errors import BadRequest, NotAcceptable
from serve.contract.codecs.decoded import Decoded, text_array
from serve.contract.codecs.media import JSON

def decode_csv(body: bytes) -> Decoded:
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
    return text_array(rows, "CSV")


def encode_csv(outputs: Mapping[str, np.ndarray], columnar: bool = False) -> bytes:
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
