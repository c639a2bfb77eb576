"""`deploy transform --local`: what SageMaker's batch transform agent does, on this machine.

The image runs through container.py (same `docker run`, model mount, environment, emulation and
clean-up as `deploy local`), started with the batch environment the agent sets:

    SAGEMAKER_BATCH=true, and for what the user gave: SAGEMAKER_MAX_PAYLOAD_IN_MB,
    SAGEMAKER_BATCH_STRATEGY (SINGLE_RECORD|MULTI_RECORD), SAGEMAKER_MAX_CONCURRENT_TRANSFORMS

Then, as the agent (and the SageMaker Python SDK's local mode) does:
  1. GET /execution-parameters; a value the user did not give comes from there, else from
     SageMaker's defaults (MultiRecord, 6 MB, 1 at a time);
  2. each input file is split into records (`Line`: one per non-empty line; `None`: the file);
  3. MultiRecord packs consecutive records of one file into mini-batches of at most
     MaxPayloadInMB (records joined by newlines); SingleRecord sends one record per request;
  4. up to MaxConcurrentTransforms requests are in flight at once (a thread pool of
     requests sessions);
  5. with `Line`, each answer must hold one line per record (text/csv, application/jsonlines; a JSON
     {"predictions": [...]} with one entry per record is split the same way); `<file>.out` gets
     one output line per input record, in input order, joined with the input on
     `--join-source Input` (CSV: input row + "," + output; JSON: SageMaker's rules, see join());
     with `None`, `<file>.out` is the file's whole answer;
  6. a mini-batch the container refuses is bisected down to the records that fail, each reported
     with its file and line; a file with a failed record gets no .out (SageMaker writes no
     output for a failed object) and the run exits 1.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import requests
import requests.adapters

from . import container as local
from ..core.errors import DeployError

MB = 1024 * 1024
DEFAULTS = {"BatchStrategy": "MultiRecord", "MaxPayloadInMB": 6, "MaxConcurrentTransforms": 1}
_STRATEGY_ENV = {"MultiRecord": "MULTI_RECORD", "SingleRecord": "SINGLE_RECORD"}
_STRATEGY_FROM_SERVER = {"MULTI_RECORD": "MultiRecord", "SINGLE_RECORD": "SingleRecord",
                         "MultiRecord": "MultiRecord", "SingleRecord": "SingleRecord"}
MAX_REPORTED = 20          # failing records listed per run (the count is always exact)
REQUEST_TIMEOUT = 600


@dataclass
class LocalTransformSpec:
    image: str
    model_data: str
    input: Path
    output: Path
    content_type: str = "text/csv"
    accept: str | None = None
    split_type: str = "Line"               # Line | None
    strategy: str | None = None            # MultiRecord | SingleRecord (default: the container's)
    max_payload_mb: int | None = None
    max_concurrent: int | None = None
    join_source: str | None = None         # Input
    env: dict[str, str] = field(default_factory=dict)
    region: str | None = None
    platform: str | None = None
    port: int = 8080
    ping_timeout: float = 600.0
    stream_logs: bool = False


@dataclass
class Record:
    file: int           # index into the run's file list
    line: int           # 1-based line of the record (1 for split None)
    data: bytes


@dataclass
class FileResult:
    path: Path                       # relative to the input folder
    records: list[Record]
    outputs: list[bytes | None]
    failures: list[tuple[int, str]] = field(default_factory=list)   # (line, message)


@dataclass
class RunResult:
    files: int = 0
    records: int = 0
    failed: int = 0
    requests: int = 0
    seconds: float = 0.0
    parameters: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    failures: list[tuple[str, int, str]] = field(default_factory=list)   # (file, line, message)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


class _Stop(Exception):
    """Raised from local.run's on_ready to end the container once the transform is done."""


# --- records and mini-batches --------------------------------------------------------------------

def input_files(root: Path) -> list[Path]:
    """Files under ROOT (or ROOT itself), sorted, hidden ones and our own .out files left out."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DeployError(f"--input {root} is neither a file nor a folder")
    files = [p for p in sorted(root.rglob("*")) if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    if not files:
        raise DeployError(f"--input {root} holds no files")
    return files


def split_records(data: bytes, split_type: str, file_index: int) -> list[Record]:
    if split_type == "None":
        return [Record(file_index, 1, data)] if data.strip() else []
    records = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if line.strip():
            records.append(Record(file_index, number, line))
    return records


def mini_batches(records: list[Record], strategy: str, max_payload_bytes: int
                 ) -> Iterator[tuple[list[Record], str | None]]:
    """(records, None) per request; (one record, reason) for a record too large to send at all."""
    if strategy == "SingleRecord":
        for r in records:
            if len(r.data) > max_payload_bytes:
                yield [r], f"record is {len(r.data)} bytes, more than MaxPayloadInMB"
            else:
                yield [r], None
        return
    batch: list[Record] = []
    size = 0
    for r in records:
        need = len(r.data) + 1                  # and its newline
        if need > max_payload_bytes:
            if batch:
                yield batch, None
                batch, size = [], 0
            yield [r], f"record is {len(r.data)} bytes, more than MaxPayloadInMB ({max_payload_bytes // MB} MB)"
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


# --- progress ------------------------------------------------------------------------------------

class Progress:
    """A bar on a terminal (rewritten at most 10 times a second); a line every 10 s otherwise.

    The fraction is of the input's bytes (files are read one at a time, so the number of records
    is known only at the end); the count and the rate are records."""

    def __init__(self, total_bytes: int, stream=None, quiet: bool = False):
        self.total = max(total_bytes, 1)
        self.bytes = 0
        self.records = 0
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.monotonic()
        self._shown = 0.0

    def add(self, records: int, nbytes: int) -> None:
        if not records and not nbytes:
            return
        self.records += records
        self.bytes += nbytes
        now = time.monotonic()
        due = 0.1 if self.tty else 10.0
        if self.quiet or (now - self._shown < due and self.bytes < self.total):
            return
        self._shown = now
        elapsed = now - self.start
        rate = self.records / elapsed if elapsed > 0 else 0.0
        frac = min(self.bytes / self.total, 1.0)
        text = f"{self.records:,} records  {rate:,.0f} records/s  {elapsed:.1f} s"
        try:
            if self.tty:
                width = 30
                bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
                self.stream.write(f"\r[{bar}] {frac * 100:3.0f}%  {text}   ")
                self.stream.flush()
            else:
                print(f"progress: {frac * 100:3.0f}%  {text}", file=self.stream, flush=True)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self.tty and not self.quiet and self._shown:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass


# --- the agent -----------------------------------------------------------------------------------

def container_env(spec: LocalTransformSpec) -> dict[str, str]:
    env = {"SAGEMAKER_BATCH": "true"}
    if spec.max_payload_mb is not None:
        env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(spec.max_payload_mb)
    if spec.strategy is not None:
        env["SAGEMAKER_BATCH_STRATEGY"] = _STRATEGY_ENV[spec.strategy]
    if spec.max_concurrent is not None:
        env["SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"] = str(spec.max_concurrent)
    return {**env, **spec.env}


def effective_parameters(spec: LocalTransformSpec, answered: dict | None) -> tuple[dict, dict]:
    """(values, where each came from: 'flag', '/execution-parameters' or 'default')."""
    given = {"BatchStrategy": spec.strategy, "MaxPayloadInMB": spec.max_payload_mb,
             "MaxConcurrentTransforms": spec.max_concurrent}
    values, sources = {}, {}
    for key, value in given.items():
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
    if spec.split_type == "None":
        values["BatchStrategy"] = "SingleRecord"   # a whole file is one record
    return values, sources


class _Client:
    """requests sessions, one per pool thread, pooled to the concurrency."""

    def __init__(self, url: str, content_type: str, accept: str | None, pool: int):
        self.url = url
        self.headers = {"Content-Type": content_type}
        if accept:
            self.headers["Accept"] = accept
        self.pool = pool
        self._local = threading.local()
        self.sent = 0
        self._lock = threading.Lock()

    def session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.mount("http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=self.pool))
            self._local.session = s
        return s

    def post(self, body: bytes) -> tuple[int, bytes, str]:
        with self._lock:
            self.sent += 1
        try:
            resp = self.session().post(f"{self.url}/invocations", data=body, headers=self.headers,
                                       timeout=REQUEST_TIMEOUT)
        except requests.RequestException as exc:
            return 0, f"request failed: {exc}".encode(), "text/plain"
        return resp.status_code, resp.content, resp.headers.get("Content-Type", "")


def _error_text(status: int, body: bytes) -> str:
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        message = None
    text = message or body.decode("utf-8", errors="replace").strip()[:500]
    return f"HTTP {status}: {text}" if status else text


def _score(client: _Client, records: list[Record], split_type: str, accept_type: str
           ) -> list[tuple[Record, bytes | None, str | None]]:
    """Send RECORDS as one request; on refusal, bisect to find the records that fail alone."""
    status, body, content_type = client.post(body_of(records, split_type))
    if status == 200 and split_type == "None":       # a whole file in, its whole answer out
        return [(records[0], body.rstrip(b"\n"), None)]
    if status == 200:
        try:
            lines = split_answer(body, content_type or accept_type, len(records))
            return [(r, line, None) for r, line in zip(records, lines)]
        except ValueError as exc:
            problem = str(exc)
    else:
        problem = _error_text(status, body)
    # bisect only what a bad record causes (400, 422, 500); not an unreachable or overloaded
    # server, a size or media type refusal, or an answer of the wrong shape
    if len(records) == 1 or status not in (400, 422, 500):
        return [(r, None, problem) for r in records]
    half = len(records) // 2
    return (_score(client, records[:half], split_type, accept_type)
            + _score(client, records[half:], split_type, accept_type))


def _write_out(spec: LocalTransformSpec, f: FileResult, run: RunResult) -> None:
    """FILE.out for a file whose records all came back (or its failures into RUN)."""
    for line, problem in sorted(f.failures):
        run.failures.append((str(f.path), line, problem))
    run.failed += len(f.failures)
    if f.failures:
        return
    lines = []
    for record, out in zip(f.records, f.outputs):
        if spec.join_source == "Input":
            try:
                out = join(record.data, out, spec.content_type)
            except ValueError as exc:
                run.failures.append((str(f.path), record.line, str(exc)))
                run.failed += 1
                return
        lines.append(out)
    target = spec.output / f"{f.path}.out"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(b"\n".join(lines) + b"\n" if lines else b"")
    os.replace(tmp, target)
    run.written.append(str(target))


def transform_files(url: str, spec: LocalTransformSpec, parameters: dict, quiet: bool = False,
                    info: Callable[[str], None] = print, stream=None) -> RunResult:
    """The agent's loop against a server at URL (the container, or any server: see bench/).

    Files are read one at a time; mini-batches of the next file are sent while the last ones of
    the previous file are in flight (at most 2 x MaxConcurrentTransforms queued); a file's .out is
    written as soon as all its records are back, and its records are then let go."""
    files = input_files(spec.input)
    root = spec.input if spec.input.is_dir() else spec.input.parent
    concurrency = int(parameters["MaxConcurrentTransforms"])
    payload = int(parameters["MaxPayloadInMB"]) * MB
    accept_type = spec.accept or spec.content_type
    client = _Client(url, spec.content_type, accept_type, concurrency)
    progress = Progress(sum(p.stat().st_size for p in files), stream=stream, quiet=quiet)
    run = RunResult(files=len(files), parameters=parameters)
    spec.output.mkdir(parents=True, exist_ok=True)
    open_files: dict[int, FileResult] = {}
    pending: dict[int, int] = {}            # file index -> mini-batches not back yet
    positions: dict[int, dict[int, int]] = {}  # file index -> line -> position

    def settle(index: int, outcome) -> None:
        f = open_files[index]
        for record, line, problem in outcome:
            if problem is None:
                f.outputs[positions[index][record.line]] = line
            else:
                f.failures.append((record.line, problem))
        progress.add(len(outcome), sum(len(r.data) + 1 for r, _, _ in outcome))
        pending[index] -= 1
        if pending[index] == 0 and index in done_reading:
            _write_out(spec, open_files.pop(index), run)
            del positions[index], pending[index]

    done_reading: set[int] = set()
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="transform") as pool:
        in_flight: dict[Future, int] = {}

        def drain(limit: int) -> None:
            nonlocal in_flight
            while len(in_flight) > limit:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for fut in done:
                    settle(in_flight.pop(fut), fut.result())

        try:
            for i, path in enumerate(files):
                records = split_records(path.read_bytes(), spec.split_type, i)
                run.records += len(records)
                f = open_files[i] = FileResult(path.relative_to(root), records, [None] * len(records))
                positions[i] = {r.line: pos for pos, r in enumerate(records)}
                pending[i] = 1                   # held until the file is fully submitted
                for batch, refused in mini_batches(records, parameters["BatchStrategy"], payload):
                    pending[i] += 1
                    if refused:
                        settle(i, [(batch[0], None, refused)])
                        continue
                    drain(2 * concurrency - 1)   # bounded read-ahead
                    in_flight[pool.submit(_score, client, batch, spec.split_type, accept_type)] = i
                done_reading.add(i)
                settle(i, [])                    # release the hold: writes f now if all are back
                del f
            drain(0)
        except BaseException:
            for fut in in_flight:
                fut.cancel()
            raise
        finally:
            progress.close()
    run.seconds = time.monotonic() - start
    run.requests = client.sent
    if run.records == 0:
        raise DeployError(f"--input {spec.input} holds no records")
    run.failures.sort(key=lambda x: (files.index(root / x[0]) if (root / x[0]) in files else 0, x[1]))
    run.written.sort(key=lambda w: w)
    return run


def run(spec: LocalTransformSpec, info: Callable[[str], None], quiet: bool = False) -> RunResult:
    """Start the image (container.py), ask /execution-parameters, transform, stop the image."""
    if spec.split_type not in ("Line", "None"):
        raise DeployError("--local supports --split-type Line or None")
    input_files(spec.input)                      # refuse a bad --input before Docker starts
    if spec.output.resolve() == (spec.input if spec.input.is_dir() else spec.input.parent).resolve():
        raise DeployError("--output must not be the --input folder")
    lspec = local.LocalSpec(image=spec.image, model_data=spec.model_data, port=spec.port,
                            env=container_env(spec), region=spec.region, platform=spec.platform,
                            ping_timeout=spec.ping_timeout, stream_logs=spec.stream_logs)
    outcome: dict = {}

    def on_ready(url: str) -> None:
        answered = None
        try:
            resp = requests.get(f"{url}/execution-parameters", timeout=30)
            if resp.status_code == 200:
                answered = resp.json()
                info(f"GET /execution-parameters: {json.dumps(answered, sort_keys=True)}")
            else:
                info(f"GET /execution-parameters answered HTTP {resp.status_code}: using defaults")
        except (requests.RequestException, ValueError) as exc:
            info(f"GET /execution-parameters failed ({exc}): using defaults")
        values, sources = effective_parameters(spec, answered)
        info("batch: " + ", ".join(f"{k} {values[k]} ({sources[k]})" for k in
                                   ("BatchStrategy", "MaxPayloadInMB", "MaxConcurrentTransforms"))
             + f", SplitType {spec.split_type}")
        try:
            result = transform_files(url, spec, values, quiet=quiet, info=info)
        except BaseException:
            outcome["stopped"] = True
            raise
        result.sources = sources
        outcome["result"] = result
        raise _Stop

    try:
        local.run(lspec, info, None, on_ready=on_ready)
    except _Stop:
        pass
    if outcome.get("stopped") and "result" not in outcome:
        raise KeyboardInterrupt      # local.run stopped the container; main() reports it
    if "result" not in outcome:
        raise DeployError("the transform did not run")
    return outcome["result"]
