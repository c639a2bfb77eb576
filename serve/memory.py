"""Giving memory back to the system after large requests (issue 17, point 6).

glibc keeps what a process frees for its next allocations. Allocations above its mmap threshold go
back at once, but that threshold rises (up to 32 MiB) to the size of any such block freed, so after
one large request the pieces of the next ones (the 1 MiB pieces an .npz member expands in, a JSON
parser's buffers, Python's lists) come from the heap and its per-thread arenas, which glibc only
shrinks from the top. Measured (``python -m bench.memory``): an HTTP worker that expanded a 255 MiB
.npz still held 505 MiB after 50 small requests.

``Trimmer.after_request`` runs after every request in the HTTP workers and in the model processes:
it reads the process's resident size (one pread of /proc/self/statm, about 3 µs) and, when that
is more than ``TRIM_ABOVE`` over what it was after the last trim, calls ``malloc_trim(0)``, which hands
the free pages of every arena back. Small requests never pay for a trim; a large one pays once (a few
milliseconds for hundreds of MiB).
"""
from __future__ import annotations

import ctypes
import os
import threading

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
    """Trims after a request that left the process more than ABOVE bytes larger than after the last trim."""

    def __init__(self, above: int = TRIM_ABOVE):
        self.above = above
        self.baseline = resident()
        self.trims = 0
        self._lock = threading.Lock()

    def after_request(self) -> None:
        now = resident()
        if now - self.baseline <= self.above:
            self.baseline = min(self.baseline, now) if now else self.baseline
            return
        if not self._lock.acquire(blocking=False):  # another thread is trimming right now
            return
        try:
            if malloc_trim():
                self.trims += 1
            self.baseline = resident()
        finally:
            self._lock.release()
