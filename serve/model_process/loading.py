"""Loading one model directory in the model process: its user script, every model version in it,
each behind its batcher (a ``Servable``), warmed up; and the handler that runs here. Used at start
(``serve.model_process.main``) and for each multi-model load (``serve.model_process.multimodel``)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_archive.layout import find_models
from serve import usercode
from serve.contract import handlers
from serve.contract.errors import describe_failure
from serve.contract.signature import Model, Repository
from serve.model_process.batch_check import unbatched_signatures
from serve.model_process.batching import Batcher
from serve.model_process.model import load_model
from serve.model_process.warmup import warm_up
from serve.usercode.tfs import TfsHandler
from serve.usercode.toolkit import ToolkitHandler
from serve.usercode.watchdog import Watchdog

log = logging.getLogger("serve.model_process.model")


class StartupFailure(Exception):
    pass



@dataclass(frozen=True)
class Servable:
    """One loaded model version and the batcher that owns its calls (in the model process)."""
    model: Model
    batcher: Batcher


def local_infer(servables: Repository[Servable]):
    """DefaultHandler's infer for this process: the servable's batcher, Examples serialized here."""
    def infer(model: Model, signature: str, inputs, examples, timeout: float, origin: Any = "script"):
        servable = servables.get(model.name, model.version)
        if examples is not None:
            from serve.model_process.examples import serialize

            inputs = {servable.model.signatures[signature].example_input: serialize(*examples)}
        return servable.batcher.wait(servable.batcher.submit(signature, inputs, origin=origin), timeout)
    return infer


def make_servable(model: Model, settings) -> Servable:
    # a signature whose answers depend on the other rows of a batch is never batched (batch_check)
    unbatched = unbatched_signatures(model, settings.tfs_enable_batching)
    batcher = Batcher(lambda sig, feed: model.signatures[sig].call(feed),
                      max_batch_size=settings.tfs_max_batch_size if settings.tfs_enable_batching else 1,
                      batchable=lambda sig: model.signatures[sig].batched and sig not in unbatched)
    return Servable(model, batcher)


@dataclass
class ModelSet:
    """What one model dir loaded into: its servables, the style of its script, and the handler
    that runs here (a toolkit script; in multi-model mode any script, or the default path)."""
    servables: Repository[Servable] | None
    style: str
    handler: handlers.Handler | None


def load_model_dir(model_dir: Path, code: usercode.CodeLocation | None, settings, default_name: str | None = None,
                   module_name: str | None = None, scripts_here: bool = False) -> ModelSet:
    """Import the toolkit script (its model_fn may be the loader), load every model in MODEL_DIR,
    warm them up. SCRIPTS_HERE: also run AWS-container scripts and the default path in this
    process (multi-model mode, where HTTP workers hand every invoke over whole)."""
    step = "reading the user code"
    try:
        if code:
            step = f"importing {code.script.name}"
        style, module = usercode.load_script(code, scripts_here, module_name)
        servables = None
        if module is not None and hasattr(module, "model_fn"):
            step = f"{code.script.name}: model_fn({model_dir})"
            model = module.model_fn(str(model_dir))
            if isinstance(model, Model):  # ours, not whatever a model_fn returned
                servables = Repository({model.name: {model.version: make_servable(model, settings)}}, model.name)
        else:
            step = f"loading the model from {model_dir}"
            entries = {name: {loc.version: make_servable(load_model(loc), settings) for loc in versions}
                       for name, versions in find_models(model_dir).items()}
            servables = Repository(entries, default_name or next(iter(entries)))
            model = servables.get().model
        for servable in (servables or []):
            step = f"warming up {servable.model.location}"
            warm, what = warm_up(servable.model)
            for sig in servable.model.signatures.values():
                log.info("%s version %s (%s loader) signature %s", servable.model.name,
                         servable.model.version or "-", servable.model.loader, sig.describe())
            log.info("%s version %s warm-up %.0f ms: %s", servable.model.name, servable.model.version or "-",
                     warm * 1e3, what)
        step = f"checking {code.script.name}" if code else "building the handler"
        default = None if servables is None else handlers.DefaultHandler(
            servables.map(lambda s: s.model), local_infer(servables), settings.model_server_timeout)
        watchdog = lambda: Watchdog(settings.model_server_timeout, settings.model_server_threads)  # noqa: E731
        handler = None
        if style == "toolkit":
            handler = ToolkitHandler(module, model, default, watchdog())
        elif style == "tfs" and scripts_here:
            handler = TfsHandler(module, default, settings.bind_to_port, watchdog())
        elif scripts_here:
            handler = default
        return ModelSet(servables, style, handler)
    except BaseException as exc:
        raise StartupFailure(f"{step}: {describe_failure(exc)}") from exc


