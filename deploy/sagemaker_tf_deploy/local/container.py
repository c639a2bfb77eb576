"""Local mode: run the image on this machine the way SageMaker runs it on an instance.

    docker run -v MODEL:/opt/ml/model:ro -p 127.0.0.1:PORT:8080 -e ... [--platform P] IMAGE serve

The model archive is unpacked with the same safety checks as everywhere else; the same
environment as `deploy create` is passed; /ping is polled until the model is loaded; then the
container serves until Ctrl-C, or answers one request (--invoke FILE) and is stopped.
"""

from __future__ import annotations

import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import requests

from ..core import archive
from ..core.defaults import default_env
from ..core.errors import DeployError

_SECRETISH = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|API_KEY", re.I)
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(kw_only=True)
class ServeSpec:
    """How `deploy local` runs the image to serve, with a model (LocalSpec) or as a multi-model
    endpoint (multimodel.LocalMultiSpec)."""
    image: str
    port: int = 8080
    host_ip: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    region: str | None = None
    platform: str | None = None
    ping_timeout: float = 600.0
    stop_timeout: int = 30
    stream_logs: bool = True


@dataclass(kw_only=True)
class LocalSpec(ServeSpec):
    model_data: str
    invoke_file: Path | None = None
    content_type: str = "application/json"
    accept: str | None = None


@dataclass
class LocalResult:
    status_code: int | None = None
    body: bytes = b""
    content_type: str = ""
    container_exit_code: int | None = None
    startup_seconds: float | None = None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def host_arch() -> str:
    return _ARCH.get(platform.machine().lower(), platform.machine().lower())


def docker(*args: str, check: bool = True, timeout: float | None = 120) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise DeployError("the docker CLI is not installed (local mode runs the image with docker)") from exc
    if check and proc.returncode != 0:
        raise DeployError(f"docker {args[0]} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def image_platform(image: str, info: Callable[[str], None]) -> str:
    """'linux/arm64' for a local image; pulls it first when the engine does not have it."""
    fmt = "{{.Os}}/{{.Architecture}}"
    proc = docker("image", "inspect", "--format", fmt, image, check=False)
    if proc.returncode != 0:
        info(f"pulling {image}")
        docker("pull", "-q", image, timeout=1800)
        proc = docker("image", "inspect", "--format", fmt, image)
    return proc.stdout.strip()


def prepare_model_dir(model_data: str, workdir: Path, download: Callable[[str, Path], None] | None) -> Path:
    """A folder to mount at /opt/ml/model: the folder itself, or the archive safely unpacked."""
    if model_data.startswith("s3://"):
        if download is None:
            raise DeployError("an s3:// model needs AWS access")
        tarball = workdir / "model.tar.gz"
        download(model_data, tarball)
    else:
        path = Path(model_data)
        if not path.exists():
            raise DeployError(f"model data {model_data} does not exist")
        if path.is_dir():
            archive.find_model(path)
            return path.resolve()
        tarball = path
    target = workdir / "model"
    archive.safe_extract(tarball, target)
    archive.find_model(target)
    return target.resolve()


def running_state(name: str) -> tuple[bool, int | None]:
    proc = docker("inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", name, check=False)
    if proc.returncode != 0:
        return False, None
    running, code = proc.stdout.split()
    return running == "true", int(code)


def run(spec: LocalSpec, info: Callable[[str], None],
        download: Callable[[str, Path], None] | None = None,
        on_ready: Callable[[str], None] | None = None) -> LocalResult:
    result = LocalResult()
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deploy-local-")))
        os.chmod(workdir, 0o755)
        model_dir = prepare_model_dir(spec.model_data, workdir, download)
        plat = engine_platform(spec.image, spec.platform, info)
        env = container_env(spec.region, archive.has_user_code(model_dir), spec.env)
        name = start_container(stack, spec.image, plat, env, info, volume=f"{model_dir}:/opt/ml/model:ro",
                     publish=f"{spec.host_ip}:{spec.port}:8080", stream_logs=spec.stream_logs)
        url = f"http://{'127.0.0.1' if spec.host_ip in ('0.0.0.0', '') else spec.host_ip}:{spec.port}"
        try:
            start = time.monotonic()
            wait_for_ping(url, name, spec.ping_timeout, start)
            result.startup_seconds = time.monotonic() - start
            info(f"serving on {url} (ready after {result.startup_seconds:.1f} s)")
            if on_ready:
                on_ready(url)
            if spec.invoke_file is not None:
                body = Path(spec.invoke_file).read_bytes()
                headers = {"Content-Type": spec.content_type}
                if spec.accept:
                    headers["Accept"] = spec.accept
                resp = requests.post(f"{url}/invocations", data=body, headers=headers, timeout=300)
                result.status_code = resp.status_code
                result.body = resp.content
                result.content_type = resp.headers.get("Content-Type", "")
            else:
                info("press Ctrl-C to stop")
                while True:
                    running, code = running_state(name)
                    if not running:
                        result.container_exit_code = code
                        raise DeployError(f"the container exited on its own with code {code}")
                    time.sleep(1)
        except KeyboardInterrupt:
            info("stopping")
        finally:
            result.container_exit_code = stop_container(name, spec.stop_timeout, info)
    return result


def engine_platform(image: str, requested: str | None, info: Callable[[str], None], *,
                    emulator_check: bool = True) -> str | None:
    """The --platform to run IMAGE with: REQUESTED, else the image's own when it is not this
    host's (emulated). Refuses when no Docker engine answers and, with EMULATOR_CHECK, when an
    arm64 image would need a qemu-aarch64 that is not registered."""
    if docker("version", "--format", "{{.Server.Version}}", check=False).returncode != 0:
        raise DeployError("no Docker engine is answering (is dockerd running?)")
    image_plat = image_platform(image, info)
    plat = requested
    if plat is None and image_plat.split("/")[-1] != host_arch():
        plat = image_plat
        if emulator_check and image_plat.endswith("arm64") \
                and not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists() and host_arch() != "arm64":
            raise DeployError(f"{image} is {image_plat} and this host is {host_arch()} with no "
                              "qemu-aarch64 emulation registered: apt-get install qemu-user-static "
                              "binfmt-support && update-binfmts --enable qemu-aarch64")
        info(f"{image} is {image_plat}: running it under emulation (--platform {plat})")
    return plat


def container_env(region: str | None, has_user_code: bool, env: dict[str, str]) -> dict[str, str]:
    """What `deploy create` would give the container, then ENV; no SAGEMAKER_REGION when no
    region is known (and ENV does not set one)."""
    out = {**default_env(region or "", has_user_code), **env}
    if not region and "SAGEMAKER_REGION" not in env:
        out.pop("SAGEMAKER_REGION")
    return out


def start_container(stack: ExitStack, image: str, plat: str | None, env: dict[str, str],
                    info: Callable[[str], None], *, volume: str, publish: str, stream_logs: bool,
                    extra: list[str] | None = None) -> str:
    """`docker run -d` IMAGE serve with the model VOLUME, the port PUBLISHed, PLAT, EXTRA docker
    flags and ENV, shown (secrets masked); the container is removed when STACK closes, its log
    streamed with STREAM_LOGS, and until then SIGTERM and SIGINT raise KeyboardInterrupt.
    Returns the container's name."""
    name = f"deploy-local-{secrets.token_hex(4)}"
    cmd = ["run", "-d", "--name", name, "-v", volume, "-p", publish]
    if plat:
        cmd += ["--platform", plat]
    cmd += extra or []
    for key, value in env.items():
        cmd += ["-e", f"{key}={value}"]
    cmd += [image, "serve"]
    info("docker " + " ".join(masked(cmd)))
    docker(*cmd)
    stack.callback(docker, "rm", "-f", name, check=False)
    if stream_logs:
        logs = subprocess.Popen(["docker", "logs", "-f", name], stdout=None, stderr=None,
                                stdin=subprocess.DEVNULL)
        stack.callback(stop_process, logs)
    # SIGTERM (from a CI runner, say) ends local mode like Ctrl-C does; SIGINT is set too,
    # because a shell's background job starts with SIGINT ignored and Python keeps that.
    for signum in (signal.SIGTERM, signal.SIGINT):
        stack.callback(signal.signal, signum, signal.signal(signum, raise_interrupt))
    return name


def stop_container(name: str, timeout: int, info: Callable[[str], None]) -> int | None:
    """Stop container NAME (TIMEOUT seconds before docker kills it); its exit code."""
    running, code = running_state(name)
    if running:
        docker("stop", "-t", str(timeout), name, check=False, timeout=timeout + 60)
        running, code = running_state(name)
    info(f"container {name} stopped (exit code {code})")
    return code


def masked(cmd: list[str]) -> list[str]:
    """The command line with values of secret-looking variables hidden."""
    out = []
    for part in cmd:
        key, sep, _ = part.partition("=")
        if sep and _SECRETISH.search(key) and out and out[-1] == "-e":
            part = f"{key}=***"
        out.append(part)
    return out


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for_ping(url: str, name: str, timeout: float, start: float) -> None:
    while True:
        try:
            if requests.get(f"{url}/ping", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        running, code = running_state(name)
        if not running:
            logs = docker("logs", "--tail", "30", name, check=False)
            tail = (logs.stdout + logs.stderr).strip()
            raise DeployError(f"the container exited with code {code} before /ping answered 200"
                              + (f"; last log lines:\n{tail}" if tail else ""))
        if time.monotonic() - start > timeout:
            raise DeployError(f"/ping did not answer 200 within {timeout:.0f} s (--ping-timeout)")
        time.sleep(1)


def which_docker() -> str | None:
    return shutil.which("docker")
