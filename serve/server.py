"""The process model: a gunicorn master and its workers, configured from ``Settings``.

gthread workers: each worker's HTTP threads decode and encode while its single model
thread (the batcher) runs TensorFlow, and /ping never waits behind inference because it
only reads a flag on a thread of its own. The worker loads the model itself after the
fork (TensorFlow must not be imported in the master). SIGTERM lets in-flight requests
finish for up to ``GRACEFUL_TIMEOUT`` seconds, inside SageMaker's 30 s before SIGKILL.

The gunicorn master restarts a worker that dies; ``ServeWorker`` decides what a worker
does around its model's life (see its docstring).
"""
from __future__ import annotations

import logging
import os
import sys
import threading

import orjson
from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import ThreadWorker

from .readiness import Readiness
from .redact import SecretFilter
from .settings import Settings
from .tuning import Tuning
from .usercode import CodeLocation

GRACEFUL_TIMEOUT = 25
KEEPALIVE = 75  # longer than the client side keeps idle connections, so we never close first


def gunicorn_options(settings: Settings, tuning: Tuning) -> dict:
    return {
        "bind": [f"0.0.0.0:{settings.bind_to_port}"],
        "workers": tuning.workers,
        "worker_class": "serve.server.ServeWorker",
        "threads": settings.model_server_threads,
        # gthread workers heartbeat from their main loop, so this only catches a wedged worker.
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


def _write_json_error(sock, status: int, reason: str, message: str) -> None:
    """gunicorn's own error answer (a request it cannot parse), as JSON like every other error."""
    body = orjson.dumps({"error": f"{reason}: {message}" if message else reason})
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


class ServeWorker(ThreadWorker):
    """gunicorn's gthread worker, changed where a model server needs it:

    - The first workers accept at once and answer /ping 503 while their model loads,
      because SageMaker polls /ping from the start. A worker that replaces one that died
      loads before it accepts: the others are serving, and it must not take their traffic
      only to answer 503.
    - A model that fails to load stops the whole server (gunicorn halts on exit code 3)
      instead of leaving a worker that answers 503 forever; the reason is logged first.
    - On SIGTERM the listening sockets close at once, so new connections are refused while
      the requests already accepted finish.
    - Requests gunicorn itself cannot parse are answered in JSON.
    """

    def init_process(self) -> None:
        util.write_error = _write_json_error
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()  # ServeApplication.load: starts loading the model on a thread
        state = self.app.worker_state
        if self.age > self.cfg.workers:
            while not state.settled.wait(timeout=1.0):
                self.notify()  # the master would otherwise take a long load for a hung worker
            if state.status == "failed":
                raise SystemExit(Arbiter.WORKER_BOOT_ERROR)
        else:
            threading.Thread(target=self._exit_if_load_fails, args=(state,), name="load-watch",
                             daemon=True).start()

    @staticmethod
    def _exit_if_load_fails(state) -> None:
        state.settled.wait()
        if state.status == "failed":
            logging.shutdown()
            os._exit(Arbiter.WORKER_BOOT_ERROR)  # nothing was served yet; the master halts the server

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            for listener in self.sockets:
                listener.close()


class ServeApplication(BaseApplication):
    def __init__(self, settings: Settings, tuning: Tuning, code: CodeLocation | None,
                 secrets: SecretFilter):
        self._settings = settings
        self._tuning = tuning
        self._code = code
        self._secrets = secrets
        self.worker_state = None
        self.readiness = Readiness.create(tuning.workers)  # before the fork: every worker shares it
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self._settings, self._tuning).items():
            self.cfg.set(key, value)

    def load(self):
        # Runs in each worker after the fork.
        from . import worker
        from .app import create_app

        self.worker_state = worker.start(self._settings, self._tuning, self._code, self.readiness)
        return create_app(self._settings, self.worker_state, self._tuning.workers, self._secrets, self.readiness)

    def run(self) -> None:
        self._master_pid = os.getpid()
        try:
            arbiter = Arbiter(self)
            # gunicorn's logger has handlers of its own; they must mask secrets as the app's do.
            for handler in logging.getLogger("gunicorn.error").handlers:
                handler.addFilter(self._secrets)
            arbiter.run()
        except RuntimeError as exc:  # as gunicorn's own run() reports a configuration it cannot use
            print(f"serve: {exc}", file=sys.stderr)
            sys.exit(1)
        finally:
            if os.getpid() == self._master_pid:
                self.readiness.remove()
