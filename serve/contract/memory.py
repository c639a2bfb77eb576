"""Giving memory back to the system after large requests (issue 17, point 6).

glibc keeps what a process frees for its next allocations. Allocations above its mmap threshold go
back at once, but that threshold rises (up to 32 MiB) to the size of any such block freed, so after
one large request the pieces of the next ones (the 1 MiB pieces an .npz member expands in, a JSON
parser's buffers, Python's lists) come from the heap and its per-thread arenas, which glibc only
shrinks from the top. Measured (``python -m bench.memory``): an HTTP worker that expanded a 255 MiB
.npz still held 505 MiB after 50 small requests.

``Trimmer.end`` runs after every request in the HTTP workers and in the model processes: it reads
the process's resident size (one pread of /proc/self/statm, about 2 µs) and, when that is more than
``TRIM_ABOVE`` over what it was after the last trim with no request in flight, calls ``malloc_trim(0)``,
which hands the free pages of every arena back (0.2 ms for 300 MiB). Small requests never pay for a
trim; large ones pay once when they are done, or once a second while they keep overlapping.
"""
from __future__ import annotations

import ctypes
import os
import threading
import time

TRIM_ABOVE = 32 << 20   # bytes of growth over the last trimmed size that make the next request trim
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_libc = None


def malloc_trim() -> bool:
    """glibc's malloc_trim(0): free pages of every arena go back to the system. False where there is
    no glibc (musl, macOS): nothing to do there."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL("libc.so.6")
        _libc.malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


_statm = {}   # pid -> an open /proc/self/statm (opened in that process: /proc/self is resolved at open)


def resident() -> int:
    """This process's resident set size in bytes (0 where /proc is not there)."""
    pid = os.getpid()
    try:
        fd = _statm.get(pid)
        if fd is None:
            fd = _statm[pid] = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        return int(os.pread(fd, 128, 0).split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class Trimmer:
    """Trims when the process is more than ABOVE bytes larger than it was after its last quiet trim.

    Requests call ``begin`` and ``end``. The size to compare with (``baseline``) is only taken when no
    request is in flight, since RSS measured while others are decoding would count their memory as the
    process's own and hide what they free afterwards. While requests keep overlapping, a trim runs at
    most every BUSY_INTERVAL seconds; the first request to end with none left in flight trims at once.
    """

    def __init__(self, above: int = TRIM_ABOVE, busy_interval: float = 1.0):
        self.above = above
        self.busy_interval = busy_interval
        self.baseline = resident()
        self.trims = 0
        self._inflight = 0
        self._last = 0.0
        self._count = threading.Lock()
        self._trimming = threading.Lock()

    def begin(self) -> None:
        with self._count:
            self._inflight += 1

    def end(self) -> None:
        with self._count:
            self._inflight = max(0, self._inflight - 1)
            quiet = self._inflight == 0
        now = resident()
        if now - self.baseline <= self.above:
            if quiet and now:
                self.baseline = min(self.baseline, now)
            return
        if not quiet and time.monotonic() - self._last < self.busy_interval:
            return
        if not self._trimming.acquire(blocking=False):  # another thread is trimming right now
            return
        try:
            if malloc_trim():
                self.trims += 1
            self._last = time.monotonic()
            if quiet:
                self.baseline = resident()
        finally:
            self._trimming.release()
