"""The master's supervision rules (serve/supervision.py) without processes: back-off, the heartbeat's
verdicts, blame for loads, and which segments belong to whom. The processes themselves are
tests/host/test_supervision.py."""
from __future__ import annotations

import os
import time

from serve import supervision
from serve.contract import channel
from serve.contract.readiness import alive_path, loading_dir, ready_path, refused_dir


def test_back_off_doubles_then_gives_up_within_the_window():
    watch = supervision.Watch()
    delays = [supervision.on_failure(watch, t) for t in (0.0, 1.0, 2.0)]
    assert delays[:supervision.RESTART_LIMIT - 1] == [1.0, 2.0][:supervision.RESTART_LIMIT - 1]
    assert delays[supervision.RESTART_LIMIT - 1] is None
    spaced = supervision.Watch()                     # failures further apart than the window never add up
    assert all(supervision.on_failure(spaced, i * (supervision.RESTART_WINDOW + 1)) == 1.0 for i in range(5))


def test_a_silent_process_loses_its_ready_mark_and_gets_it_back(tmp_path):
    watch = supervision.Watch()
    ready_path(tmp_path, 0).write_text("1234")
    beat = alive_path(tmp_path, 0)
    beat.write_text("1234")
    assert supervision.check_frozen(watch, tmp_path, 0, 1234) is False and ready_path(tmp_path, 0).exists()
    stale = time.time() - supervision.FROZEN_AFTER - 1
    os.utime(beat, (stale, stale))
    assert supervision.check_frozen(watch, tmp_path, 0, 1234) is False
    assert not ready_path(tmp_path, 0).exists() and watch.frozen      # /ping 503, no new connections
    os.utime(beat)                                                     # it beats again
    supervision.check_frozen(watch, tmp_path, 0, 1234)
    assert ready_path(tmp_path, 0).read_text() == "1234" and not watch.frozen
    dead = time.time() - supervision.REPLACE_AFTER - 1
    os.utime(beat, (dead, dead))
    assert supervision.check_frozen(watch, tmp_path, 0, 1234) is True   # replace it


def test_a_model_loading_at_each_failure_is_refused(tmp_path):
    watch = supervision.Watch()
    for t in range(supervision.RESTART_LIMIT):
        loading_dir(tmp_path, 0).mkdir(exist_ok=True)
        (loading_dir(tmp_path, 0) / "inference_abc").write_text("crashy")
        refused = supervision.blame_loads(watch, tmp_path, 0, float(t), "signal 9")
    assert refused == ["crashy"]
    assert "not loaded again" in (refused_dir(tmp_path) / "inference_abc").read_text()


def test_segments_carry_the_run_and_their_maker(tmp_path, monkeypatch):
    monkeypatch.setattr(channel, "SHM_DIR", tmp_path)
    monkeypatch.setattr(channel, "_run", "serve-ready-test")
    segment = channel.Segment.new("serve-in", 1000)
    try:
        assert segment.path.name.startswith(f"serve-ready-test.serve-in-{os.getpid()}-")
        assert channel.owner(segment.path) == os.getpid()
        assert channel.run_segments(tmp_path / "serve-ready-test") == [segment.path]
        assert channel.run_segments(tmp_path / "serve-ready-test", os.getpid()) == [segment.path]
        assert channel.run_segments(tmp_path / "serve-ready-test", 1) == []
        dead = tmp_path / "serve-ready-test.serve-out-999999999-x"
        dead.write_bytes(b"")
        assert supervision.sweep_segments(tmp_path / "serve-ready-test") == 1 and not dead.exists()
        assert segment.path.exists()                                  # ours: alive, kept
    finally:
        segment.unlink()
        segment.close()


def _run_held_by_a_child(parent):
    """A run directory made by Readiness.create in a child process that then sleeps holding its
    lock, with one segment of that run; (directory, segment, child)."""
    import subprocess
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from serve.contract import readiness\n"
         "readiness.run_parent = lambda: sys.argv[1]\n"
         "r = readiness.Readiness.create(1)\n"
         "print(r.directory, flush=True)\n"
         "time.sleep(600)\n", str(parent)],
        stdout=subprocess.PIPE, text=True)
    directory = parent / os.path.basename(child.stdout.readline().strip())
    segment = parent / f"{directory.name}.serve-in-{child.pid}-abc"
    segment.write_bytes(b"x" * 10)
    return directory, segment, child


def test_a_killed_servers_run_is_removed_by_the_next_start_and_a_live_one_is_not(tmp_path, monkeypatch):
    """kill -9 of the master leaves its run directory and segments in /dev/shm; the next start removes
    them, because the kernel dropped the dead run's lock, and leaves a live run's alone."""
    import signal

    monkeypatch.setattr(supervision.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(supervision, "run_parent", lambda: str(tmp_path))
    monkeypatch.setattr(channel, "SHM_DIR", tmp_path)
    killed, killed_segment, first = _run_held_by_a_child(tmp_path)
    live, live_segment, second = _run_held_by_a_child(tmp_path)
    try:
        assert killed.is_dir() and (killed / "master.lock").exists() and live.is_dir()
        assert supervision.sweep_dead_runs() == (0, 0)               # both alive: nothing touched
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert supervision.sweep_dead_runs() == (1, 1)
        assert not killed.exists() and not killed_segment.exists()
        assert live.is_dir() and live_segment.exists()
        unlocked = tmp_path / "serve-ready-older"                     # no lock: a run being made, or from
        unlocked.mkdir()                                              # before the lock: never called dead
        assert supervision.sweep_dead_runs() == (0, 0) and unlocked.is_dir()
    finally:
        for child in (first, second):
            child.kill()
            child.wait(10)
