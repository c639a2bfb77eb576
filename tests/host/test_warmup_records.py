"""TF Serving's warm-up records (issue 21): assets.extra/tf_serving_warmup_requests, a TFRecord file
of PredictionLogs written here with TF Serving's own Python classes (tests/fixtures/tfserving/warmup),
replayed before /ping turns 200, on the host and in the amd64 image; a file TF Serving would not
load ends the start with the reason."""
from __future__ import annotations

import re

import pytest
import requests

from tests.fixtures.targets import PROCESS_TARGETS, start_target
from tests.fixtures.tfs_models import WARMUP_RECORDS, with_warmup_records
from tests.host.test_startup import failed_start, the_failure_line


@pytest.mark.parametrize("target", PROCESS_TARGETS)
def test_records_are_replayed_before_ping(request, target, warm_model_dir):
    with start_target(request, target, warm_model_dir) as server:
        lines = [line for line in server.logs().splitlines() if "warm-up" in line and "version 123" in line]
        r = requests.post(f"{server.url}/invocations", json={"instances": [1.0, 3.0]}, timeout=60)
    assert any(re.search(r"warm-up \d+ ms: 3 warm-up records from assets.extra/tf_serving_warmup_requests", line)
               for line in lines), lines
    assert r.status_code == 200 and r.json() == {"predictions": [2.5, 3.5]}, r.text


def test_without_records_the_synthetic_warmup_runs(tfs_models):
    from tests.fixtures.server import start_host_server

    with start_host_server(tfs_models.model_dir / "half_plus_two") as server:
        logs = server.logs()
    assert "warm-up" in logs and "synthetic inputs (no assets.extra/tf_serving_warmup_requests)" in logs


def _frames(data: bytes) -> list[bytes]:
    """The TFRecord frames of DATA (length, its CRC, the record, its CRC), whole."""
    frames, at = [], 0
    while at < len(data):
        length = int.from_bytes(data[at:at + 8], "little")
        frames.append(data[at:at + 16 + length])
        at += 16 + length
    return frames


def _broken(kind: str) -> bytes:
    data = WARMUP_RECORDS.read_bytes()
    if kind == "truncated":
        return data[:-7]
    if kind == "corrupt":
        return data[:20] + bytes([data[20] ^ 0xFF]) + data[21:]   # a byte of the first record: its CRC fails
    if kind == "too many":
        return _frames(data)[0] * 1001
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, source, fragment", [
    ("truncated", "saved_model_half_plus_two_cpu", "is not a readable TFRecord file of PredictionLogs"),
    ("corrupt", "saved_model_half_plus_two_cpu", "is not a readable TFRecord file of PredictionLogs"),
    ("too many", "saved_model_half_plus_two_cpu", "more than 1000 warm-up records"),
    # the same records for a model without their signatures: the record that names one fails
    (None, "saved_model_half_plus_three", "warm-up record 2 (classify_log) failed: unknown signature_name 'classify_x_to_y'"),
])
def test_a_broken_record_file_fails_the_start(tmp_path, kind, source, fragment):
    model = with_warmup_records(source, tmp_path / "model", _broken(kind) if kind else None)
    code, lines = failed_start(model)
    line = the_failure_line(lines)
    assert code != 0 and fragment in line and "warming up" in line, line
