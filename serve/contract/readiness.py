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
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_ALL = "all-ready"
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
    def __init__(self, directory: Path, expected: int):
        self.directory = Path(directory)
        self.expected = expected
        self._latched = False

    @classmethod
    def create(cls, expected: int) -> "Readiness":
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        return cls(Path(tempfile.mkdtemp(prefix="serve-ready-", dir=shm)), expected)

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
