"""Adaptive batching: requests for the same signature and shape become one model call.

The model process has one loop (``serve.model_process.main``) that reads every HTTP worker's
descriptors, queues them here, and runs the queued work batch by batch: no thread per request and
no hand-off between threads on the default path. Whatever arrived while a call ran is in the queue
when it ends, so under load batches form by themselves, and a lone request at low load runs at
once (there is never a wait for requests that may come). ``max_batch_size`` bounds every call.

One ``Batcher`` per model version queues its requests; the ``Scheduler`` tells the loop which
batchers have work. A batch is the oldest waiting request and every other waiting request that can
be stacked with it (same signature, same per-instance shapes and dtypes), up to the maximum.
A request that fails inside a batch is retried alone, so one bad request fails by itself and not
its batch-mates.

A request larger than ``max_batch_size`` (a batch transform mini-batch of thousands of records,
say) is split into parts of at most ``max_batch_size`` instances, each queued when the one before
it is done, and its outputs are joined back in order: no model call is ever larger than the
maximum, and requests that arrive meanwhile get their turn between the parts. ``max_batch_size``
1 means batching is off (SAGEMAKER_TFS_ENABLE_BATCHING=false): requests then run whole, one per call.

Code on other threads (a toolkit script's predict_fn, a multi-model invoke) submits through the
same queue (``submit``: a Future) and the loop runs it with everything else.
"""
from __future__ import annotations

import logging
import socket
import threading
from collections import deque
from concurrent.futures import Future, InvalidStateError, TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable, Hashable

import numpy as np

from serve.contract.errors import RequestTimeout

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
ModelCall = Callable[[str, Arrays], Arrays]
Done = Callable[["Arrays | None", "BaseException | None"], None]   # (outputs, None) or (None, error)


@dataclass(eq=False)
class _Item:
    signature: str
    inputs: Arrays
    size: int
    key: Hashable
    done: Done
    cancelled: Callable[[], bool]
    origin: object = None       # who sent it (an HTTP worker's pid), for the debug log of a batch


def _stack_key(signature: str, inputs: Arrays) -> Hashable:
    return signature, tuple(sorted((n, a.shape[1:], a.dtype.str) for n, a in inputs.items()))


def _never() -> bool:
    return False


class Scheduler:
    """Which batchers have queued work, for the one loop that runs them. Other threads that queue
    work wake the loop through a socket pair the loop watches (``fileno``)."""

    def __init__(self) -> None:
        self._ready: deque[Batcher] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.loop_thread: int | None = None   # the loop's thread; others must wake it

    def fileno(self) -> int:
        return self._wake_r.fileno()

    def woken(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def mark(self, batcher: "Batcher") -> None:
        if not batcher.marked:
            batcher.marked = True
            self._ready.append(batcher)
        if threading.get_ident() != self.loop_thread:
            self.wake()

    def wake(self) -> None:
        """Make the loop look again (from another thread: it may be waiting on its selector)."""
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):  # a wake-up is already pending
            pass

    def has_work(self) -> bool:
        return bool(self._ready)

    def run_one(self) -> None:
        """One batch of the batcher whose turn it is (batchers take turns, one batch each)."""
        batcher = self._ready.popleft()
        batcher.marked = False
        batcher.run_once()
        if batcher.pending():
            self.mark(batcher)

    def run_in_thread(self) -> threading.Thread:
        """A loop of its own on a thread, for a process without the model process's loop (tests)."""
        import selectors

        def loop() -> None:
            self.loop_thread = threading.get_ident()
            with selectors.DefaultSelector() as selector:
                selector.register(self._wake_r, selectors.EVENT_READ)
                while True:
                    selector.select(0 if self.has_work() else None)
                    self.woken()
                    while self.has_work():
                        self.run_one()

        thread = threading.Thread(target=loop, name="batcher", daemon=True)
        thread.start()
        return thread


_scheduler: Scheduler | None = None


def scheduler() -> Scheduler:
    """This process's scheduler (the model process has one loop)."""
    global _scheduler
    if _scheduler is None:
        _scheduler = Scheduler()
    return _scheduler


class Batcher:
    def __init__(self, call: ModelCall, max_batch_size: int,
                 batchable: Callable[[str], bool] = lambda signature: True, runner: Scheduler | None = None):
        self._call = call
        self._max = max_batch_size
        self._batchable = batchable
        self._scheduler = runner or scheduler()
        self._queue: deque[_Item] = deque()
        self._closed = False
        self.marked = False         # in the scheduler's ready queue
        self.stats = {"calls": 0, "items": 0, "largest": 0, "fallbacks": 0, "split": 0}

    # -- queueing (the loop, or any thread) ---------------------------------------------------------

    def add(self, signature: str, inputs: Arrays, done: Done, cancelled: Callable[[], bool] = _never,
            origin: object = None) -> None:
        """Queue one request; DONE gets its outputs or its error, on the loop's thread."""
        if self._closed:
            raise RuntimeError("batcher is closed")
        first = next(iter(inputs.values()), None)
        size = first.shape[0] if first is not None and first.ndim else 1
        if size > self._max > 1 and self._batchable(signature) \
                and all(a.ndim and a.shape[0] == size for a in inputs.values()):
            self._add_parts(signature, inputs, size, done, cancelled, origin)
            return
        self._queue.append(_Item(signature, inputs, size, _stack_key(signature, inputs), done, cancelled, origin))
        self._scheduler.mark(self)

    def submit(self, signature: str, inputs: Arrays, origin: object = None) -> Future:
        """``add`` for code on another thread: a Future of the outputs (cancel it to drop the request)."""
        future: Future = Future()    # left pending, so that ``wait`` can cancel it

        def done(outputs, error):
            try:
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(outputs)
            except InvalidStateError:   # cancelled meanwhile
                pass

        self.add(signature, inputs, done, future.cancelled, origin)
        return future

    def _add_parts(self, signature: str, inputs: Arrays, size: int, done: Done, cancelled: Callable[[], bool],
                   origin: object) -> None:
        """SIZE instances as parts of at most max_batch_size, one part in the queue at a time (so
        requests that arrive meanwhile are served between the parts); DONE once, for the whole."""
        key = _stack_key(signature, inputs)
        bounds = [(start, min(start + self._max, size)) for start in range(0, size, self._max)]
        outs: list[Arrays] = []
        self.stats["split"] += 1

        def enqueue(index: int) -> None:
            lo, hi = bounds[index]
            part = _Item(signature, {n: a[lo:hi] for n, a in inputs.items()}, hi - lo, key,
                         lambda result, error: part_done(index, result, error), cancelled, origin)
            self._queue.append(part)
            self._scheduler.mark(self)

        def part_done(index: int, result, error) -> None:
            if error is not None:
                done(None, error)
                return
            outs.append(result)
            if index + 1 < len(bounds):
                if cancelled():
                    return
                enqueue(index + 1)
                return
            try:
                joined = {n: np.concatenate([o[n] for o in outs]) for n in outs[0]}
                if any(len(a) != size for a in joined.values()):
                    raise ValueError("outputs do not have one row per instance")
            except Exception as exc:
                done(None, exc)
                return
            done(joined, None)

        enqueue(0)

    @staticmethod
    def wait(future: Future, timeout: float) -> Arrays:
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()
            raise RequestTimeout(f"inference did not finish within {timeout:.0f} s "
                                 f"(SAGEMAKER_MODEL_SERVER_TIMEOUT)") from None

    def close(self) -> None:
        self._closed = True

    # -- running (the loop's thread) ------------------------------------------------------------------

    def pending(self) -> bool:
        return bool(self._queue)

    def run_once(self) -> None:
        """Run the next batch: the oldest request and what can be stacked with it."""
        batch = self._take()
        if batch:
            self._execute(batch)

    def _take(self) -> list[_Item]:
        queue = self._queue
        while queue:
            first = queue.popleft()
            if not first.cancelled():
                break
        else:
            return []
        batch, total = [first], first.size
        if not queue or not self._batchable(first.signature) or first.size >= self._max:
            return batch
        key = first.key
        kept: list[_Item] = []
        while queue and total < self._max:
            item = queue.popleft()
            if item.key == key and total + item.size <= self._max:
                if not item.cancelled():
                    batch.append(item)
                    total += item.size
            else:
                kept.append(item)
        queue.extendleft(reversed(kept))
        return batch

    def _execute(self, batch: list[_Item]) -> None:
        self.stats["calls"] += 1
        self.stats["items"] += len(batch)
        self.stats["largest"] = max(self.stats["largest"], sum(i.size for i in batch))
        if len(batch) == 1:
            self._run_alone(batch[0])
            return
        try:
            stacked = {n: np.concatenate([item.inputs[n] for item in batch]) for n in batch[0].inputs}
            outputs = self._call(batch[0].signature, stacked)
            total = sum(item.size for item in batch)
            if any(len(a) != total for a in outputs.values()):
                raise ValueError("outputs do not have one row per instance")
        except Exception as exc:  # find the culprit: each request runs alone
            log.debug("batch of %d failed (%s); running its requests one by one", len(batch), exc)
            self.stats["fallbacks"] += 1
            for item in batch:
                self._run_alone(item)
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("model call %s: %d requests, %d instances, from %s", batch[0].signature, len(batch), total,
                      sorted({str(item.origin) for item in batch}))
        start = 0
        for item in batch:
            end = start + item.size
            item.done({n: a[start:end] for n, a in outputs.items()}, None)
            start = end

    def _run_alone(self, item: _Item) -> None:
        try:
            outputs = self._call(item.signature, item.inputs)
        except Exception as exc:
            item.done(None, exc)
            return
        item.done(outputs, None)
