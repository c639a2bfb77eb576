"""The process model: a gunicorn master, its HTTP workers and the model processes.

    serve (gunicorn master)
      ├─ HTTP worker x N   gevent + Flask: decode, TF-container handlers, encode; no TensorFlow
      └─ model process x M serve.model_process.main: TensorFlow, every model once, the batcher for all workers

The master starts the model processes before it forks the workers, watches them from its
main loop (``ServeArbiter.manage_workers``, about once a second and on every SIGCHLD) and
starts a new one when one dies; /ping is 503 until it is warm again. A model process that
fails to load ends the server (exit 3) with its reason. /ping never waits behind inference:
it only reads flags, on a thread of its own. SIGTERM lets in-flight requests finish for up to
``GRACEFUL_TIMEOUT`` seconds (the model processes stay until the workers are gone), inside
SageMaker's 30 s before SIGKILL.

The gunicorn master restarts an HTTP worker that dies; ``ServeWorker`` decides what a worker
does around its start (see its docstring).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from serve import supervision
from serve.contract import channel
from serve.contract.readiness import Readiness, alive_path, failed_path, hung_path, ready_path
from serve.contract.redact import SecretFilter
from serve.contract.settings import Settings
from serve.contract.tuning import Tuning
from serve.usercode import CodeLocation

GRACEFUL_TIMEOUT = 25
KEEPALIVE = 75  # longer than the client side keeps idle connections, so we never close first


def gunicorn_options(settings: Settings, tuning: Tuning) -> dict:
    return {
        "bind": [f"0.0.0.0:{settings.bind_to_port}"],
        "workers": tuning.workers,
        "worker_class": "serve.http_worker.gunicorn_worker.ServeWorker",
        "threads": settings.model_server_threads,   # the request slots of each worker (ServeWorker)
        "worker_connections": 1000,                  # connections per worker, idle ones and /ping included
        # gevent workers heartbeat from their main loop, so this only catches a wedged worker.
        "timeout": settings.model_server_timeout + 30,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "keepalive": KEEPALIVE,
        "backlog": 2048,
        "preload_app": False,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": logging.getLevelName(settings.container_log_level).lower(),
        "proc_name": "serve",
        # heartbeat files on tmpfs, so a slow or read-only disk never looks like a hung worker
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        "limit_request_line": 8190,
        # gunicorn's control socket is one fixed path per user: several servers would fight over it.
        "control_socket_disable": True,
    }


class ModelProcesses:
    """The master's model processes: started, watched (serve.supervision), replaced, stopped."""

    def __init__(self, count: int, run_dir, code: CodeLocation | None, multi_model: bool = False):
        self.count = count
        self.run_dir = run_dir
        self.multi_model = multi_model
        # the master found (and unpacked, downloaded, installed) the user code once; they use it
        self.code_args = ([str(code.directory), code.program] + ([str(code.packages)] if code.packages else [])
                          if code else [])
        self.procs: list[subprocess.Popen | None] = [None] * count
        self.ever_ready = [False] * count
        self.watches = [supervision.Watch() for _ in range(count)]
        self.log = logging.getLogger("serve")

    def start(self, index: int) -> None:
        ready_path(self.run_dir, index).unlink(missing_ok=True)
        hung_path(self.run_dir, index).unlink(missing_ok=True)
        alive_path(self.run_dir, index).unlink(missing_ok=True)
        self.watches[index].frozen = False
        self.watches[index].restart_at = None
        self.procs[index] = subprocess.Popen(
            [sys.executable, "-m", "serve.model_process.main", str(index), str(self.count), str(self.run_dir), *self.code_args])

    def start_all(self) -> None:
        for index in range(self.count):
            self.start(index)

    def collect_exits(self) -> None:
        """Reap the model processes that have exited, keeping how each ended (``Popen.returncode``)."""
        for proc in self.procs:
            if proc is not None:
                proc.poll()

    def check(self) -> str | None:
        """Replace any that died or froze, with back-off; the reason to end the server, if any."""
        now = time.monotonic()
        for index, proc in enumerate(self.procs):
            watch = self.watches[index]
            if proc is None:
                if watch.restart_at is not None and now >= watch.restart_at:
                    self.start(index)
                continue
            if ready_path(self.run_dir, index).exists():
                self.ever_ready[index] = True
            if proc.poll() is None:
                if supervision.check_frozen(watch, self.run_dir, index, proc.pid):
                    self.log.error("model process %d (pid %d) has not answered for %.0f s: replacing it", index,
                                   proc.pid, supervision.REPLACE_AFTER)
                    supervision.kill(proc.pid)
                    proc.wait()
                else:
                    continue
            failed = failed_path(self.run_dir, index)
            if failed.exists():
                return f"model process {index}: {failed.read_text()}"
            if not self.ever_ready[index]:  # it never got as far as loading: the same crash would repeat
                return f"model process {index} exited before it was ready (exit code {proc.returncode}); see its log above"
            ready_path(self.run_dir, index).unlink(missing_ok=True)
            supervision.remove_segments(self.run_dir, proc.pid)
            why = f"exit code {proc.returncode}" if proc.returncode >= 0 else f"signal {-proc.returncode}"
            delay = supervision.on_failure(watch, now)
            self.procs[index] = None
            if self.multi_model:
                for name in supervision.blame_loads(watch, self.run_dir, index, now, why):
                    self.log.error("model process failing: it failed %d times in %.0f s while loading model '%s'; "
                                   "that model is refused from now on", supervision.RESTART_LIMIT,
                                   supervision.RESTART_WINDOW, name)
            if delay is None:
                reason = (f"model process {index} failed {supervision.RESTART_LIMIT} times in "
                          f"{supervision.RESTART_WINDOW:.0f} s (last: {why})")
                if not self.multi_model:
                    self.log.error("model process failing: %s", reason)   # the one line; gunicorn adds "Reason:"
                    return reason
                watch.failures.clear()     # the others' models must keep being served: always restarted
                delay = supervision.MAX_BACKOFF
            self.log.error("model process %d (pid %d) exited (%s); starting a new one in %.0f s, /ping is 503 "
                           "until it is warm", index, proc.pid, why, delay)
            watch.restart_at = now + delay
            if delay <= 0:
                self.start(index)
        supervision.sweep_segments(self.run_dir)
        return None

    def stop(self, timeout: float = 10.0) -> None:
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in live:
            proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        supervision.remove_segments(self.run_dir)


class ServeArbiter(Arbiter):
    """gunicorn's master, also minding the model processes on every turn of its loop.

    gunicorn halts the server when a worker exits with WORKER_BOOT_ERROR or APP_LOAD_ERROR (3 and 4
    by default). User code in an HTTP worker may call os._exit(3) in a request; that must cost a worker,
    never the server, so our workers report a failed start with a code nothing else uses, and the
    server still ends with 3 (as the README says) when one did.
    """

    WORKER_BOOT_ERROR = 78   # sysexits' EX_CONFIG; serve.http_worker.gunicorn_worker exits with it
    APP_LOAD_ERROR = 79      # likewise gunicorn's 4
    EXIT_STARTUP_FAILED = 3

    def __init__(self, app: "ServeApplication"):
        super().__init__(app)
        self.models = app.model_processes

    def reap_workers(self) -> None:
        # gunicorn reaps every child with waitpid(-1) on SIGCHLD; a model process reaped there loses its
        # exit status (Popen then reads 0, and a kill -9 was logged as "exit code 0"). Ours go first, by pid.
        self.models.collect_exits()
        super().reap_workers()

    def manage_workers(self) -> None:
        reason = self.models.check()
        if reason is not None:  # the model process logged its one "startup failed:" line already
            self.halt(reason, self.WORKER_BOOT_ERROR)
        super().manage_workers()

    def halt(self, reason=None, exit_status=0):
        failed = exit_status in (self.WORKER_BOOT_ERROR, self.APP_LOAD_ERROR)
        super().halt(reason, self.EXIT_STARTUP_FAILED if failed else exit_status)


class ServeApplication(BaseApplication):
    def __init__(self, settings: Settings, tuning: Tuning, code: CodeLocation | None,
                 secrets: SecretFilter):
        self._settings = settings
        self._tuning = tuning
        self._code = code
        self._secrets = secrets
        self.worker_state = None
        runs, segments = supervision.sweep_dead_runs()
        if runs:
            logging.getLogger("serve").info("removed %d segment(s) and the run directory of %d earlier server run(s) "
                                            "that ended without cleaning up (killed)", segments, runs)
        self.readiness = Readiness.create(tuning.workers)  # before the fork: every worker shares it
        self.max_payload_bytes = settings.max_payload_bytes
        self.body_timeout = settings.model_server_body_timeout
        channel.set_run(self.readiness.directory)  # before the fork: the workers' segments carry the run's name
        self.model_processes = ModelProcesses(tuning.model_processes, self.readiness.directory, code,
                                              settings.multi_model)
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self._settings, self._tuning).items():
            self.cfg.set(key, value)

    def load(self):
        # Runs in each worker after the fork (the master stays without NumPy: no BLAS threads across a fork).
        from serve.http_worker import worker
        from serve.http_worker.app import create_app

        run_dir, count = self.readiness.directory, self._tuning.model_processes
        self.worker_state = worker.start(self._settings, self._code, self.readiness, count,
                                         lambda: any(failed_path(run_dir, i).exists() for i in range(count)))
        return create_app(self._settings, self.worker_state, self._tuning, self._secrets, self.readiness)

    def run(self) -> None:
        self._master_pid = os.getpid()
        try:
            arbiter = ServeArbiter(self)
            self.model_processes.start_all()
            # gunicorn's logger has handlers of its own; they must mask secrets as the app's do.
            for handler in logging.getLogger("gunicorn.error").handlers:
                handler.addFilter(self._secrets)
            arbiter.run()
        except RuntimeError as exc:  # as gunicorn's own run() reports a configuration it cannot use
            print(f"serve: {exc}", file=sys.stderr)
            sys.exit(1)
        finally:
            if os.getpid() == self._master_pid:
                self.model_processes.stop()
                supervision.remove_segments(self.readiness.directory)  # the workers' too, all gone by now
                self.readiness.remove()
