"""The model process's heartbeat: a thread that touches ``RUN_DIR/model-INDEX.alive`` every
``HEARTBEAT_EVERY`` seconds. It needs the interpreter to run, so a process that
is stopped (SIGSTOP), deadlocked, or stuck in native code that holds the GIL stops beating, and
the master (``serve.supervision``) sees it, whatever its sockets look like."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from serve.contract.readiness import HEARTBEAT_EVERY, alive_path


def start(run_dir: Path, index: int) -> None:
    path = alive_path(run_dir, index)
    path.write_text(str(os.getpid()))

    def beat() -> None:
        while True:
            time.sleep(HEARTBEAT_EVERY)
            try:
                os.utime(path)
            except FileNotFoundError:  # the run is over, or the master replaced us
                return
            except OSError:
                continue

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()
