"""The HTTP worker's side of the model channel: a pool of links (a connection and a shared-memory
segment each) to the model processes, chosen round-robin as links are made. A request takes a link
for its round trip and gives it back: the worker holds as many as it ever had requests in flight
at once, and no request's answer waits on another's.

A model process that goes away is noticed at once, from a pidfd of the process (never from the
socket, which a child it forked may hold open): a pending request gets a 503 (never a hang), and
an idle link to it is dropped before it is used, so the first request after the master has
restarted it reaches the new one. Connecting has a deadline (CONNECT_TIMEOUT). A
request that outlives SAGEMAKER_MODEL_SERVER_TIMEOUT gets its 504 here, whatever the model
process is doing, and its connection is dropped (the late answer has nowhere to go).
"""
from __future__ import annotations

import itertools
import logging
import os
import select
import socket
import threading
import time
from pathlib import Path

import numpy as np

from serve.contract import channel
from serve.contract.errors import ModelNotReady, RequestTimeout, ServeError
from serve.contract.handlers import Invocation, Result
from serve.contract.signature import Model, Repository, Signature
from serve.contract.readiness import hung_path, ready_path, socket_path

log = logging.getLogger(__name__)


CONNECT_TIMEOUT = 2.0   # seconds; a model process that does not accept by then is not answering


class _Link:
    """One connection to one model process, with its request segment, and a pidfd of that process:
    whether it is alive is asked of the process itself (serve.supervision)."""

    def __init__(self, conn: socket.socket, index: int, pid: int | None = None):
        self.conn = conn
        self.index = index
        self.out: channel.Segment | None = None      # ours: request arrays
        self.answers: dict[str, channel.Segment] = {}  # theirs: answers
        self.pidfd: int | None = None
        if pid is not None:
            try:
                self.pidfd = os.pidfd_open(pid)
            except (AttributeError, OSError):   # no pidfd here (old kernel), or already gone
                self.pidfd = None

    def process_gone(self) -> bool:
        """The process this link reached has exited (the master has replaced it, or will)."""
        return self.pidfd is not None and bool(select.select([self.pidfd], [], [], 0)[0])

    def wait_readable(self, deadline: float) -> None:
        """Until the answer starts to arrive: TimeoutError at DEADLINE, EOFError if the process exits first."""
        waiting = [self.conn] + ([self.pidfd] if self.pidfd is not None else [])
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            readable = select.select(waiting, [], [], left)[0]
            if self.conn in readable:
                return
            if readable:  # the pidfd: the process exited, whoever still holds its socket
                raise EOFError("the model process exited")

    def request_segment(self, need: int) -> channel.Segment:
        self.out = channel.fitting(self.out, need, "serve-in")
        return self.out

    def answer_segment(self, path: str) -> channel.Segment:
        segment = self.answers.get(path)
        if segment is None:
            for old in self.answers.values():
                old.close()
            self.answers = {path: channel.Segment(Path(path), 0, create=False)}
            segment = self.answers[path]
        return segment

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass
        if self.out is not None:
            self.out.unlink()
            self.out.close()
        for segment in self.answers.values():
            segment.close()
        if self.pidfd is not None:
            try:
                os.close(self.pidfd)
            except OSError:
                pass
            self.pidfd = None


class ModelClient:
    def __init__(self, run_dir: Path, count: int):
        self.run_dir = Path(run_dir)
        self.count = count
        self._idle: list[_Link] = []     # links no request holds now
        self._next = itertools.count()
        self._links: set[_Link] = set()
        self._lock = threading.Lock()

    # -- state ---------------------------------------------------------------------------------

    def all_ready(self) -> bool:
        """Every model process is loaded and warm (the master removes the mark of one that died)."""
        return all(ready_path(self.run_dir, i).exists() and not hung_path(self.run_dir, i).exists()
                   for i in range(self.count))

    def describe(self) -> dict:
        return self.call("describe", {}, timeout=60)

    # -- calls ---------------------------------------------------------------------------------

    def infer(self, model: Model, signature: str, inputs: dict[str, np.ndarray] | None,
              examples: tuple | None, timeout: float) -> dict[str, np.ndarray]:
        request = {"model": model.name, "version": model.version, "signature": signature, "origin": os.getpid()}
        if examples is not None:
            request["examples"] = examples
        link = self._link()
        reply = self._exchange(link, "infer", request, inputs or {}, timeout)
        # copied out, so that the link can serve the next request while this answer is encoded
        out = {name: array.copy() for name, array in
               channel.views(link.answer_segment(reply["segment"]), reply["arrays"]).items()}
        self._give_back(link)
        return out

    def script(self, invocation: Invocation, timeout: float) -> Result:
        """A toolkit-style script's request, handed over whole to the model process where it runs."""
        return self.whole("script", {}, invocation, timeout)

    def whole(self, op: str, request: dict, invocation: Invocation, timeout: float) -> Result:
        """A request handed over whole: its body in, the answer's body and Content-Type out."""
        request = {**request, "content_type": invocation.content_type, "accept": invocation.accept,
                   "custom_attributes": invocation.custom_attributes}
        body = {"body": np.frombuffer(invocation.body, np.uint8)}
        link = self._link()
        reply = self._exchange(link, op, request, body, timeout)
        out = channel.views(link.answer_segment(reply["segment"]), reply["arrays"])["body"].tobytes()
        self._give_back(link)
        return Result(out, reply["content_type"])

    def call(self, op: str, request: dict, timeout: float):
        """An operation without arrays (describe; multi-model load, unload, list, get)."""
        link = self._link()
        reply = self._exchange(link, op, request, {}, timeout)
        self._give_back(link)
        return reply

    def _exchange(self, link: _Link, op: str, request: dict, arrays: dict, timeout: float):
        """One round trip on LINK; a link that failed is dropped (the caller gets the error), one that
        answered stays the caller's until it gives it back."""
        try:
            if arrays:
                segment = link.request_segment(channel.room(arrays))
                request["segment"] = str(segment.path)
                request["arrays"] = channel.place(segment, arrays)
            deadline = time.monotonic() + timeout
            link.conn.settimeout(timeout)
            channel.send(link.conn, (op, request))
            link.wait_readable(deadline)
            link.conn.settimeout(max(0.001, deadline - time.monotonic()))
            reply = channel.receive(link.conn)
        except (socket.timeout, TimeoutError):
            self._drop(link)
            raise RequestTimeout(f"inference did not finish within {timeout:.0f} s "
                                 f"(SAGEMAKER_MODEL_SERVER_TIMEOUT)") from None
        except (EOFError, OSError) as exc:
            self._drop(link)
            raise ModelNotReady(f"the model process went away ({type(exc).__name__}); it is being restarted, "
                                f"retry when GET /ping answers 200") from None
        except BaseException:
            self._drop(link)
            raise
        if reply[0] == "error":
            self._give_back(link)
            raise ServeError(reply[2], status=reply[1], plain=reply[3])
        return reply[1]

    def _give_back(self, link: _Link) -> None:
        self._idle.append(link)

    def _link(self) -> _Link:
        while self._idle:
            link = self._idle.pop()
            if not link.process_gone():
                return link
            self._drop(link)  # idle while its process died: never used again
        index = next(self._next) % self.count
        try:
            pid_text = ready_path(self.run_dir, index).read_text()
        except FileNotFoundError:
            raise ModelNotReady("the model process is loading; retry when GET /ping answers 200") from None
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(CONNECT_TIMEOUT)
            conn.connect(str(socket_path(self.run_dir, index)))
        except OSError as exc:
            conn.close()
            raise ModelNotReady(f"cannot reach the model process ({exc.strerror or exc}); retry when GET /ping "
                                f"answers 200") from None
        link = _Link(conn, index, int(pid_text) if pid_text.strip().isdigit() else None)
        with self._lock:
            self._links.add(link)
        return link

    def _drop(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)
        link.close()

    def close(self) -> None:
        with self._lock:
            links, self._links = list(self._links), set()
            self._idle = []
        for link in links:
            link.close()


def catalog(description: dict) -> Repository[Model] | None:
    """The model process's servables as Models without TensorFlow (their signatures validate and
    describe; the call goes through the channel)."""
    if description["default"] is None:
        return None
    entries: dict[str, dict] = {}
    for m in description["models"]:
        location = m["location"]
        signatures = {name: Signature(name, inputs, outputs, call=None, method=method)
                      for name, (inputs, outputs, method) in m["signatures"].items()}
        entries.setdefault(location.name, {})[location.version] = Model(location, signatures, None, m["loader"])
    return Repository(entries, description["default"])
