"""The process model: a gunicorn master and its workers, configured from ``Settings``.

gthread workers: each worker's HTTP threads decode and encode while its single model
thread (the batcher) runs TensorFlow, and /ping never waits behind inference because it
only reads a flag on a thread of its own. The worker loads the model itself after the
fork (TensorFlow must not be imported in the master). SIGTERM lets in-flight requests
finish for up to ``GRACEFUL_TIMEOUT`` seconds, inside SageMaker's 30 s before SIGKILL.
"""
from __future__ import annotations

import logging
import os

from gunicorn.app.base import BaseApplication

from .settings import Settings
from .tuning import Tuning
from .usercode import CodeLocation

GRACEFUL_TIMEOUT = 25
KEEPALIVE = 75  # longer than the client side keeps idle connections, so we never close first


def gunicorn_options(settings: Settings, tuning: Tuning) -> dict:
    return {
        "bind": [f"0.0.0.0:{settings.bind_to_port}"],
        "workers": tuning.workers,
        "worker_class": "gthread",
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


class ServeApplication(BaseApplication):
    def __init__(self, settings: Settings, tuning: Tuning, code: CodeLocation | None):
        self._settings = settings
        self._tuning = tuning
        self._code = code
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self._settings, self._tuning).items():
            self.cfg.set(key, value)

    def load(self):
        # Runs in each worker after the fork.
        from . import worker
        from .app import create_app

        state = worker.start(self._settings, self._tuning, self._code)
        return create_app(self._settings, state, self._tuning.workers)
