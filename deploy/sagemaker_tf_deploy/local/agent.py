"""The transform loop every engine runs; engines differ only in how a request reaches the container.

    run(source, sink, sender, options, parameters, in_flight=N)

  * SOURCE lists the input files (a folder here, an S3 prefix on AWS) and reads one at a time;
  * each file is split into records and packed into requests (records.py);
  * up to IN_FLIGHT requests are out at once (a thread pool; each thread blocks in SENDER.send):
      batch here    an HTTP POST to the container's /invocations (local/transform.py);
      async here    the body staged in a folder, queued to the local async runtime, its output or
                    failure file read back (local/async_runtime.py);
      async on AWS  the body staged in S3, InvokeEndpointAsync, its output or failure object read
                    back (operations/transform_async.py);
  * an answer that failed transiently (no answer, 429, 502, 503, 504, or what the sender marks
    transient: a throttled invoke, an expired request) is sent again, up to RETRIES times with
    backoff; a request the container refuses with 400, 422 or 500 is split in halves until the
    records that fail alone are found; each is reported as file:line;
  * SINK gets `<file>.out` as soon as all of a file's records are back: one output line per
    record, in input order, joined with the input on --join-source Input; a file with a failed
    record gets none (SageMaker writes no output for a failed object);
  * Progress shows records done, failed, requests in flight, instances and elapsed time.
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
from typing import Callable, Protocol

from . import records as rec
from ..core import interrupts
from ..core.errors import DeployError

MAX_REPORTED = 20                      # failing records listed per run (the count is always exact)
TRANSIENT_STATUSES = (0, 429, 502, 503, 504)
BISECTED_STATUSES = (400, 422, 500)    # what a bad record causes (not a size or media type refusal)
RETRIES = 3
RETRY_DELAY = 0.5                      # seconds before the first retry; doubled for each next one


@dataclass
class Reply:
    """The container's answer to one request, however it travelled."""
    status: int                 # its HTTP status; 0 when none came (the network, a timeout)
    body: bytes
    content_type: str = ""
    transient: bool = False     # worth sending again as it is, whatever the status
    origin: str | None = None   # what a failure is reported as, when not "HTTP <status>"


class Sender(Protocol):
    def send(self, body: bytes) -> Reply:
        """One request, blocking until its answer; called from up to in_flight threads at once."""

    def instances(self) -> int | None:
        """Instances serving now (for the progress line), None when not known."""

    def cancel(self) -> None:
        """A stop: give up on what is queued, so that the threads blocked in send return soon."""


@dataclass
class InputFile:
    name: str          # relative to the input prefix or folder, '/'-separated
    size: int


class Source(Protocol):
    def files(self) -> list[InputFile]: ...
    def read(self, name: str) -> bytes: ...


class Sink(Protocol):
    def write(self, name: str, data: bytes) -> str:
        """Store NAME (a '<file>.out' relative to the output) and return where it went."""


class FolderSource:
    """Files under ROOT (or ROOT itself), sorted, hidden ones left out."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.base = self.root if self.root.is_dir() else self.root.parent

    def files(self) -> list[InputFile]:
        if self.root.is_file():
            return [InputFile(self.root.name, self.root.stat().st_size)]
        if not self.root.is_dir():
            raise DeployError(f"--input {self.root} is neither a file nor a folder")
        found = [InputFile(p.relative_to(self.root).as_posix(), p.stat().st_size)
                 for p in sorted(self.root.rglob("*"))
                 if p.is_file() and not any(part.startswith(".") for part in p.relative_to(self.root).parts)]
        if not found:
            raise DeployError(f"--input {self.root} holds no files")
        return found

    def read(self, name: str) -> bytes:
        return (self.base / name).read_bytes()


class FolderSink:
    """`<file>.out` under ROOT, sub-folders kept; written whole (a temporary name, then renamed)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def write(self, name: str, data: bytes) -> str:
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return str(target)


@dataclass
class Options:
    content_type: str = "text/csv"
    accept: str | None = None           # default: the content type (one line per record)
    split_type: str = "Line"
    join_source: str | None = None      # Input

    @property
    def accept_type(self) -> str:
        return self.accept or self.content_type


@dataclass(kw_only=True)
class RecordSettings:
    """What every transform spec takes about its records, whichever engine and wherever it runs
    (batch job, async endpoint, --local): SageMaker's TransformInput fields, its batch parameters
    and the container's environment. Keyword-only, so that each spec adds its own fields freely."""
    content_type: str = "text/csv"
    accept: str | None = None
    split_type: str = "Line"               # Line | RecordIO | None
    strategy: str | None = None            # MultiRecord | SingleRecord (default: the container's)
    max_payload_mb: int | None = None
    max_concurrent: int | None = None
    join_source: str | None = None         # Input
    env: dict[str, str] = field(default_factory=dict)

    @property
    def given(self) -> dict:
        """The batch parameters given on the command line, by SageMaker's names (None: not given)."""
        return {"BatchStrategy": self.strategy, "MaxPayloadInMB": self.max_payload_mb,
                "MaxConcurrentTransforms": self.max_concurrent}

    @property
    def options(self) -> Options:
        return Options(content_type=self.content_type, accept=self.accept, split_type=self.split_type,
                       join_source=self.join_source)


@dataclass
class RunResult:
    files: int = 0
    records: int = 0
    failed: int = 0
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    instance_seconds: float = 0.0       # instances x seconds serving (what a bill counts)
    parameters: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    failures: list[tuple[str, int, str]] = field(default_factory=list)   # (file, line, message)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """A bar on a terminal (rewritten at most 10 times a second); a line every 10 s otherwise.

    The fraction is of the input's bytes (files are read one at a time, so the number of records
    is known only at the end); the counts are records; in flight are requests."""

    def __init__(self, total_bytes: int, stream=None, quiet: bool = False,
                 in_flight: Callable[[], int] = lambda: 0, instances: Callable[[], int | None] = lambda: None):
        self.total = max(total_bytes, 1)
        self.bytes = 0
        self.records = 0
        self.failed = 0
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.monotonic()
        self._shown = 0.0
        self._in_flight = in_flight
        self._instances = instances

    def add(self, records: int, nbytes: int, failed: int = 0) -> None:
        if not records and not nbytes:
            return
        self.records += records
        self.bytes += nbytes
        self.failed += failed
        self.show()

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        due = 0.1 if self.tty else 10.0
        if self.quiet or (not force and now - self._shown < due and self.bytes < self.total):
            return
        self._shown = now
        elapsed = now - self.start
        rate = self.records / elapsed if elapsed > 0 else 0.0
        frac = min(self.bytes / self.total, 1.0)
        instances = self._instances()
        text = (f"{self.records:,} records  {self.failed:,} failed  {self._in_flight():,} in flight  "
                + (f"{instances} instance{'' if instances == 1 else 's'}  " if instances is not None else "")
                + f"{rate:,.0f} records/s  {elapsed:.1f} s")
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


def error_text(status: int, body: bytes, origin: str | None = None) -> str:
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        message = None
    text = message or body.decode("utf-8", errors="replace").strip()[:500]
    if origin:
        return f"{origin}: {text}"
    return f"HTTP {status}: {text}" if status else text


@dataclass
class _FileState:
    name: str
    records: list[rec.Record]
    outputs: list[bytes | None]
    positions: dict[int, int]
    failures: list[tuple[int, str]] = field(default_factory=list)   # (line, message)
    pending: int = 1                    # mini-batches not back yet (+1 while still being submitted)


class _Agent:
    def __init__(self, sender: Sender, options: Options, retries: int, retry_delay: float):
        self.sender = sender
        self.options = options
        self.retries = retries
        self.retry_delay = retry_delay
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.retried = 0
        self.sending = 0

    def send(self, body: bytes) -> Reply:
        """One request, sent again while its failure is transient (up to self.retries times)."""
        attempt = 0
        while True:
            with self.lock:
                self.sent += 1
                self.sending += 1
            try:
                reply = self.sender.send(body)
            finally:
                with self.lock:
                    self.sending -= 1
            if not (reply.transient or reply.status in TRANSIENT_STATUSES) or attempt >= self.retries \
                    or self.stopping.is_set():
                return reply
            with self.lock:
                self.retried += 1
            if self.stopping.wait(self.retry_delay * 2 ** attempt):
                return reply
            attempt += 1

    def score(self, batch: list[rec.Record]) -> list[tuple[rec.Record, bytes | None, str | None]]:
        """Send BATCH as one request; on refusal, bisect to find the records that fail alone."""
        split_type = self.options.split_type
        reply = self.send(rec.body_of(batch, split_type))
        if reply.status == 200 and split_type == "None":       # a whole file in, its whole answer out
            return [(batch[0], reply.body.rstrip(b"\n"), None)]
        if reply.status == 200:
            try:
                lines = rec.split_answer(reply.body, reply.content_type or self.options.accept_type, len(batch))
                return [(r, line, None) for r, line in zip(batch, lines)]
            except ValueError as exc:
                problem = str(exc)
        else:
            problem = error_text(reply.status, reply.body, reply.origin)
        if len(batch) == 1 or reply.status not in BISECTED_STATUSES or self.stopping.is_set():
            return [(r, None, problem) for r in batch]
        half = len(batch) // 2
        return self.score(batch[:half]) + self.score(batch[half:])


def _assemble(f: _FileState, options: Options, sink: Sink, run: RunResult) -> None:
    """`<file>.out` for a file whose records all came back (or its failures into RUN)."""
    for line, problem in sorted(f.failures):
        run.failures.append((f.name, line, problem))
    run.failed += len(f.failures)
    if f.failures:
        return
    lines = []
    for record, out in zip(f.records, f.outputs):
        if options.join_source == "Input":
            try:
                out = rec.join(record.data, out, options.content_type)
            except ValueError as exc:
                run.failures.append((f.name, record.line, str(exc)))
                run.failed += 1
                return
        lines.append(out)
    run.written.append(sink.write(f"{f.name}.out", b"\n".join(lines) + b"\n" if lines else b""))


def run(source: Source, sink: Sink, sender: Sender, options: Options, parameters: dict, *,
        in_flight: int | None = None, retries: int = RETRIES, retry_delay: float = RETRY_DELAY,
        quiet: bool = False, stream=None, timeout: float | None = None) -> RunResult:
    """Transform every file of SOURCE into SINK through SENDER (see the module's docstring).

    Files are read one at a time; the next file's requests go out while the last ones of the
    previous file are in flight (at most 2 x IN_FLIGHT queued); a file's .out is written as soon
    as all its records are back, and its records are then let go."""
    files = source.files()
    order = {f.name: i for i, f in enumerate(files)}
    concurrency = int(in_flight or parameters["MaxConcurrentTransforms"])
    payload = int(parameters["MaxPayloadInMB"]) * rec.MB
    agent = _Agent(sender, options, retries, retry_delay)
    progress = Progress(sum(f.size for f in files), stream=stream, quiet=quiet,
                        in_flight=lambda: agent.sending, instances=sender.instances)
    result = RunResult(files=len(files), parameters=parameters)
    states: dict[int, _FileState] = {}
    done_reading: set[int] = set()

    def settle(index: int, outcome) -> None:
        f = states[index]
        failed = 0
        for record, line, problem in outcome:
            if problem is None:
                f.outputs[f.positions[record.line]] = line
            else:
                f.failures.append((record.line, problem))
                failed += 1
        progress.add(len(outcome), sum(len(r.data) + 1 for r, _, _ in outcome), failed)
        f.pending -= 1
        if f.pending == 0 and index in done_reading:
            _assemble(states.pop(index), options, sink, result)

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="transform") as pool:
        futures: dict[Future, int] = {}

        def drain(limit: int) -> None:
            while len(futures) > limit:
                left = None if timeout is None else timeout - (time.monotonic() - start)
                if left is not None and left <= 0:
                    raise interrupts.WaitTimedOut(f"the transform was not done after {timeout:.0f} s (--timeout)")
                done, _ = wait(futures, timeout=left, return_when=FIRST_COMPLETED)
                for fut in done:
                    settle(futures.pop(fut), fut.result())

        try:
            for i, infile in enumerate(files):
                try:
                    records = rec.split_records(source.read(infile.name), options.split_type, i)
                except ValueError as exc:        # not the split type it was said to be
                    raise DeployError(f"{infile.name}: {exc}") from None
                result.records += len(records)
                states[i] = _FileState(infile.name, records, [None] * len(records),
                                       {r.line: pos for pos, r in enumerate(records)})
                for batch, refused in rec.mini_batches(records, parameters["BatchStrategy"], payload,
                                                       options.split_type):
                    states[i].pending += 1
                    if refused:
                        settle(i, [(batch[0], None, refused)])
                        continue
                    drain(2 * concurrency - 1)   # bounded read-ahead
                    futures[pool.submit(agent.score, batch)] = i
                done_reading.add(i)
                settle(i, [])                    # release the hold: writes the .out now if all are back
                del records
            drain(0)
        except BaseException:
            agent.stopping.set()
            sender.cancel()
            for fut in futures:
                fut.cancel()
            raise
        finally:
            progress.close()
    result.seconds = time.monotonic() - start
    result.requests = agent.sent
    result.retries = agent.retried
    if result.records == 0:
        raise DeployError("the input holds no records")
    result.failures.sort(key=lambda x: (order.get(x[0], 0), x[1]))
    result.written.sort()
    return result
