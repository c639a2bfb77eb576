"""User code is imported on the process's main thread, as AWS's container imports it (gunicorn
loads the app, and with it inference.py, on the worker's main thread): Python lets only that
thread call ``signal.signal``, and scripts do (timeouts, clean shutdown of their own threads).

A process whose main thread is busy elsewhere (the model process accepts connections; its
multi-model loads run on connection threads) gives it to ``serve_forever`` and its other work to
threads; ``call`` then runs a function there and hands back its result or its exception.
Without a main thread serving, ``call`` runs the function where it is.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Callable, TypeVar

T = TypeVar("T")

_jobs: "queue.SimpleQueue[tuple[Callable, Future]]" = queue.SimpleQueue()
_serving = threading.Event()


def call(fn: Callable[[], T]) -> T:
    """FN() on the main thread (here, when this is it or nothing serves there)."""
    if threading.current_thread() is threading.main_thread() or not _serving.is_set():
        return fn()
    done: Future = Future()
    _jobs.put((fn, done))
    return done.result()


def serve_forever(poll: float = 0.5) -> None:
    """Run what ``call`` hands over, on this (the main) thread, for ever; signals are still handled
    between jobs, every POLL seconds at the latest."""
    _serving.set()
    while True:
        try:
            fn, done = _jobs.get(timeout=poll)
        except queue.Empty:
            continue
        if not done.set_running_or_notify_cancel():
            continue
        try:
            done.set_result(fn())
        except BaseException as exc:  # the caller decides; this thread goes on
            done.set_exception(exc)
