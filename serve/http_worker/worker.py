"""What one HTTP worker does after the fork: reach the model process, then serve. No TensorFlow.

Setting up runs on a thread so that /ping can answer 503 meanwhile (SageMaker polls it from
the start): wait until the model processes are warm, ask one what it serves, build the
handlers (TF-container scripts are imported here, as that container runs them in gunicorn;
toolkit scripts run in the model process) and mark this worker ready.

A failure is logged as one line, "startup failed: <which step>: <why>" (the traceback
only at DEBUG), and ``settled`` tells the worker process to end the server.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
from types import ModuleType
from typing import Callable

from serve.contract import handlers
from serve.contract.errors import describe_failure
from serve.http_worker.modelclient import ModelClient, catalog
from serve.contract.readiness import Readiness
from serve.contract.settings import Settings
from serve.usercode import CodeLocation, import_script, style_of_script
from serve.usercode.tfs import TfsHandler
from serve.usercode.watchdog import Watchdog

log = logging.getLogger(__name__)


class WorkerState:
    def __init__(self) -> None:
        self.status = "loading"           # loading -> ready | failed
        self.error: str | None = None
        self.handler: handlers.Handler | None = None
        self.default: handlers.DefaultHandler | None = None
        self.client: ModelClient | None = None
        self.watchdog: Watchdog | None = None   # an AWS-container script's, run here
        self.settled = threading.Event()  # set once setting up ended, either way

    @property
    def ready(self) -> bool:
        return self.status == "ready"


def start(settings: Settings, code: CodeLocation | None, readiness: Readiness, model_processes: int,
          model_failed: Callable[[], bool] = lambda: False) -> WorkerState:
    """Called on the worker's main thread (gunicorn loading the app): an AWS-container script is
    imported here and now, as that container imports it, where signal.signal works; the rest of
    setting up goes on in a thread, /ping answering 503 meanwhile."""
    state = WorkerState()
    script: tuple[ModuleType | None, BaseException | None] = (None, None)
    if code is not None and not settings.multi_model and style_of_script(code.script) == "tfs":
        try:
            script = (import_script(code), None)
        except BaseException as exc:  # reported by the set-up, as one start-up failure line
            script = (None, exc)
    threading.Thread(target=_set_up, args=(state, settings, code, readiness, model_processes, model_failed, script),
                     name="worker-setup", daemon=True).start()
    return state


class _RemoteScript:
    """A toolkit-style script's request, handed whole to the model process where the script runs."""

    def __init__(self, client: ModelClient, timeout: float):
        self._client = client
        self._timeout = timeout

    def handle(self, invocation: handlers.Invocation) -> handlers.Result:
        return self._client.script(invocation, self._timeout)


def _set_up(state: WorkerState, settings: Settings, code: CodeLocation | None, readiness: Readiness,
            model_processes: int, model_failed: Callable[[], bool],
            script: tuple[ModuleType | None, BaseException | None] = (None, None)) -> None:
    started = time.perf_counter()
    step = "waiting for the model process"
    try:
        client = ModelClient(readiness.directory, model_processes)
        while not client.all_ready():
            if model_failed():
                return  # the model process said why; the master ends the server
            time.sleep(0.05)
        step = "asking the model process what it serves"
        description = client.describe()
        models = catalog(description)
        default = None
        if models is not None:
            default = handlers.DefaultHandler(models, client.infer, settings.model_server_timeout, settings.max_queued)
        style = description["style"]
        if style == "tfs":
            step = f"importing {code.script.name}"
            module, failure = script
            if failure is not None:
                raise failure
            if module is None:  # its source did not say; the model process imported it to find out
                module = import_script(code)
            state.watchdog = Watchdog(settings.model_server_timeout, settings.model_server_threads)
            handler = TfsHandler(module, default, settings.bind_to_port, state.watchdog)
        elif style == "toolkit":
            handler = _RemoteScript(client, settings.model_server_timeout + 1)
        elif style == "multi-model":
            handler = None  # app.py's /models routes talk to the model process themselves
        else:
            handler = default
        state.client, state.default, state.handler = client, default, handler
        gc.collect()
        gc.freeze()
        state.status = "ready"
        readiness.mark_ready()
        log.info("HTTP worker ready in %.1f s: user code %s (%s)", time.perf_counter() - started,
                 code.script if code else "none", style)
    except BaseException as exc:
        state.error = f"{step}: {describe_failure(exc)}"
        state.status = "failed"
        log.debug("startup failure, traceback:", exc_info=True)
        log.error("startup failed: %s", state.error)
    finally:
        state.settled.set()

