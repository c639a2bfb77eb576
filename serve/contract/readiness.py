"""The run directory the master makes before it forks, and what it says about readiness.

It holds the model processes' sockets (``model-N.sock``), their marks (``model-N.ready`` once
warm, ``model-N.failed`` with the reason when loading failed, ``model-N.hung`` while its user
code holds every thread) and the HTTP workers' marks.

Whether every HTTP worker can answer, known to each of them, for /ping:

SageMaker sends traffic as soon as /ping first answers 200. A worker's own /ping only knows
about itself, so with several workers the first one to load would say 200 while the others
still answer 503. The master makes a private directory before it forks; each worker drops a
file named by its pid there once it has loaded, and /ping is 200 only when as many live
workers have done so as the server was started with. Once that has happened it stays so
(latched in the directory): a replacement for a worker that died loads before it accepts
connections, so it never answers 503 to anyone meanwhile.

While the run lives, its directory holds ``master.lock`` locked (flock) by the master and the
HTTP workers it forked (they share the lock's open file). The kernel lets go of it when the last
of them is gone, however it went (``kill -9`` included), so the next server to start knows a run
whose directory and segments nobody will remove (``serve.supervision.sweep_dead_runs``).
"""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from serve.contract import channel

_ALL = "all-ready"
RUN_PREFIX = "serve-ready-"
RUN_LOCK = "master.lock"
HEARTBEAT_EVERY = 0.5   # seconds between a model process's heartbeats (serve.supervision reads them)


def socket_path(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / f"model-{index}.sock"


def ready_path(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / f"model-{index}.ready"


def failed_path(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / f"model-{index}.failed"


def alive_path(run_dir: Path, index: int) -> Path:
    """The model process's heartbeat: touched every HEARTBEAT_EVERY seconds (serve.supervision)."""
    return Path(run_dir) / f"model-{index}.alive"


def loading_dir(run_dir: Path, index: int) -> Path:
    """Multi-model: one file per load under way in model process INDEX (the master blames a crash on them)."""
    return Path(run_dir) / f"model-{index}.loading"


def refused_dir(run_dir: Path) -> Path:
    """Multi-model: one file per model refused for crashing its model process, holding the reason."""
    return Path(run_dir) / "refused"


def hung_path(run_dir: Path, index: int) -> Path:
    """There while the model process's user code has hung on every thread it has."""
    return Path(run_dir) / f"model-{index}.hung"


class Readiness:
    def __init__(self, directory: Path, expected: int, lock_fd: int | None = None):
        self.directory = Path(directory)
        self.expected = expected
        self._latched = False
        self._lock_fd = lock_fd   # held for the run's life; never closed by hand (see the docstring)

    @classmethod
    def create(cls, expected: int) -> "Readiness":
        directory = Path(tempfile.mkdtemp(prefix=RUN_PREFIX, dir=run_parent()))
        return cls(directory, expected, hold_run_lock(directory))

    def mark_ready(self) -> None:
        (self.directory / str(os.getpid())).touch()

    def ready_workers(self) -> int:
        count = 0
        for entry in self.directory.iterdir():
            if entry.name.isdigit() and pid_alive(int(entry.name)):
                count += 1
        return count

    def all_ready(self) -> bool:
        if self._latched:
            return True
        if (self.directory / _ALL).exists() or self.ready_workers() >= self.expected:
            (self.directory / _ALL).touch()
            self._latched = True
        return self._latched

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def run_parent() -> str:
    """Where run directories are made: where the segments go (/dev/shm when writable, else the
    temporary directory)."""
    return str(channel.SHM_DIR)


def hold_run_lock(run_dir: Path) -> int:
    """Lock RUN_DIR's ``master.lock`` for as long as this process (and its forks) live.

    The file is locked under a temporary name and then renamed into place, so a sweeper that finds
    ``master.lock`` never finds it unlocked while its run is starting."""
    staging = Path(run_dir) / f".{RUN_LOCK}.{os.getpid()}"
    fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(staging, Path(run_dir) / RUN_LOCK)
    return fd


def run_is_dead(run_dir: Path) -> bool:
    """Whether RUN_DIR's run is over: its lock exists and nobody holds it. A run directory
    without a lock (being made, or made by a version before the lock) is never called dead."""
    try:
        fd = os.open(Path(run_dir) / RUN_LOCK, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)   # the lock, if taken, goes with it


def pid_alive(pid: int) -> bool:
    """Whether PID still exists. A zombie (exited, not reaped yet) still does: what it left is
    taken on the next sweep."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
