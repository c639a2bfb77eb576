"""The master's supervision of its model processes: liveness learned from the process itself,
restarts with back-off, and the shared memory a dead process leaves.

- **Exit** is learned from the process (the master is its parent: ``Popen.poll``, i.e. waitpid),
  never from a socket, which a child forked by user code can hold open.
- **Frozen**: each model process touches ``model-N.alive`` every ``HEARTBEAT_EVERY`` s from a
  thread of its own (``serve.model_process.heartbeat``). With no beat for ``FROZEN_AFTER`` s the
  master takes its ready mark away, so /ping answers 503 and HTTP workers open no new connection
  to it; the mark comes back if it beats again. With no beat for ``REPLACE_AFTER`` s it is killed
  (SIGKILL) and replaced like a crashed one.
- **Back-off**: the n-th failure within ``RESTART_WINDOW`` s is restarted after
  ``min(MAX_BACKOFF, 2 ** (n - 1))`` s; the ``RESTART_LIMIT``-th ends the attempt: in single-model
  mode the server exits (code 3) with one ``model process failing:`` line, since SageMaker
  replaces an instance whose container exits and a crash loop only bills. In multi-model mode a
  model that was being loaded (``model-N.loading/``) when the process failed, ``RESTART_LIMIT``
  times in the window, is refused from then on with the reason (``refused/``), and the process is
  always restarted for the others (after at most ``MAX_BACKOFF`` s).
- **Shared memory**: segments are named after the run and the process that made them
  (``serve.contract.channel``); when the master reaps a process it removes that process's
  segments, and at shutdown every segment of the run. A master killed with SIGKILL removes
  nothing: the next server to start on the machine removes the run directories and segments of
  every run whose lock nobody holds any more (``sweep_dead_runs``).
"""
from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from serve.contract import channel
from serve.contract.readiness import (HEARTBEAT_EVERY, RUN_PREFIX, alive_path, loading_dir, pid_alive, ready_path,
                                     refused_dir, run_is_dead, run_parent)

log = logging.getLogger("serve")

FROZEN_AFTER = 3.0       # seconds without a heartbeat: not ready (/ping 503)
REPLACE_AFTER = 15.0     # seconds without a heartbeat: killed and replaced
RESTART_LIMIT = 3        # failures ...
RESTART_WINDOW = 300.0   # ... within this many seconds: give up (see the module's docstring)
MAX_BACKOFF = 30.0

assert FROZEN_AFTER > 4 * HEARTBEAT_EVERY


@dataclass
class Watch:
    """What the master knows of one model process slot."""
    failures: collections.deque = field(default_factory=collections.deque)   # monotonic times
    restart_at: float | None = None
    blamed: dict = field(default_factory=dict)   # loading mark -> monotonic times it was under way at a failure
    frozen: bool = False
    ready_text: str | None = None


def heartbeat_age(run_dir: Path, index: int, now_wall: float | None = None) -> float | None:
    """Seconds since the process's last heartbeat; None before its first."""
    try:
        beat = alive_path(run_dir, index).stat().st_mtime
    except FileNotFoundError:
        return None
    return (now_wall if now_wall is not None else time.time()) - beat


def check_frozen(watch: Watch, run_dir: Path, index: int, pid: int) -> bool:
    """Mark a silent process not ready (and ready again once it beats); True when it must be replaced."""
    age = heartbeat_age(run_dir, index)
    if age is None:
        return False                  # still starting: its heartbeat begins once it is ready
    ready = ready_path(run_dir, index)
    if age > FROZEN_AFTER and not watch.frozen:
        watch.frozen = True
        try:
            watch.ready_text = ready.read_text()
        except FileNotFoundError:
            watch.ready_text = None
        ready.unlink(missing_ok=True)
        log.error("model process %d (pid %d) has not answered for %.1f s; /ping is 503 until it does "
                  "(replaced after %.0f s)", index, pid, age, REPLACE_AFTER)
    elif age <= FROZEN_AFTER and watch.frozen:
        watch.frozen = False
        if watch.ready_text is not None:
            ready.write_text(watch.ready_text)
        log.warning("model process %d (pid %d) answers again", index, pid)
    return age > REPLACE_AFTER


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def on_failure(watch: Watch, now: float) -> float | None:
    """Record a failure; the delay before the restart, or None when the limit is reached."""
    watch.failures.append(now)
    while watch.failures and now - watch.failures[0] > RESTART_WINDOW:
        watch.failures.popleft()
    if len(watch.failures) >= RESTART_LIMIT:
        return None
    return min(MAX_BACKOFF, 2.0 ** (len(watch.failures) - 1))


def unlink_segments(paths) -> int:
    """Remove each segment of PATHS that is still there; how many were removed."""
    removed = 0
    for path in paths:
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def remove_segments(run_dir: Path, pid: int | None = None) -> int:
    """Remove the run's shared-memory segments (only PID's, when given); how many were removed."""
    return unlink_segments(channel.run_segments(run_dir, pid))


def loads_in_progress(run_dir: Path, index: int) -> dict[str, str]:
    """mark file name -> model name, for the loads model process INDEX had under way."""
    folder = loading_dir(run_dir, index)
    out = {}
    for mark in (folder.iterdir() if folder.is_dir() else []):
        try:
            out[mark.name] = mark.read_text()
        except OSError:
            continue
    return out


def blame_loads(watch: Watch, run_dir: Path, index: int, now: float, why: str) -> list[str]:
    """Count this failure against every model that was loading; refuse those at RESTART_LIMIT within
    RESTART_WINDOW (a mark the model process checks before it loads); the names refused now."""
    refused = []
    for mark, name in loads_in_progress(run_dir, index).items():
        times = watch.blamed.setdefault(mark, collections.deque())
        times.append(now)
        while times and now - times[0] > RESTART_WINDOW:
            times.popleft()
        if len(times) >= RESTART_LIMIT:
            folder = refused_dir(run_dir)
            folder.mkdir(exist_ok=True)
            (folder / mark).write_text(f"model '{name}' was loading each of the {RESTART_LIMIT} times the model "
                                       f"process failed in {RESTART_WINDOW:.0f} s (last: {why}); it is not loaded "
                                       f"again until the server restarts")
            refused.append(name)
        (loading_dir(run_dir, index) / mark).unlink(missing_ok=True)
    return refused


def sweep_segments(run_dir: Path) -> int:
    """Remove the run's segments whose maker is gone (an HTTP worker or model process reaped since)."""
    def orphaned(path: Path) -> bool:
        pid = channel.owner(path)
        return pid is not None and not pid_alive(pid)
    return unlink_segments(path for path in channel.run_segments(run_dir) if orphaned(path))


def sweep_dead_runs() -> tuple[int, int]:
    """Remove what runs killed before they could clean up left: their run directories and their
    segments (/dev/shm is a RAM file system: what stays there holds memory until the machine
    restarts). A run is dead when nothing holds its lock (``serve.contract.readiness``). Returns
    (runs, segments) removed."""
    runs = segments = 0
    for parent in {Path(run_parent()), Path(tempfile.gettempdir())}:
        for run_dir in parent.glob(f"{RUN_PREFIX}*"):
            if not run_dir.is_dir() or not run_is_dead(run_dir):
                continue
            segments += remove_segments(run_dir)
            shutil.rmtree(run_dir, ignore_errors=True)
            runs += 1
    return runs, segments
