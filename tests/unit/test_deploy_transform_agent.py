"""The transform core every engine shares (deploy/sagemaker_tf_deploy/local/records.py, agent.py),
with a sender written here: records and requests per split type, retries of transient failures,
bisection to the failing records, order, joins, and a stop while requests are out.

The engines themselves (HTTP to the container, the async runtime here, S3 and InvokeEndpointAsync)
are tested against real servers in tests/deploy/test_deploy_transform*.py.
"""

from __future__ import annotations

import random
import struct
import threading
import time

import pytest

from sagemaker_tf_deploy.local import agent, records as rec
from sagemaker_tf_deploy.core.errors import DeployError


def framed(payload: bytes, cflag: int = 0) -> bytes:
    return struct.pack("<II", rec.RECORDIO_MAGIC, (cflag << 29) | len(payload)) + payload + b"\0" * (-len(payload) % 4)


def test_recordio_records_keep_their_framing_and_join_split_records():
    parts = framed(b"abc") + framed(b"first", 1) + framed(b"mid", 2) + framed(b"last", 3) + framed(b"")
    got = rec.split_records(parts, "RecordIO", 0)
    assert [r.line for r in got] == [1, 2, 3]
    assert got[0].data == framed(b"abc") and len(got[0].data) == 12          # padded to 4 bytes
    assert got[1].data == framed(b"first", 1) + framed(b"mid", 2) + framed(b"last", 3)
    assert rec.body_of(got, "RecordIO") == parts                             # sent as it came, no separators
    with pytest.raises(ValueError, match="no magic number at offset 12"):
        rec.split_records(framed(b"abc") + b"\1\2\3\4\5\6\7\x08", "RecordIO", 0)
    with pytest.raises(ValueError, match="needs 16 bytes, 10 are left"):
        rec.split_records(framed(b"12345678")[:10], "RecordIO", 0)


def test_mini_batches_count_the_newline_only_for_lines():
    records = [rec.Record(0, i + 1, b"x" * 100) for i in range(10)]
    assert [len(b) for b, _ in rec.mini_batches(records, "MultiRecord", 300, "RecordIO")] == [3, 3, 3, 1]
    assert [len(b) for b, _ in rec.mini_batches(records, "MultiRecord", 300, "Line")] == [2, 2, 2, 2, 2]


def test_parameters_from_flags_then_the_container_then_defaults():
    values, sources = rec.effective_parameters(
        {"MaxPayloadInMB": 2}, {"BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6, "MaxConcurrentTransforms": 4})
    assert values == {"BatchStrategy": "MultiRecord", "MaxPayloadInMB": 2, "MaxConcurrentTransforms": 4}
    assert sources == {"BatchStrategy": "/execution-parameters", "MaxPayloadInMB": "flag",
                       "MaxConcurrentTransforms": "/execution-parameters"}
    values, sources = rec.effective_parameters({}, None, "None")
    assert values == {"BatchStrategy": "SingleRecord", "MaxPayloadInMB": 6, "MaxConcurrentTransforms": 1}
    assert rec.batch_env({"MaxPayloadInMB": 2, "BatchStrategy": "SingleRecord", "MaxConcurrentTransforms": 3}) == {
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2", "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "3"}


class Doubler:
    """A container stand-in: each CSV line `a,b` answers `2a,2b`; a line `bad` makes the whole
    request a 400; `flaky` answers 503 the first FLAKY times; a small random delay shuffles the
    order in which answers come back."""

    def __init__(self, flaky: int = 0, status: int | None = None):
        self.flaky = flaky
        self.status = status
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()

    def send(self, body: bytes) -> agent.Reply:
        time.sleep(random.random() * 0.003)
        with self.lock:
            self.bodies.append(body)
            if self.flaky:
                self.flaky -= 1
                return agent.Reply(503, b'{"error": "busy"}')
        if self.status:
            return agent.Reply(self.status, b'{"error": "always"}')
        lines = body.decode().splitlines()
        if "bad" in lines:
            return agent.Reply(400, b'{"error": "could not parse \'bad\'"}')
        return agent.Reply(200, "".join(",".join(str(2 * int(v)) for v in line.split(",")) + "\n"
                                        for line in lines).encode(), "text/csv")

    def instances(self):
        return 1

    def cancel(self):
        pass


class Memory:
    """agent.Source and agent.Sink in a dict."""

    def __init__(self, files: dict[str, bytes]):
        self.data = dict(files)
        self.out: dict[str, bytes] = {}

    def files(self):
        return [agent.InputFile(name, len(body)) for name, body in sorted(self.data.items())]

    def read(self, name):
        return self.data[name]

    def write(self, name, data):
        self.out[name] = data
        return name


def csv(rows: int, start: int = 0, bad: set[int] = frozenset()) -> bytes:
    return b"".join(b"bad\n" if i in bad else f"{i},{i + 1}\n".encode() for i in range(start, start + rows))


PARAMS = {"BatchStrategy": "MultiRecord", "MaxPayloadInMB": 1, "MaxConcurrentTransforms": 4}


def run(files, sender, params=PARAMS, **kw):
    io = Memory(files)
    opts = {k: kw.pop(k) for k in ("join_source", "split_type") if k in kw}
    result = agent.run(io, io, sender, agent.Options(**opts), params, quiet=True, retry_delay=0.001, **kw)
    return result, io.out


def test_outputs_are_in_order_one_line_per_record_across_many_requests():
    files = {f"d/f{i}.csv": csv(50 + i, start=i * 1000) for i in range(12)}
    result, out = run(files, Doubler(), {**PARAMS, "BatchStrategy": "SingleRecord"}, in_flight=8)
    assert result.failed == 0 and result.records == sum(50 + i for i in range(12))
    assert result.requests == result.records
    for i in range(12):
        expect = b"".join(f"{2 * j},{2 * j + 2}\n".encode() for j in range(i * 1000, i * 1000 + 50 + i))
        assert out[f"d/f{i}.csv.out"] == expect


def test_transient_failures_are_sent_again():
    result, out = run({"a.csv": csv(5)}, Doubler(flaky=2))
    assert result.failed == 0 and result.retries == 2 and result.requests == 3
    assert out["a.csv.out"] == b"".join(f"{2 * j},{2 * j + 2}\n".encode() for j in range(5))


def test_a_failure_that_stays_transient_fails_its_records_after_the_retries():
    result, out = run({"a.csv": csv(3)}, Doubler(status=503), retries=2)
    assert result.requests == 3 and result.retries == 2          # no bisection of a 503
    assert [(f, line) for f, line, _ in result.failures] == [("a.csv", 1), ("a.csv", 2), ("a.csv", 3)]
    assert "HTTP 503: always" in result.failures[0][2]
    assert out == {}


def test_bad_records_are_found_by_halving_and_reported_as_file_and_line():
    sender = Doubler()
    result, out = run({"bad.csv": csv(64, bad={9, 40}), "good.csv": csv(8)}, sender)
    assert [(f, line) for f, line, _ in result.failures] == [("bad.csv", 10), ("bad.csv", 41)]
    assert "could not parse" in result.failures[0][2]
    assert list(out) == ["good.csv.out"]                          # no .out for a file with a failure
    assert result.requests < 30                                   # halving, not one request per record


def test_join_source_input_appends_the_output_to_each_row():
    result, out = run({"a.csv": csv(3)}, Doubler(), join_source="Input")
    assert out["a.csv.out"] == b"0,1,0,2\n1,2,2,4\n2,3,4,6\n"


def test_no_records_is_an_error():
    with pytest.raises(DeployError, match="holds no records"):
        run({"empty.csv": b"\n\n"}, Doubler())


def test_a_stop_cancels_the_sender_and_ends_the_run():
    class Stuck(Doubler):
        def __init__(self):
            super().__init__()
            self.released = threading.Event()
            self.cancelled = False

        def send(self, body):
            self.released.wait(10)
            return agent.Reply(0, b"cancelled")

        def cancel(self):
            self.cancelled = True
            self.released.set()

    class Interrupting(Memory):
        def read(self, name):
            if name == "b.csv":
                raise KeyboardInterrupt
            return super().read(name)

    sender = Stuck()
    io = Interrupting({"a.csv": csv(5), "b.csv": csv(5)})
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        agent.run(io, io, sender, agent.Options(), {**PARAMS, "BatchStrategy": "SingleRecord"}, quiet=True)
    assert sender.cancelled and time.monotonic() - start < 5
    assert io.out == {}


# --- the cost line (operations/transform_cost.py) ----------------------------------------------

def test_cost_line_from_the_throughput_measured_here():
    from sagemaker_tf_deploy.operations import transform_cost as tc
    assert [tc.vcpus(t) for t in ("ml.c7g.4xlarge", "ml.c5.large", "ml.m6g.xlarge", "ml.c8g.medium", "ml.p5.48xlarge")] \
        == [16, 2, 4, 1, 192]
    assert tc.vcpus("ml.m5d.metal") is None
    # 100,000 records in 2 s on 2 vCPUs: 25,000 records per vCPU-second, so a 16-vCPU type does
    # 400,000 records/s: 1e6 records take 2.5 s, 1/1440 h
    c = tc.summary(records=100_000, seconds=2.0, instance_type="ml.c7g.4xlarge", batch_type="ml.c5.4xlarge",
                   measured_vcpus=2, price=0.72, batch_price=0.96)
    assert c["estimated"] and c["records_per_vcpu_second"] == 25_000
    assert c["cost_per_million"] == pytest.approx(0.72 / 1440)
    assert c["batch_cost_per_million"] == pytest.approx(0.96 / 1440)      # same vCPUs, equal per-vCPU speed
    text = "\n".join(tc.lines(c))
    assert "per million records" in text and "assuming equal per-vCPU speed" in text and "ml.c5.4xlarge" in text
    assert tc.lines(tc.summary(records=10, seconds=1.0, instance_type="ml.c7g.4xlarge",
                               batch_type="ml.c5.4xlarge", measured_vcpus=2)) == []   # no price, no line here


def test_cost_line_from_the_instance_hours_an_endpoint_ran():
    from sagemaker_tf_deploy.operations import transform_cost as tc
    # 2 instances for 30 minutes = 1 instance-hour; 1.8e6 records
    c = tc.summary(records=1_800_000, seconds=1800.0, instance_type="ml.c7g.4xlarge", batch_type="ml.c5.4xlarge",
                   instance_seconds=3600.0, price=0.6, batch_price=0.68)
    assert not c["estimated"] and c["instance_hours"] == 1.0 and c["cost"] == pytest.approx(0.6)
    assert c["cost_per_million"] == pytest.approx(0.6 / 1.8)
    assert c["batch_instance_hours"] == pytest.approx(1.0) and c["batch_cost"] == pytest.approx(0.68)
    assert tc.lines(tc.summary(records=5, seconds=1.0, instance_type="ml.c7g.4xlarge", batch_type="ml.c5.4xlarge",
                               instance_seconds=7.2))[0].startswith("  instance-hours  0.002000 on ml.c7g.4xlarge (used)")
