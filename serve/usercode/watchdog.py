"""The watchdog user code runs under: a hung script answers 504, and /ping 503 once every thread hangs."""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from typing import Callable

from serve.contract.errors import RequestTimeout
from serve.contract.handlers import Result

log = logging.getLogger(__name__)


class Watchdog:
    """Runs user code on a pool thread so that a hung script answers 504 instead of hanging.

    A call still running after its caller got the 504 holds its thread. When every thread is
    held so, no request can be served any more: ``exhausted`` says so (and ``on_change`` is told),
    so that /ping answers 503 and SageMaker replaces the instance instead of billing a server
    that only answers 504.
    """

    def __init__(self, timeout: float, threads: int, on_change: Callable[[bool], None] | None = None):
        self._timeout = timeout
        self._threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="user-code")
        self._hung = 0
        self._lock = threading.Lock()
        self.on_change = on_change

    @property
    def exhausted(self) -> bool:
        return self._hung >= self._threads

    def _count(self, delta: int) -> None:
        with self._lock:
            before = self.exhausted
            self._hung += delta
            after = self.exhausted
        if before != after:
            log.error("user code holds all %d of its threads, hung past the timeout; /ping answers 503",
                      self._threads) if after else log.info("user code threads free again")
            if self.on_change is not None:
                self.on_change(after)

    def run(self, fn: Callable[[], Result]) -> Result:
        if self.exhausted:
            raise RequestTimeout("inference.py has hung on every thread it has; this server cannot answer")
        future = self._pool.submit(fn)
        try:
            return future.result(timeout=self._timeout)
        except FutureTimeout:
            self._count(+1)
            future.add_done_callback(lambda _: self._count(-1))
            raise RequestTimeout(f"inference.py did not answer within {self._timeout:.0f} s "
                                 f"(SAGEMAKER_MODEL_SERVER_TIMEOUT)") from None
