"""Multi-model endpoints (SAGEMAKER_MULTI_MODEL=true): the model process's registry of models that
SageMaker loads and unloads by name through /models.

SageMaker downloads a model's archive to /opt/ml/models/<name>/model when a request first names
it, then calls POST /models; when memory runs short it calls DELETE /models/<name>. Each model
dir is loaded as a single-model server would load /opt/ml/model (any layout, any SavedModel, its
own code/inference.py in either style, or the universal code/ at the root of the models folder).

Memory is decided before loading, never by an out-of-memory kill: a model is expected to cost
its size on disk (x1.2) plus the per-model overhead that the last load of the same kind actually
cost beyond that (resident memory measured before and after); it is refused with 507 when that
would take the container past 90% of the memory it may use (the cgroup limit, else the
machine's). Unloading drops every reference, collects, and hands freed memory back to the
system (malloc_trim).
"""
from __future__ import annotations

import gc
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from serve import usercode
from serve.contract.errors import BadRequest, NotFound, ServeError
from serve.contract.memory import malloc_trim
from serve.contract.handlers import DefaultHandler, Invocation, Result, Target
from serve.model_process.loading import ModelSet, StartupFailure, load_model_dir
from model_archive.layout import ModelNotFound, find_models

log = logging.getLogger("serve.model_process.model")

HEADROOM = 0.9            # of the memory the container may use
DEFAULT_OVERHEAD = 64 << 20  # per model, until a load of that kind was measured
WEIGHT_FACTOR = 1.2


class Conflict(ServeError):
    status = 409


class InsufficientMemory(ServeError):
    status = 507


@dataclass
class Loaded:
    name: str
    url: str
    models: ModelSet
    kind: str
    disk_bytes: int
    cost_bytes: int
    loaded_at: float = field(default_factory=time.time)


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return None if text == "max" or not text.lstrip("-").isdigit() else int(text)


def _meminfo() -> dict[str, int]:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024
    return info


def memory_limit() -> int:
    """Bytes the container may use: its cgroup limit (v2, then v1), else the machine's memory."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        value = _read_int(path)
        if value is not None and 0 < value < (1 << 60):
            return value
    return _meminfo()["MemTotal"]


def memory_used() -> int:
    """Bytes the container uses now: the cgroup's count, else the machine's used memory."""
    for path in ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"):
        value = _read_int(path)
        if value is not None:
            return value
    info = _meminfo()
    return info["MemTotal"] - info["MemAvailable"]


def _rss() -> int:
    """This process's resident memory (the image carries no psutil)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _kind(path: Path) -> str:
    locations = [loc for versions in find_models(path).values() for loc in versions]
    return locations[0].kind if locations else "unknown"


class MultiModelService:
    def __init__(self, settings, universal_code: usercode.CodeLocation | None):
        self.settings = settings
        self.universal = universal_code
        self.models: dict[str, Loaded] = {}
        self.loading: set[str] = set()
        self.overhead: dict[str, int] = {}
        self.lock = threading.Lock()
        self.style = "multi-model"
        self.servables = None

    # -- what the HTTP workers ask ---------------------------------------------------------------

    def describe(self) -> dict:
        return {"style": self.style, "default": None, "models": [], "pid": 0, "multi_model": True}

    def entry(self, name: str) -> dict:
        loaded = self.models.get(name)
        if loaded is None:
            raise NotFound(f"model '{name}' is not loaded; load it with POST /models")
        return {"modelName": loaded.name, "modelUrl": loaded.url}

    def list(self, token: str | None, max_results: int | None) -> dict:
        names = sorted(self.models)
        try:
            start = int(token) if token else 0
        except ValueError:
            raise BadRequest(f"next_page_token {token!r} is not one this server gave") from None
        end = len(names) if max_results is None else start + max_results
        page = {"models": [self.entry(n) for n in names[start:end] if n in self.models]}
        if end < len(names):
            page["nextPageToken"] = str(end)
        return page

    def estimate(self, path: Path, kind: str) -> int:
        return int(WEIGHT_FACTOR * _disk_bytes(path)) + self.overhead.get(kind, DEFAULT_OVERHEAD)

    def load(self, name: str, url: str) -> dict:
        path = Path(url)
        with self.lock:
            if name in self.models or name in self.loading:
                raise Conflict(f"model '{name}' is already loaded" if name in self.models
                               else f"model '{name}' is being loaded")
            self.loading.add(name)
        try:
            if not path.is_dir():
                raise NotFound(f"no model at {url}: the folder does not exist", plain=True)
            try:
                kind = _kind(path)
            except ModelNotFound:
                raise NotFound(f"no model at {url}: expected <version>/saved_model.pb, <name>/<version>/"
                               f"saved_model.pb, saved_model.pb or a .keras/.h5 file in it", plain=True) from None
            try:
                code = usercode.locate_in(path, self.universal)
            except usercode.UserCodeSetupError as exc:
                raise ServeError(f"model '{name}': {exc}") from None
            # what a model costs beyond its weights depends on its loader and on whether its own code
            # runs (a model_fn may hold anything): the last load of the same kind is the estimate
            kind = f"{kind}, {'with code' if code else 'default path'}"
            need, limit, used = self.estimate(path, kind), memory_limit(), memory_used()
            if used + need > HEADROOM * limit:
                raise InsufficientMemory(
                    f"model '{name}' would need about {need >> 20} MiB; {used >> 20} of {limit >> 20} MiB are in use "
                    f"(loading stops at {int(HEADROOM * 100)}%); unload a model first")
            before = _rss()
            started = time.perf_counter()
            try:
                models = load_model_dir(path, code, self.settings, module_name=f"inference_{name}", scripts_here=True)
            except StartupFailure as exc:  # this model only: the others keep serving
                raise ServeError(f"model '{name}' could not be loaded: {exc}") from None
            cost = max(0, _rss() - before)
            disk = _disk_bytes(path)
            self.overhead[kind] = max(0, cost - int(WEIGHT_FACTOR * disk))
            with self.lock:
                self.models[name] = Loaded(name, url, models, kind, disk, cost)
            log.info("loaded model '%s' from %s in %.2f s: %s, %d KiB on disk, resident +%d KiB", name, url,
                     time.perf_counter() - started, kind, disk >> 10, cost >> 10)
            return {"modelName": name, "modelUrl": url}
        finally:
            with self.lock:
                self.loading.discard(name)

    def unload(self, name: str) -> dict:
        with self.lock:
            loaded = self.models.pop(name, None)
        if loaded is None:
            raise NotFound(f"model '{name}' is not loaded")
        for servable in (loaded.models.servables or []):
            servable.batcher.close()
        before = _rss()
        del loaded
        gc.collect()
        malloc_trim()
        freed = before - _rss()
        log.info("unloaded model '%s': resident -%d KiB", name, max(0, freed) >> 10)
        return {"modelName": name, "freed_bytes": max(0, freed)}

    def invoke(self, name: str, invocation: Invocation, default_path: bool) -> Result:
        loaded = self.models.get(name)
        if loaded is None:
            raise NotFound(f"model '{name}' is not loaded; SageMaker loads it (POST /models) and retries")
        handler = loaded.models.handler
        if default_path:  # TF Serving's REST route, which AWS-container scripts post to (context.rest_uri)
            handler = next((h for h in (handler, getattr(handler, "_default", None))
                            if isinstance(h, DefaultHandler)), None)
            if handler is None:
                raise BadRequest(f"model '{name}' has no default path (its model comes from model_fn)")
        if isinstance(handler, DefaultHandler):
            # the URL names the model; tfs-model-version and tfs-method still choose within its archive
            target = Target.from_attributes(invocation.custom_attributes)
            return handler.handle(invocation, Target(None, target.version, target.method))
        return handler.handle(invocation)
