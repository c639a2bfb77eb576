"""Multi-model endpoints (SAGEMAKER_MULTI_MODEL=true): the model process's registry of models that
SageMaker loads and unloads by name through /models.

SageMaker downloads a model's archive to /opt/ml/models/<name>/model when a request first names
it, then calls POST /models; when memory runs short it calls DELETE /models/<name>. Each model
dir is loaded as a single-model server would load /opt/ml/model (any layout, any SavedModel, its
own code/inference.py in either style, or the universal code/ at the root of the models folder).

Names are checked before anything loads (``serve.contract.model_names``), and a ``url`` must
resolve, symlinks followed, to a folder inside the models root: anything else is a 400 that says
only that (never whether a folder outside exists), and any error reading a path inside is a 404.

Memory is decided before loading, never by an out-of-memory kill: a model is expected to cost
its size on disk (x1.2) plus the per-model overhead that the last load of the same kind actually
cost beyond that (resident memory measured before and after); it is refused with 507 when that,
plus what the loads already in progress were promised, would take the container past 90% of the
memory it may use. Used memory is what the kernel cannot reclaim: in a cgroup with a limit (v2,
then v1) its usage less its inactive page cache (the working set, as the kubelet counts it), else
the machine's MemTotal - MemAvailable.

Unloading takes the name away at once (new invokes get 404), waits for the invokes in flight to
get their answers (up to SAGEMAKER_MODEL_SERVER_TIMEOUT, which bounds them anyway), then closes
the batchers and drops everything the model's code brought: its module and every module imported
from its code folder (sys.modules), its folders on sys.path, and the references; then collects
and hands freed memory back to the system (malloc_trim).
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import logging
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from serve import usercode
from serve.contract.errors import BadRequest, NotFound, ServeError
from serve.contract.memory import malloc_trim
from serve.contract.handlers import DefaultHandler, Invocation, Result, Target
from serve.contract.signature import version_status
from serve.contract.model_names import check_model_name
from serve.contract.readiness import loading_dir, refused_dir
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
    code: usercode.CodeLocation | None = None
    module_name: str | None = None
    loaded_at: float = field(default_factory=time.time)
    in_flight: int = 0


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


CGROUP = Path("/sys/fs/cgroup")


def _stat_value(path: Path, key: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        return None
    return None


def cgroup_memory(root: Path = CGROUP) -> tuple[int, int] | None:
    """(limit, working set) of the cgroup this process is in, when it has a memory limit (v2, then
    v1): the usage less the inactive page cache, which the kernel drops before it would kill."""
    for limit_file, usage_file, inactive_key in (("memory.max", "memory.current", "inactive_file"),
                                                 ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes",
                                                  "total_inactive_file")):
        limit = _read_int(str(root / limit_file))
        usage = _read_int(str(root / usage_file))
        if limit is None or usage is None or not 0 < limit < (1 << 60):
            continue
        stat = root / Path(limit_file).parent / "memory.stat"
        inactive = _stat_value(stat, inactive_key) or 0
        return limit, max(0, usage - inactive)
    return None


def memory_limit_and_used(root: Path = CGROUP) -> tuple[int, int]:
    """Bytes the container may use, and the bytes it uses that the kernel could not reclaim."""
    cgroup = cgroup_memory(root)
    if cgroup is not None:
        return cgroup
    info = _meminfo()
    return info["MemTotal"], info["MemTotal"] - info["MemAvailable"]


class MemoryBudget:
    """The 507 check: a load goes ahead only if what it needs, on top of what is used and what the
    loads in progress were promised, stays under HEADROOM of the limit; its promise is held until
    it has finished (by then what it took shows in the used figure)."""

    def __init__(self, measure=memory_limit_and_used):
        self._measure = measure
        self._lock = threading.Lock()
        self.reserved = 0

    @contextlib.contextmanager
    def reserve(self, name: str, need: int):
        with self._lock:
            limit, used = self._measure()
            if used + self.reserved + need > HEADROOM * limit:
                busy = f", {self.reserved >> 20} MiB promised to loads in progress" if self.reserved else ""
                raise InsufficientMemory(
                    f"model '{name}' would need about {need >> 20} MiB; {used >> 20} of {limit >> 20} MiB are in use"
                    f"{busy} (loading stops at {int(HEADROOM * 100)}%); unload a model first")
            self.reserved += need
        try:
            yield
        finally:
            with self._lock:
                self.reserved -= need


def _rss() -> int:
    """This process's resident memory (the image carries no psutil)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _kind(path: Path) -> str:
    locations = [loc for versions in find_models(path).values() for loc in versions]
    return locations[0].kind if locations else "unknown"


def _module_name(name: str) -> str:
    """The user module's name in sys.modules: an identifier, one per model name."""
    return "inference_" + hashlib.sha256(name.encode()).hexdigest()[:16]


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


class MultiModelService:
    def __init__(self, settings, universal_code: usercode.CodeLocation | None, run_dir: Path | None = None,
                 index: int = 0):
        self.settings = settings
        self.run_dir = run_dir
        self.index = index
        self.universal = universal_code
        self.models: dict[str, Loaded] = {}
        self.loading: set[str] = set()
        self.overhead: dict[str, int] = {}
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)   # an invoke finished
        self.budget = MemoryBudget()
        self.unload_wait = settings.model_server_timeout
        self.style = "multi-model"
        self.servables = None

    # -- what the HTTP workers ask ---------------------------------------------------------------

    def describe(self) -> dict:
        return {"style": self.style, "default": None, "models": [], "pid": 0, "multi_model": True}

    def entry(self, name: str) -> dict:
        loaded = self.models.get(name)
        if loaded is None:
            raise NotFound(f"model '{name}' is not loaded; load it with POST /models")
        servables = loaded.models.servables
        # the versions of the model its archive serves by default: TF Serving's GET /v1/models/NAME
        versions = servables.versions(servables.default) if servables is not None else [None]
        return {"modelName": loaded.name, "modelUrl": loaded.url, "versions": versions}

    def list(self) -> dict:
        """Every loaded model's TF Serving status by name (the versions its archive serves by
        default, highest first), as AWS's container answers GET /models."""
        with self.lock:
            names = sorted(self.models)
        statuses = {}
        for name in names:
            try:
                statuses[name] = version_status(self.entry(name)["versions"][::-1])
            except NotFound:  # unloaded meanwhile
                continue
        return statuses

    def estimate(self, path: Path, kind: str) -> int:
        return int(WEIGHT_FACTOR * _disk_bytes(path)) + self.overhead.get(kind, DEFAULT_OVERHEAD)

    def confine(self, url: str) -> Path:
        """URL's folder, symlinks followed, if it is inside the models root. What is outside is
        refused without looking at it, so the answer says nothing of what exists there."""
        root = Path(os.path.realpath(self.settings.models_dir))
        outside = BadRequest(f"url must name a folder inside {self.settings.models_dir} (SageMaker's "
                             f"{self.settings.models_dir}/<model_name>/model)")
        try:
            path = Path(os.path.realpath(url))   # symlinks followed as far as the path exists
        except (OSError, ValueError):            # a NUL byte, a loop: nothing inside is named so
            raise outside from None
        if not os.path.isabs(url) or not _inside(path, root) or path == root:
            raise outside
        try:
            if not path.is_dir():
                raise NotFound(f"no model at {url}: the folder does not exist", plain=True)
        except OSError:  # a part too long, no permission: the same answer as a missing folder
            raise NotFound(f"no model at {url}: the folder does not exist", plain=True) from None
        return path

    def _refusal(self, name: str) -> str | None:
        if self.run_dir is None:
            return None
        try:
            return (refused_dir(self.run_dir) / _module_name(name)).read_text()
        except OSError:
            return None

    @contextlib.contextmanager
    def _loading_mark(self, name: str):
        """A file naming the load while it is under way: if this process dies meanwhile, the master
        counts it against the model (serve.supervision.blame_loads)."""
        if self.run_dir is None:
            yield
            return
        mark = loading_dir(self.run_dir, self.index) / _module_name(name)
        mark.parent.mkdir(exist_ok=True)
        mark.write_text(name)
        try:
            yield
        finally:
            mark.unlink(missing_ok=True)

    def load(self, name: str, url: str) -> dict:
        check_model_name(name)
        refusal = self._refusal(name)
        if refusal:
            raise ServeError(refusal)
        path = self.confine(url)
        with self.lock:
            if name in self.models or name in self.loading:
                raise Conflict(f"model '{name}' is already loaded" if name in self.models
                               else f"model '{name}' is being loaded")
            self.loading.add(name)
        try:
            try:
                kind = _kind(path)
            except ModelNotFound:
                raise NotFound(f"no model at {url}: expected <version>/saved_model.pb, <name>/<version>/"
                               f"saved_model.pb, saved_model.pb or a .keras/.h5 file in it", plain=True) from None
            except OSError:
                raise NotFound(f"no model at {url}: its folder cannot be read", plain=True) from None
            try:
                code = usercode.locate_in(path, self.universal, self.settings)
            except usercode.UserCodeSetupError as exc:
                raise ServeError(f"model '{name}': {exc}") from None
            # what a model costs beyond its weights depends on its loader and on whether its own code
            # runs (a model_fn may hold anything): the last load of the same kind is the estimate
            kind = f"{kind}, {'with code' if code else 'default path'}"
            module_name = _module_name(name)
            with self.budget.reserve(name, self.estimate(path, kind)), self._loading_mark(name):
                before = _rss()
                started = time.perf_counter()
                try:
                    models = load_model_dir(path, code, self.settings, module_name=module_name, scripts_here=True)
                except StartupFailure as exc:  # this model only: the others keep serving
                    _forget_code(module_name, code, self.universal, keep=self._code_dirs())
                    raise ServeError(f"model '{name}' could not be loaded: {exc}") from None
                cost = max(0, _rss() - before)
            disk = _disk_bytes(path)
            self.overhead[kind] = max(0, cost - int(WEIGHT_FACTOR * disk))
            with self.lock:
                self.models[name] = Loaded(name, url, models, kind, disk, cost, code, module_name)
            log.info("loaded model '%s' from %s in %.2f s: %s, %d KiB on disk, resident +%d KiB", name, url,
                     time.perf_counter() - started, kind, disk >> 10, cost >> 10)
            return {"modelName": name, "modelUrl": url}
        finally:
            with self.lock:
                self.loading.discard(name)

    def _code_dirs(self) -> set[Path]:
        with self.lock:
            return {m.code.directory for m in self.models.values() if m.code is not None}

    def unload(self, name: str) -> dict:
        with self.lock:
            loaded = self.models.pop(name, None)
            if loaded is None:
                raise NotFound(f"model '{name}' is not loaded")
            # invokes already under way get their answers; new ones get 404 from here on
            deadline = time.monotonic() + self.unload_wait
            while loaded.in_flight and time.monotonic() < deadline:
                self.idle.wait(max(0.0, deadline - time.monotonic()))
            waited_for = loaded.in_flight
        if waited_for:
            log.warning("unloading model '%s' with %d invokes still running after %d s", name, waited_for,
                        self.unload_wait)
        for servable in (loaded.models.servables or []):
            servable.batcher.close()
            servable.model.close()   # no call of it is under way: every invoke ended, or timed out above
        _forget_code(loaded.module_name, loaded.code, self.universal, keep=self._code_dirs())
        before = _rss()
        del loaded
        gc.collect()
        malloc_trim()
        freed = before - _rss()
        log.info("unloaded model '%s': resident -%d KiB", name, max(0, freed) >> 10)
        return {"modelName": name, "freed_bytes": max(0, freed)}

    def invoke(self, name: str, invocation: Invocation, default_path: bool) -> Result:
        with self.lock:
            loaded = self.models.get(name)
            if loaded is None:
                raise NotFound(f"model '{name}' is not loaded; SageMaker loads it (POST /models) and retries")
            loaded.in_flight += 1
        try:
            return self._invoke(loaded, invocation, default_path)
        finally:
            with self.lock:
                loaded.in_flight -= 1
                self.idle.notify_all()

    def _invoke(self, loaded: Loaded, invocation: Invocation, default_path: bool) -> Result:
        name = loaded.name
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


def _forget_code(module_name: str | None, code: usercode.CodeLocation | None,
                 universal: usercode.CodeLocation | None, keep: set[Path]) -> None:
    """Take a model's code out of this process: its module, every module loaded from its code
    folder (helpers in code/ and code/lib) or from the packages its requirements installed, and
    those folders on sys.path (the packages folder is deleted), unless another loaded model (or
    the universal code) uses the same folder."""
    if module_name:
        sys.modules.pop(module_name, None)
    if code is None or (universal is not None and code.directory == universal.directory) or code.directory in keep:
        return
    folders = [str(code.directory)] + ([str(code.packages)] if code.packages else [])
    for mod_name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None)
        if where and any(where == f or where.startswith(f + os.sep) for f in folders):
            sys.modules.pop(mod_name, None)
    for entry in folders + [str(code.directory / "lib")]:
        while entry in sys.path:
            sys.path.remove(entry)
        sys.path_importer_cache.pop(entry, None)
    importlib.invalidate_caches()
    if code.packages:
        shutil.rmtree(code.packages, ignore_errors=True)
