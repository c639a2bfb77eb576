"""What one gunicorn worker does after the fork: load everything in the background, then serve.

Loading runs on a thread so that /ping can answer 503 while it happens (SageMaker polls
it from the start). Order matters: TensorFlow's thread pools are sized before any op
runs, the user's script is imported before the model is loaded (its model_fn may be the
loader), and one real inference warms the model before /ping says 200.

A failure is logged as one line, "startup failed: <which step>: <why>" (the traceback
only at DEBUG), and ``settled`` tells the worker process to end the server.
"""
from __future__ import annotations

import gc
import os
import logging
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from . import handlers
from .batching import Batcher
from .layout import ModelLocation, find_models
from .model import Model, Repository, configure_threads, load_model
from .readiness import Readiness
from .settings import Settings
from .tuning import Tuning
from .usercode import CodeLocation, import_script

log = logging.getLogger(__name__)


class WorkerState:
    def __init__(self) -> None:
        self.status = "loading"           # loading -> ready | failed
        self.error: str | None = None
        self.handler: handlers.Handler | None = None
        self.default: handlers.DefaultHandler | None = None
        self.settled = threading.Event()  # set once loading ended, either way

    @property
    def ready(self) -> bool:
        return self.status == "ready"


def start(settings: Settings, tuning: Tuning, code: CodeLocation | None,
          readiness: Readiness | None = None) -> WorkerState:
    state = WorkerState()
    threading.Thread(target=_load, args=(state, settings, tuning, code, readiness), name="model-loader",
                     daemon=True).start()
    return state


def _servable(model: Model, settings: Settings) -> handlers.Servable:
    batcher = Batcher(lambda sig, feed: model.signatures[sig].call(feed),
                      max_batch_size=settings.tfs_max_batch_size if settings.tfs_enable_batching else 1,
                      max_wait=settings.batch_timeout_s,
                      batchable=lambda sig: model.signatures[sig].batched)
    return handlers.Servable(model, batcher)


def _load_all(locations: dict[str, list[ModelLocation]], settings: Settings) -> Repository[handlers.Servable]:
    """Every version of every model in the model dir, as AWS's container has TF Serving load them."""
    entries = {name: {loc.version: _servable(load_model(loc), settings) for loc in versions}
               for name, versions in locations.items()}
    return Repository(entries, settings.tfs_default_model_name or next(iter(entries)))


def _load(state: WorkerState, settings: Settings, tuning: Tuning, code: CodeLocation | None,
          readiness: Readiness | None) -> None:
    started = time.perf_counter()
    step = "setting TensorFlow's thread pools"
    try:
        configure_threads(tuning.intra_op_threads, tuning.inter_op_threads)
        step = f"importing {code.script.name}" if code else ""
        module = import_script(code) if code else None
        style = handlers.style_of(module)
        model: Any
        repository = None
        if module is not None and hasattr(module, "model_fn"):
            step = f"{code.script.name}: model_fn({settings.model_dir})"
            model = module.model_fn(str(settings.model_dir))
            described = f"model_fn({settings.model_dir}) -> {type(model).__name__}"
            if isinstance(model, Model):  # ours, not whatever a model_fn returned
                repository = Repository({model.name: {model.version: _servable(model, settings)}}, model.name)
        else:
            step = f"loading the model from {settings.model_dir}"
            repository = _load_all(find_models(settings.model_dir), settings)
            model = repository.get().model
            described = f"{len(list(repository))} servable(s): {repository.describe()}, default '{repository.default}'"
        step = "warming up the model"
        default = None
        warm = 0.0
        if repository is not None:
            default = handlers.DefaultHandler(repository, settings.model_server_timeout, settings.max_queued)
            for servable in repository:
                warm += servable.model.warm_up()
                for sig in servable.model.signatures.values():
                    log.info("%s version %s (%s loader) signature %s", servable.model.name,
                             servable.model.version or "-", servable.model.loader, sig.describe())
        step = f"checking {code.script.name}" if code else "building the handler"
        state.default = default
        state.handler = handlers.build_handler(module, model, default, settings.bind_to_port,
                                               settings.model_server_timeout, settings.model_server_threads)
        gc.collect()
        gc.freeze()  # TensorFlow's objects never die; keep full collections from walking them
        state.status = "ready"
        if readiness is not None:
            readiness.mark_ready()
        log.info("ready in %.1f s: %s, user code: %s (%s), warm-up %.0f ms, batching %s",
                 time.perf_counter() - started, described, code.script if code else "none", style,
                 warm * 1000, f"max {settings.tfs_max_batch_size}, wait {settings.tfs_batch_timeout_micros} us"
                 if settings.tfs_enable_batching else "off")
    except BaseException as exc:
        state.error = f"{step}: {describe_failure(exc)}"
        state.status = "failed"
        log.debug("startup failure, traceback:", exc_info=True)
        log.error("startup failed: %s", state.error)
    finally:
        state.settled.set()


def describe_failure(exc: BaseException) -> str:
    """One line: the exception, its first message line, and where in the user's code it was raised."""
    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not any(part in f.filename for part in ("site-packages", "<frozen", f"{os.sep}serve{os.sep}"))]
    if frames:
        text += f" (at {Path(frames[-1].filename).name}, line {frames[-1].lineno})"
    return text
