"""SageMaker's asynchronous inference runtime, on this machine: the container here, a folder for S3.

An async endpoint takes InvokeEndpointAsync(InputLocation=s3://...), answers at once with where the
output or the failure will be, queues the request, and sends it to the container with at most
MaxConcurrentInvocationsPerInstance requests per instance at once; the container's answer is
written to S3OutputPath/<id>.out on success, to S3FailurePath/<id>-error.out otherwise (its body:
what the container answered), and an SNS notification says which, with the failure's reason.

LocalAsyncRuntime does the same against a URL (the container `deploy transform --local` started)
with folders for the two paths, and calls `notify(inference_id, status)` once the object is
written, as the notification would. AsyncFolderSender is the engine's side (agent.Sender): stage
the body as a file, invoke, wait for the notification, read the output or failure file back.
"""

from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests
import requests.adapters

from .agent import Reply

REQUEST_TIMEOUT = 600


@dataclass
class Invocation:
    inference_id: str
    input_location: Path
    output_location: Path
    failure_location: Path


class LocalAsyncRuntime:
    """Queue + MaxConcurrentInvocationsPerInstance workers posting to URL/invocations."""

    def __init__(self, url: str, folder: Path, content_type: str, accept: str | None, concurrency: int,
                 notify: Callable[[str, int, str], None]):
        self.url = url
        self.outputs = folder / "outputs"
        self.failures = folder / "failures"
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.failures.mkdir(parents=True, exist_ok=True)
        self.headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
        self.notify = notify
        self.queue: queue.Queue[Invocation | None] = queue.Queue()
        self.local = threading.local()
        self.workers = [threading.Thread(target=self._work, name=f"async-runtime-{i}", daemon=True)
                        for i in range(concurrency)]
        for worker in self.workers:
            worker.start()

    def invoke(self, input_location: Path, inference_id: str) -> Invocation:
        """InvokeEndpointAsync: queued; the answer says where the output or failure will be."""
        job = Invocation(inference_id, input_location, self.outputs / f"{inference_id}.out",
                         self.failures / f"{inference_id}-error.out")
        self.queue.put(job)
        return job

    def close(self) -> None:
        for _ in self.workers:
            self.queue.put(None)
        for worker in self.workers:
            worker.join(timeout=REQUEST_TIMEOUT)

    def _session(self) -> requests.Session:
        s = getattr(self.local, "session", None)
        if s is None:
            s = self.local.session = requests.Session()
            s.mount("http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=1))
        return s

    def _work(self) -> None:
        while (job := self.queue.get()) is not None:
            status, content_type = 0, ""
            try:
                body = job.input_location.read_bytes()
                resp = self._session().post(f"{self.url}/invocations", data=body, headers=self.headers,
                                            timeout=REQUEST_TIMEOUT)
                status, answer = resp.status_code, resp.content
                content_type = resp.headers.get("Content-Type", "")
            except (OSError, requests.RequestException) as exc:
                answer = f"request failed: {exc}".encode()
            try:
                target = job.output_location if status == 200 else job.failure_location
                tmp = target.with_name(target.name + ".tmp")
                tmp.write_bytes(answer)
                tmp.replace(target)
            except OSError:                   # nowhere to put it: a failure with no object
                status = 0
            finally:                          # the notification always comes: nobody waits forever
                self.notify(job.inference_id, status, content_type)

    def cancel(self) -> list[Invocation]:
        """Take back what is still queued (a stop): those requests are never sent."""
        dropped = []
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return dropped
            if job is not None:
                dropped.append(job)


class AsyncFolderSender:
    """agent.Sender over a LocalAsyncRuntime: requests staged under FOLDER/requests."""

    def __init__(self, url: str, folder: Path, content_type: str, accept: str | None, concurrency: int):
        self.requests = folder / "requests"
        self.requests.mkdir(parents=True, exist_ok=True)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list]] = {}
        self.runtime = LocalAsyncRuntime(url, folder, content_type, accept, concurrency, self._notified)

    def _notified(self, inference_id: str, status: int, content_type: str) -> None:
        with self._lock:
            waiter = self._waiting.get(inference_id)
        if waiter is not None:
            waiter[1].append((status, content_type))
            waiter[0].set()

    def send(self, body: bytes) -> Reply:
        with self._lock:
            inference_id = f"{next(self._ids):08d}"
            event, box = self._waiting[inference_id] = (threading.Event(), [])
        staged = self.requests / inference_id
        staged.write_bytes(body)
        job = self.runtime.invoke(staged, inference_id)
        event.wait()
        with self._lock:
            del self._waiting[inference_id]
        status, content_type = box[0]
        location = job.output_location if status == 200 else job.failure_location
        try:
            answer = location.read_bytes()
        except OSError as exc:                    # cancelled, or never written
            answer = f"no {'output' if status == 200 else 'failure'} object: {exc}".encode()
            status = 0
        for path in (staged, location):           # collected: the staged objects go
            path.unlink(missing_ok=True)
        return Reply(status, answer, content_type)

    def instances(self) -> int | None:
        return 1

    def cancel(self) -> None:
        """A stop: queued requests are dropped and their senders answered at once (no answer)."""
        for job in self.runtime.cancel():
            self._notified(job.inference_id, 0, "")

    def close(self) -> None:
        self.runtime.close()
