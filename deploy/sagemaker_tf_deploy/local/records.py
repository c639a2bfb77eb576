"""Records and requests of a transform, the same for every engine (batch and async, here or on AWS).

No network, no Docker: bytes in, bytes out.
  * split_records: a file into records by SplitType, as SageMaker's batch agent splits:
      `Line`     one record per non-empty line (`\\r\\n` is fine);
      `RecordIO` one record per MXNet RecordIO record (magic 0xced7230a, 29-bit length, the cflag
                 of a record split in parts, padding to 4 bytes), sent with its framing;
      `None`     the whole file is one record;
  * mini_batches: consecutive records of one file packed into request bodies of at most
    MaxPayloadInMB (MultiRecord), or one per request (SingleRecord); a record larger than the
    limit on its own is refused here, as SageMaker fails it;
  * split_answer: an answer for N records into N output lines (text/csv, application/jsonlines,
    or JSON {"predictions": [...]} with N entries);
  * join: `--join-source Input`, SageMaker's rules for CSV and JSON;
  * effective_parameters: BatchStrategy, MaxPayloadInMB, MaxConcurrentTransforms from the flags,
    else the container's /execution-parameters, else SageMaker's defaults.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Iterator

MB = 1024 * 1024
SPLIT_TYPES = ("Line", "RecordIO", "None")
DEFAULTS = {"BatchStrategy": "MultiRecord", "MaxPayloadInMB": 6, "MaxConcurrentTransforms": 1}
PARAMETERS = ("BatchStrategy", "MaxPayloadInMB", "MaxConcurrentTransforms")
STRATEGY_ENV = {"MultiRecord": "MULTI_RECORD", "SingleRecord": "SINGLE_RECORD"}
_STRATEGY_FROM_SERVER = {"MULTI_RECORD": "MultiRecord", "SINGLE_RECORD": "SingleRecord",
                         "MultiRecord": "MultiRecord", "SingleRecord": "SingleRecord"}
RECORDIO_MAGIC = 0xCED7230A


@dataclass
class Record:
    file: int           # index into the run's file list
    line: int           # 1-based: the line (Line), the record's number (RecordIO), 1 (None)
    data: bytes         # what is sent: the line without its newline, the framed RecordIO record, the file


def split_records(data: bytes, split_type: str, file_index: int) -> list[Record]:
    if split_type == "None":
        return [Record(file_index, 1, data)] if data.strip() else []
    if split_type == "RecordIO":
        return [Record(file_index, number, framed) for number, framed in enumerate(recordio_records(data), 1)]
    records = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if line.strip():
            records.append(Record(file_index, number, line))
    return records


def recordio_records(data: bytes) -> Iterator[bytes]:
    """Each logical RecordIO record with its framing (the parts of a split record together).
    ValueError names the byte offset of a frame that is not RecordIO."""
    offset, start, size = 0, 0, len(data)
    while offset < size:
        if size - offset < 8:
            raise ValueError(f"RecordIO: {size - offset} stray bytes at offset {offset} (a header is 8)")
        magic, lrec = struct.unpack_from("<II", data, offset)
        if magic != RECORDIO_MAGIC:
            raise ValueError(f"RecordIO: no magic number at offset {offset} (is the input RecordIO?)")
        cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        end = offset + 8 + length + (-length % 4)
        if end > size:
            raise ValueError(f"RecordIO: the record at offset {offset} needs {end - offset} bytes, "
                             f"{size - offset} are left")
        if cflag in (0, 1):          # a whole record, or the first part of one
            start = offset
        offset = end
        if cflag in (0, 3):          # a whole record, or the last part of one
            yield data[start:end]


def mini_batches(records: list[Record], strategy: str, max_payload_bytes: int, split_type: str = "Line"
                 ) -> Iterator[tuple[list[Record], str | None]]:
    """(records, None) per request; (one record, reason) for a record too large to send at all."""
    sep = 1 if split_type == "Line" else 0          # Line joins records with newlines
    limit_mb = f"MaxPayloadInMB ({max_payload_bytes // MB} MB)" if max_payload_bytes >= MB else "MaxPayloadInMB"
    if strategy == "SingleRecord":
        for r in records:
            if len(r.data) > max_payload_bytes:
                yield [r], f"record is {len(r.data)} bytes, more than {limit_mb}"
            else:
                yield [r], None
        return
    batch: list[Record] = []
    size = 0
    for r in records:
        need = len(r.data) + sep
        if need > max_payload_bytes:
            if batch:
                yield batch, None
                batch, size = [], 0
            yield [r], f"record is {len(r.data)} bytes, more than {limit_mb}"
            continue
        if size + need > max_payload_bytes and batch:
            yield batch, None
            batch, size = [], 0
        batch.append(r)
        size += need
    if batch:
        yield batch, None


def body_of(records: list[Record], split_type: str) -> bytes:
    if split_type == "None":
        return records[0].data
    if split_type == "RecordIO":
        return b"".join(r.data for r in records)
    return b"\n".join(r.data for r in records) + b"\n"


def split_answer(body: bytes, content_type: str, count: int) -> list[bytes]:
    """One output line per record, or ValueError saying why the answer cannot be split so."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in ("application/json", "application/x-json"):
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise ValueError(f"answer is not valid JSON: {exc}") from None
        preds = doc.get("predictions") if isinstance(doc, dict) else None
        if isinstance(preds, list) and len(preds) == count:
            return [json.dumps(p, separators=(",", ":")).encode() for p in preds]
        if count == 1:
            return [json.dumps(doc, separators=(",", ":")).encode()]
        raise ValueError(f"a JSON answer for {count} records needs {{\"predictions\": [...]}} with "
                         f"{count} entries; ask for --accept text/csv or application/jsonlines")
    lines = [line.rstrip(b"\r") for line in body.split(b"\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != count:
        raise ValueError(f"answer has {len(lines)} lines for {count} records")
    return lines


def join(record: bytes, output: bytes, content_type: str) -> bytes:
    """--join-source Input, as SageMaker joins: CSV appends the output columns to the input row;
    a JSON object input gets a "SageMakerOutput" key; any other JSON input becomes
    {"SageMakerInput": input, "SageMakerOutput": output}. Outputs that are JSON are kept as JSON."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind in ("text/csv", "application/csv"):
        return record + b"," + output
    try:
        value = json.loads(output)
    except ValueError:
        value = output.decode("utf-8", errors="replace")
    try:
        doc = json.loads(record)
    except ValueError as exc:
        raise ValueError(f"cannot join: the input record is not JSON ({exc})") from None
    if isinstance(doc, dict):
        doc = {**doc, "SageMakerOutput": value}
    else:
        doc = {"SageMakerInput": doc, "SageMakerOutput": value}
    return json.dumps(doc, separators=(",", ":")).encode()


def effective_parameters(given: dict, answered: dict | None, split_type: str = "Line") -> tuple[dict, dict]:
    """(values, where each came from: 'flag', '/execution-parameters' or 'default').

    GIVEN holds the flags' values by SageMaker's names (None: not given); ANSWERED is the
    container's /execution-parameters document, or None."""
    values, sources = {}, {}
    for key in PARAMETERS:
        value = given.get(key)
        if value is not None:
            values[key], sources[key] = value, "flag"
            continue
        got = (answered or {}).get(key)
        if key == "BatchStrategy":
            got = _STRATEGY_FROM_SERVER.get(got) if got is not None else None
        elif got is not None:
            try:
                got = int(got)
            except (TypeError, ValueError):
                got = None
            if got is not None and got < 1:
                got = None
        if got is not None:
            values[key], sources[key] = got, "/execution-parameters"
        else:
            values[key], sources[key] = DEFAULTS[key], "default"
    if split_type == "None":
        values["BatchStrategy"] = "SingleRecord"   # a whole file is one record
    return values, sources


def batch_env(given: dict) -> dict[str, str]:
    """The environment SageMaker's agent gives the container for the parameters the user set."""
    env = {}
    if given.get("MaxPayloadInMB") is not None:
        env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(given["MaxPayloadInMB"])
    if given.get("BatchStrategy") is not None:
        env["SAGEMAKER_BATCH_STRATEGY"] = STRATEGY_ENV[given["BatchStrategy"]]
    if given.get("MaxConcurrentTransforms") is not None:
        env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] = str(given["MaxConcurrentTransforms"])
    return env
