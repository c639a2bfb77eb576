"""Adaptive batching: concurrent requests for the same signature and shape become one model call.

One thread per worker owns the model. It takes the oldest waiting request and every
other waiting request that can be stacked with it (same signature, same per-instance
shapes and dtypes) up to ``max_batch_size`` instances, runs them as one call and hands
each caller its own rows back. While a call runs, new requests queue, so under load
batches form by themselves. A lone request at low load is run at once, on its own thread
(no hand-off to the model thread and back, which costs more than a small model's call).
The wait (``max_wait``) is spent only on requests that were already being decoded when the
batch started to form, never on a guess and never on newcomers, who go to the next batch.

A request that fails inside a batch is retried alone, so one bad request fails by
itself and not its batch-mates.

A request larger than ``max_batch_size`` (a batch transform mini-batch of thousands of
records, say) is split into parts of at most ``max_batch_size`` instances, each queued when
the one before it is done, and its outputs are joined back in order: no model call is ever
larger than the maximum, and requests that arrive meanwhile get their turn between the parts. ``max_batch_size`` 1 means
batching is off (SAGEMAKER_TFS_ENABLE_BATCHING=false): requests then run whole, as before.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError, TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Hashable

import numpy as np

from serve.contract.errors import RequestTimeout

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
ModelCall = Callable[[str, Arrays], Arrays]


@dataclass
class _Item:
    signature: str
    inputs: Arrays
    size: int
    key: Hashable
    future: Future = field(default_factory=Future)
    origin: object = None       # who sent it (an HTTP worker's pid), for the debug log of a batch


@dataclass(eq=False)
class _Arrival:
    seq: int


def _stack_key(signature: str, inputs: Arrays) -> Hashable:
    return signature, tuple(sorted((n, a.shape[1:], a.dtype.str) for n, a in inputs.items()))


class Batcher:
    def __init__(self, call: ModelCall, max_batch_size: int, max_wait: float,
                 batchable: Callable[[str], bool] = lambda signature: True):
        self._call = call
        self._max = max_batch_size
        self._max_wait = max_wait
        self._batchable = batchable
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._arrivals: set[_Arrival] = set()   # received, still being decoded
        self._announced = 0
        self._busy = False          # a call is running or a batch is forming
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()
        self.stats = {"calls": 0, "items": 0, "largest": 0, "fallbacks": 0, "split": 0}

    @contextmanager
    def arriving(self):
        """Announce a request that is being decoded, so a forming batch may wait for it.

        Pass what this yields to ``submit``, which ends the announcement; leaving the block ends
        it otherwise (a request that failed to decode).
        """
        with self._cond:
            self._announced += 1
            arrival = _Arrival(self._announced)
            self._arrivals.add(arrival)
        try:
            yield arrival
        finally:
            with self._cond:
                self._end_arrival(arrival)

    def _end_arrival(self, arrival: "_Arrival | None") -> None:
        if arrival is not None and arrival in self._arrivals:
            self._arrivals.discard(arrival)
            self._cond.notify()

    def submit(self, signature: str, inputs: Arrays, arrival: "_Arrival | None" = None,
               origin: object = None) -> Future:
        first = next(iter(inputs.values()), None)
        size = first.shape[0] if first is not None and first.ndim else 1
        if size > self._max > 1 and self._batchable(signature) \
                and all(a.ndim and a.shape[0] == size for a in inputs.values()):
            return self._submit_parts(signature, inputs, size, arrival, origin)
        item = _Item(signature, inputs, size, _stack_key(signature, inputs), origin=origin)
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            self._end_arrival(arrival)
            inline = not self._busy and not self._queue and not self._arrivals
            if inline:
                self._busy = True
            else:
                self._queue.append(item)
                self._cond.notify()
        if inline:
            item.future.set_running_or_notify_cancel()
            try:
                self._execute([item])
            finally:
                self._idle()
        return item.future

    def _submit_parts(self, signature: str, inputs: Arrays, size: int,
                      arrival: "_Arrival | None", origin: object = None) -> Future:
        """Run SIZE instances as parts of at most max_batch_size, one part in the queue at a time
        (so requests that arrive meanwhile are served between the parts); one future for the whole."""
        key = _stack_key(signature, inputs)
        bounds = [(start, min(start + self._max, size)) for start in range(0, size, self._max)]
        whole: Future = Future()            # left pending, so that Batcher.wait can cancel it
        outs: list[Arrays] = []

        def enqueue(index: int) -> None:
            lo, hi = bounds[index]
            part = _Item(signature, {n: a[lo:hi] for n, a in inputs.items()}, hi - lo, key, origin=origin)
            part.future.add_done_callback(lambda f: part_done(index, f))
            with self._cond:
                if self._closed:
                    raise RuntimeError("batcher is closed")
                self._queue.append(part)
                self._cond.notify()

        def finish(result: Arrays | None = None, error: BaseException | None = None) -> None:
            try:
                if error is not None:
                    whole.set_exception(error)
                else:
                    whole.set_result(result)
            except InvalidStateError:       # cancelled meanwhile
                pass

        def part_done(index: int, f: Future) -> None:
            if whole.done() or f.cancelled():
                return
            if f.exception() is not None:
                finish(error=f.exception())
                return
            outs.append(f.result())
            if index + 1 < len(bounds):
                try:
                    enqueue(index + 1)
                except RuntimeError as exc:
                    finish(error=exc)
                return
            try:
                joined = {n: np.concatenate([o[n] for o in outs]) for n in outs[0]}
                if any(len(a) != size for a in joined.values()):
                    raise ValueError("outputs do not have one row per instance")
            except Exception as exc:
                finish(error=exc)
                return
            finish(joined)

        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            self._end_arrival(arrival)
            self.stats["split"] += 1
        enqueue(0)
        return whole

    def _idle(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    @staticmethod
    def wait(future: Future, timeout: float) -> Arrays:
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()
            raise RequestTimeout(f"inference did not finish within {timeout:.0f} s "
                                 f"(SAGEMAKER_MODEL_SERVER_TIMEOUT)") from None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- the model thread ------------------------------------------------------------------------

    def _take(self) -> list[_Item] | None:
        with self._cond:
            while (self._busy or not self._queue) and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            self._busy = True
            first = self._queue.popleft()
            batch, total = [first], first.size
            if not self._batchable(first.signature) or first.size >= self._max:
                return batch
            deadline = time.monotonic() + self._max_wait
            cutoff = self._announced
            while True:
                total = self._gather(batch, total)
                remaining = deadline - time.monotonic()
                expected = any(a.seq <= cutoff for a in self._arrivals)
                if total >= self._max or not expected or remaining <= 0 or self._closed:
                    return batch
                self._cond.wait(remaining)

    def _gather(self, batch: list[_Item], total: int) -> int:
        key = batch[0].key
        kept: deque[_Item] = deque()
        while self._queue:
            item = self._queue.popleft()
            if item.key == key and total + item.size <= self._max:
                batch.append(item)
                total += item.size
            else:
                kept.append(item)
        self._queue.extendleft(reversed(kept))
        return total

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            batch = [item for item in batch if item.future.set_running_or_notify_cancel()]
            try:
                if batch:
                    self._execute(batch)
            finally:
                batch = None  # not kept while waiting for the next: its arrays may be large
                self._idle()

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
            item.future.set_result({n: a[start:end] for n, a in outputs.items()})
            start = end

    def _run_alone(self, item: _Item) -> None:
        try:
            item.future.set_result(self._call(item.signature, item.inputs))
        except Exception as exc:
            item.future.set_exception(exc)
