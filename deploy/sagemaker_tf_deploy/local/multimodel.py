"""`deploy local --multi-model DIR`: the image run as a multi-model instance runs it, with SageMaker's
part played here.

The container gets SAGEMAKER_MULTI_MODEL=true and an empty models folder mounted read-only at
/opt/ml/models; a proxy on the published port speaks the SageMaker runtime protocol: boto3's
invoke_endpoint(EndpointName=..., TargetModel="a.tar.gz") pointed at it with endpoint_url works
as is (the proxy ignores signatures), and so does a plain POST /invocations with the header
X-Amzn-SageMaker-Target-Model. When the target is not loaded, the proxy unpacks DIR/<target>
with the safe unpacker (deploy/model_archive/archives.py) into models/<name>/model, calls POST /models and
retries; on 507 it unloads the least recently used model (DELETE /models/<name>, its folder
removed) and tries again, until the model loads or nothing is left to unload.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import requests

from ..core import archive, defaults, interrupts, target_models
from ..core.errors import DeployError, UsageError
from . import container as local

TARGET_HEADER = "X-Amzn-SageMaker-Target-Model"
ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
CONTAINER_MODELS = "/opt/ml/models"


class ProxyError(Exception):
    """An answer the proxy gives instead of the model's, in SageMaker runtime's error shape."""

    def __init__(self, status: int, code: str, message: str, original: tuple[int, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.original = status, code, original

    def body(self) -> bytes:
        doc = {"message": str(self), "__type": self.code}
        if self.original:
            doc["OriginalStatusCode"], doc["OriginalMessage"] = self.original
        return json.dumps(doc).encode()


@dataclass
class Loaded:
    target: str
    name: str
    loaded_at: float
    last_used: float
    invocations: int = 0


class Proxy:
    """SageMaker's part of a multi-model endpoint, for one container.

    ARCHIVES: the folder standing in for the S3 prefix (TARGET -> ARCHIVES/TARGET); MODELS: the host
    side of the container's /opt/ml/models (this class writes NAME/model folders there);
    CONTAINER_URL: the container's own address. Thread-safe; loads and unloads one at a time.
    """

    def __init__(self, archives: Path, models: Path, container_url: str, info: Callable[[str], None],
                 container_root: str = CONTAINER_MODELS, timeout: float = 900.0):
        self.archives, self.models = Path(archives).resolve(), Path(models)
        self.url, self.info, self.root, self.timeout = container_url.rstrip("/"), info, container_root, timeout
        self.loaded: OrderedDict[str, Loaded] = OrderedDict()     # least recently used first
        self.lock = threading.Lock()          # the LRU bookkeeping
        self.load_lock = threading.Lock()     # one load/unload sequence at a time
        self.events: list[dict] = []          # what the proxy did, for GET /local/models and tests

    def _event(self, kind: str, **what) -> None:
        with self.lock:
            self.events.append({"event": kind, "time": time.time(), **what})

    def archive_of(self, target: str) -> Path:
        try:
            target_models.check_target(target)
        except UsageError as exc:
            raise ProxyError(400, "ValidationError", str(exc)) from None
        path = (self.archives / target).resolve()
        if self.archives not in path.parents or not path.is_file():
            raise ProxyError(400, "ValidationError",
                             f"Failed to download model data for TargetModel {target!r}: there is no "
                             f"{target} under {self.archives} (the stand-in for the endpoint's S3 prefix)")
        return path

    # -- the container's /models API ------------------------------------------------------------

    def _unpack(self, target: str, name: str) -> None:
        dest = self.models / name
        if (dest / "model").is_dir():
            return
        tmp = self.models / f".{name}.{secrets.token_hex(3)}"
        try:
            archive.safe_extract(self.archive_of(target), tmp / "model")
        except DeployError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ProxyError(400, "ValidationError", f"TargetModel {target!r}: {exc}") from None
        for p in [tmp, *tmp.rglob("*")]:      # the container's user must read what we wrote
            if p.is_dir():
                os.chmod(p, 0o755)
            elif p.is_file():
                os.chmod(p, 0o644 | (p.stat().st_mode & 0o111))
        os.replace(tmp, dest)

    def _unload(self, name: str, why: str) -> None:
        with self.lock:
            entry = self.loaded.pop(name, None)
        r = requests.delete(f"{self.url}/models/{name}", timeout=self.timeout)
        shutil.rmtree(self.models / name, ignore_errors=True)
        target = entry.target if entry else name
        self.info(f"unloaded {target} ({why}): DELETE /models/{name} -> {r.status_code}, folder removed")
        self._event("unload", target=target, name=name, why=why, status=r.status_code)

    def load(self, target: str, name: str) -> None:
        """Unpack, POST /models, and on 507 unload the least recently used model and retry."""
        with self.load_lock:
            if requests.get(f"{self.url}/models/{name}", timeout=60).status_code == 200:
                self._touch(target, name, invoked=False)
                return
            self._unpack(target, name)
            started = time.monotonic()
            while True:
                r = requests.post(f"{self.url}/models", timeout=self.timeout,
                                  json={"model_name": name, "url": f"{self.root}/{name}/model"})
                if r.status_code in (200, 409):
                    seconds = time.monotonic() - started
                    self.info(f"loaded {target} as {name} in {seconds:.1f} s (POST /models -> {r.status_code})")
                    self._event("load", target=target, name=name, seconds=round(seconds, 2))
                    self._touch(target, name, invoked=False)
                    return
                message = _error_text(r)
                if r.status_code != 507:
                    shutil.rmtree(self.models / name, ignore_errors=True)
                    raise ProxyError(424, "ModelError", f"Failed to load TargetModel {target!r}: the container "
                                     f"answered POST /models with {r.status_code}: {message}",
                                     (r.status_code, message))
                with self.lock:
                    victims = [n for n in self.loaded if n != name]
                if not victims:
                    shutil.rmtree(self.models / name, ignore_errors=True)
                    self._event("refused", target=target, name=name, message=message)
                    raise ProxyError(507, "ModelError", f"TargetModel {target!r} does not fit in the container's "
                                     f"memory even with every other model unloaded: {message}", (507, message))
                self.info(f"{target}: 507 from POST /models ({message}); unloading the least recently used")
                self._unload(victims[0], f"least recently used, to make room for {target}")

    def _touch(self, target: str, name: str, invoked: bool = True) -> None:
        now = time.time()
        with self.lock:
            entry = self.loaded.pop(name, None) or Loaded(target, name, now, now)
            entry.last_used = now
            entry.invocations += 1 if invoked else 0
            self.loaded[name] = entry

    def invoke(self, target: str, body: bytes, headers: dict) -> requests.Response:
        name = target_models.container_name(target)
        self.archive_of(target)
        url = f"{self.url}/models/{name}/invoke"
        for attempt in (1, 2):
            r = requests.post(url, data=body, headers=headers, timeout=self.timeout)
            if r.status_code == 404 and attempt == 1 and \
                    requests.get(f"{self.url}/models/{name}", timeout=60).status_code == 404:
                with self.lock:
                    self.loaded.pop(name, None)       # gone from the container (restarted, say)
                self.load(target, name)
                continue
            break
        if r.status_code == 200:
            self._touch(target, name)
            return r
        message = _error_text(r)
        raise ProxyError(424, "ModelError", f"Received client error ({r.status_code}) from primary with message "
                         f"\"{message}\"" if r.status_code < 500 else
                         f"Received server error ({r.status_code}) from primary with message \"{message}\"",
                         (r.status_code, message))

    def status(self) -> dict:
        with self.lock:
            loaded = [{"target_model": e.target, "model_name": e.name, "invocations": e.invocations,
                       "last_used": _iso(e.last_used)} for e in self.loaded.values()]
            events = [dict(e, time=_iso(e["time"])) for e in self.events]
        archives = sorted(str(p.relative_to(self.archives)) for p in self.archives.rglob("*")
                          if p.is_file() and p.name.endswith((".tar.gz", ".tgz")))
        return {"archives": archives, "loaded": loaded, "events": events}


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="milliseconds")


def _error_text(r: requests.Response) -> str:
    try:
        doc = r.json()
        if isinstance(doc, dict):
            return str(doc.get("error") or doc.get("message") or doc)
    except ValueError:
        pass
    return r.text.strip()[:2000]


_FORWARD = ("Content-Type", "Accept", ATTRIBUTES_HEADER)


def make_handler(proxy: Proxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "deploy-local-mme"

        def log_message(self, fmt, *args):   # the proxy's own lines say what matters
            pass

        def _send(self, status: int, body: bytes, content_type: str = "application/json", extra=None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _error(self, exc: ProxyError) -> None:
            self._send(exc.status, exc.body(), extra={"x-amzn-ErrorType": f"{exc.code}:"})

        def do_GET(self):
            path = self.path.split("?")[0]
            if path == "/ping":
                try:
                    r = requests.get(f"{proxy.url}/ping", timeout=10)
                    self._send(r.status_code, r.content, r.headers.get("Content-Type", "application/json"))
                except requests.RequestException as exc:
                    self._send(502, json.dumps({"message": f"container: {exc}"}).encode())
            elif path == "/local/models":
                self._send(200, json.dumps(proxy.status(), indent=2).encode())
            else:
                self._send(404, json.dumps({"message": f"no route GET {path}: POST /invocations or "
                                            "/endpoints/NAME/invocations with X-Amzn-SageMaker-Target-Model; "
                                            "GET /ping, /local/models"}).encode())

        def do_POST(self):
            path = self.path.split("?")[0]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if path != "/invocations" and not re.match(r"^/endpoints/[^/]+/invocations$", path):
                return self._send(404, json.dumps({"message": f"no route POST {path}"}).encode())
            target = self.headers.get(TARGET_HEADER)
            if not target:
                return self._error(ProxyError(400, "ValidationError", "this is a multi-model endpoint: name the "
                                              "model with TargetModel (header X-Amzn-SageMaker-Target-Model)"))
            headers = {k: self.headers[k] for k in _FORWARD if self.headers.get(k)}
            try:
                r = proxy.invoke(target, body, headers)
            except ProxyError as exc:
                proxy.info(f"{target}: {exc.status} {exc}")
                return self._error(exc)
            except requests.RequestException as exc:
                return self._error(ProxyError(424, "ModelError", f"the container did not answer: {exc}"))
            extra = {"x-Amzn-Invoked-Production-Variant": defaults.VARIANT}
            if r.headers.get(ATTRIBUTES_HEADER):
                extra[ATTRIBUTES_HEADER] = r.headers[ATTRIBUTES_HEADER]
            self._send(200, r.content, r.headers.get("Content-Type", "application/json"), extra)

    return Handler


def serve_proxy(proxy: Proxy, host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(proxy))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="mme-proxy", daemon=True).start()
    return server


@dataclass(kw_only=True)
class LocalMultiSpec(local.ServeSpec):
    archives: Path
    memory: str | None = None


def run_local(spec: LocalMultiSpec, info: Callable[[str], None],
              on_ready: Callable[[str, Proxy], None] | None = None) -> int:
    """Run the image with SAGEMAKER_MULTI_MODEL=true and the proxy in front, until Ctrl-C/SIGTERM."""
    archives = Path(spec.archives)
    if not archives.is_dir():
        raise UsageError(f"--multi-model {archives}: not a folder (give the folder holding NAME.tar.gz archives, "
                         "as the endpoint's S3 prefix would)")
    found = sorted(p.relative_to(archives) for p in archives.rglob("*") if p.name.endswith((".tar.gz", ".tgz")))
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deploy-local-mme-")))
        models = work / "models"
        models.mkdir()
        os.chmod(work, 0o755)
        os.chmod(models, 0o755)
        plat = local.engine_platform(spec.image, spec.platform, info, emulator_check=False)
        env = local.container_env(spec.region, False, {"SAGEMAKER_MULTI_MODEL": "true", **spec.env})
        cport = local.free_port()
        name = local.start_container(stack, spec.image, plat, env, info, volume=f"{models}:{CONTAINER_MODELS}:ro",
                                     publish=f"127.0.0.1:{cport}:8080", stream_logs=spec.stream_logs,
                                     extra=["--memory", spec.memory] if spec.memory else None)
        container_url = f"http://127.0.0.1:{cport}"
        try:
            start = time.monotonic()
            local.wait_for_ping(container_url, name, spec.ping_timeout, start)
            proxy = Proxy(archives, models, container_url, info)
            server = serve_proxy(proxy, spec.host_ip, spec.port)
            stack.callback(server.server_close)
            stack.callback(server.shutdown)
            shown = "127.0.0.1" if spec.host_ip in ("0.0.0.0", "") else spec.host_ip
            url = f"http://{shown}:{spec.port}"
            info(f"multi-model endpoint on {url} (container ready after {time.monotonic() - start:.1f} s); "
                 f"{len(found)} archive(s) in {archives}: {', '.join(map(str, found)) or 'none yet'}")
            info(f"  invoke: deploy invoke local --local {url} --target-model {found[0] if found else 'NAME.tar.gz'} "
                 "--json '...'")
            info("press Ctrl-C to stop")
            if on_ready:
                on_ready(url, proxy)
            while True:
                running, code = local.running_state(name)
                if not running:
                    raise DeployError(f"the container exited on its own with code {code}")
                time.sleep(1)
        except (KeyboardInterrupt, interrupts.Interrupted):
            info("stopping")
        finally:
            local.stop_container(name, spec.stop_timeout, info)
    return 0
