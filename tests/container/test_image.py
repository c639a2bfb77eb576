"""The images themselves, as SageMaker runs them: metadata, contents, start-up, port
(shutdown, worker death and size limits are in tests/host/test_server.py).

Both images are built once per session by tests/fixtures/docker.py (./build.sh --load); the
arm64 one is built and run under qemu emulation. The HTTP contract is tested against both
containers by tests/container/test_contract.py; here is what is specific to the image.
"""
from __future__ import annotations

import json

import pytest
import requests

from tests.fixtures.docker import REPO, docker, start_container

# The first test to need an image builds it (arm64 under qemu: up to ~30 min cold).
pytestmark = [pytest.mark.container, pytest.mark.timeout(3600)]

ARCHS = [pytest.param("amd64", id="amd64"),
         pytest.param("arm64", id="arm64", marks=pytest.mark.arm64)]
# docker image inspect .Size (uncompressed, what `docker images` shows): issue 27's bound for both.
# Measured figures are in docs/images.md ("Sizes and build times").
MAX_SIZE_BYTES = {"amd64": 1_200_000_000, "arm64": 1_200_000_000}
TF_DIST = {"amd64": "tensorflow-cpu", "arm64": "tensorflow"}
MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}
SAGEMAKER_PORT_LABEL = "com.amazonaws.sagemaker.capabilities.accept-bind-to-port"


@pytest.fixture(params=ARCHS)
def arch(request) -> str:
    return request.param


@pytest.fixture
def image(arch, request) -> str:
    return request.getfixturevalue(f"image_{arch}")


def inspect(image: str) -> dict:
    return json.loads(docker("image", "inspect", image).stdout)[0]


def run_in_image(image: str, *cmd: str, timeout: float = 180) -> str:
    """docker run --rm IMAGE CMD... (through the entrypoint, as a user would); returns stdout."""
    proc = docker("run", "--rm", image, *cmd, check=False, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}: {proc.stderr}"
    return proc.stdout


def test_platform_and_architecture(image, arch):
    meta = inspect(image)
    assert (meta["Os"], meta["Architecture"]) == ("linux", arch)
    # The binaries really are for that machine (run natively or under qemu).
    out = run_in_image(image, "python", "-c",
                       "import platform, sys; print(platform.machine(), sys.version_info[0], "
                       "sys.version_info[1], sys.prefix)")
    machine, major, minor, prefix = out.split()
    assert machine == MACHINE[arch]
    assert (int(major), int(minor)) == (3, 13), "Debian trixie's python3 is 3.13"
    assert prefix == "/opt/venv"


def test_labels_ports_entrypoint_and_env_defaults(image):
    config = inspect(image)["Config"]
    assert config["Labels"][SAGEMAKER_PORT_LABEL] == "true"
    assert "8080/tcp" in config["ExposedPorts"]
    # Exec form (a JSON list, no /bin/sh -c) so that `serve` ends up as PID 1 and gets SIGTERM.
    assert config["Entrypoint"] == ["/opt/container/entrypoint.sh"]
    assert config["Cmd"] == ["serve"]
    env = dict(item.split("=", 1) for item in config["Env"])
    # decided at start by serve/contract/tuning.py (the one place), not baked into the image
    assert "DNNL_DEFAULT_FPMATH_MODE" not in env and "TF_ENABLE_ONEDNN_OPTS" not in env
    assert env["PATH"].split(":")[0] == "/opt/venv/bin"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_installed_stack_is_the_lock_and_nothing_more(image, arch):
    """TensorFlow flavour per arch, the serve package, pip check clean, no build leftovers."""
    script = r"""
import importlib.metadata as md, json, os, re, shutil, subprocess, sys
dists = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in md.distributions()}  # PEP 503
def files(path):
    return [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f != "lock"]
leftovers = files("/root/.cache") + files("/var/lib/apt/lists") + files("/tmp") + files("/opt/ml")
print(json.dumps({
    "dists": dists,
    "pip_check": subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True).returncode,
    "compilers": [c for c in ("gcc", "cc", "g++", "make") if shutil.which(c)],
    "leftovers": leftovers,
    "serve": shutil.which("serve"),
}))
"""
    info = json.loads(run_in_image(image, "python", "-c", script))
    dists = info["dists"]
    assert dists[TF_DIST[arch]] == "2.21.0"
    other = {"amd64": "tensorflow", "arm64": "tensorflow-cpu"}[arch]
    assert other not in dists, f"{other} must not be installed next to {TF_DIST[arch]}"
    assert "sagemaker-tf-graviton" in dists
    assert info["serve"] == "/opt/venv/bin/serve"
    assert info["pip_check"] == 0
    assert info["compilers"] == []
    assert info["leftovers"] == []
    # Every distribution in the image is pinned by the arch's lock file (plus pip and the project).
    lock = (REPO / "container" / f"requirements-{arch}.txt").read_text()
    pins = {line.split("==")[0]: line.split("==")[1].split()[0]
            for line in lock.splitlines() if "==" in line and not line.startswith("#")}
    extra = set(dists) - set(pins) - {"pip", "sagemaker-tf-graviton"}
    assert not extra, f"installed but not in the lock: {sorted(extra)}"
    wrong = {n: (dists.get(n), v) for n, v in pins.items() if dists.get(n) != v}
    assert not wrong, f"installed versions differ from the lock: {wrong}"


def test_image_size_within_bound(image, arch):
    size = inspect(image)["Size"]
    assert size < MAX_SIZE_BYTES[arch], f"{arch} image is {size / 1e6:.0f} MB"


def test_trimmed_of_build_files_only(image, arch):
    """container/slim.sh's removals are there, and what serving, users' requirements.txt and a
    fast start need is not removed: pip and setuptools work, every .pyc is fresh (copied with its
    source's mtime, or TensorFlow's import would compile it on every start), shared libraries
    have no symbol table left but still load (numpy's, TensorFlow's framework library)."""
    script = r"""
import importlib.util, json, os, subprocess, sys, sysconfig
site = sysconfig.get_paths()["purelib"]
stale = checked = 0
for d, _, fs in os.walk(site):
    for f in fs:
        if not f.endswith(".py"):
            continue
        src = os.path.join(d, f)
        pyc = importlib.util.cache_from_source(src)
        if not os.path.exists(pyc):
            continue
        with open(pyc, "rb") as fh:
            head = fh.read(16)
        st = os.stat(src)
        checked += 1
        flags = int.from_bytes(head[4:8], "little")
        if flags == 0 and (int.from_bytes(head[8:12], "little") != int(st.st_mtime) & 0xFFFFFFFF
                           or int.from_bytes(head[12:16], "little") != st.st_size & 0xFFFFFFFF):
            stale += 1
def symtab(path):
    with open(path, "rb") as fh:
        return b".symtab" in fh.read()
import ctypes
framework = os.path.join(site, "tensorflow", "libtensorflow_framework.so.2")
ctypes.CDLL(framework)
print(json.dumps({
    "include": os.path.exists(os.path.join(site, "tensorflow", "include")),
    "libclang": [f for f in os.listdir(os.path.join(site, "clang", "native")) if ".so" in f]
                if os.path.isdir(os.path.join(site, "clang", "native")) else [],
    "static": [os.path.join(d, f) for d, _, fs in os.walk(site) for f in fs if f.endswith(".a")],
    "symtab": symtab(framework),
    "pip": subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode,
    "setuptools": importlib.util.find_spec("setuptools") is not None,
    "pyc": [checked, stale],
}))
"""
    info = json.loads(run_in_image(image, "python", "-c", script, timeout=300))
    assert info["include"] is False and info["libclang"] == [] and info["static"] == []
    assert info["symtab"] is False, "libtensorflow_framework.so.2 still has its symbol table (not stripped)"
    assert info["pip"] == 0 and info["setuptools"], "pip and setuptools must stay (code/requirements.txt)"
    checked, stale = info["pyc"]
    assert checked > 3000 and stale == 0, f"{stale} of {checked} .pyc files are stale"


def test_train_is_refused_with_a_message(image_amd64):
    proc = docker("run", "--rm", image_amd64, "train", check=False)
    assert proc.returncode == 2
    assert "does not implement SageMaker training" in proc.stderr


def test_bind_to_port_moves_the_port(image_amd64, mlp_model_dir):
    with start_container(image_amd64, mlp_model_dir, env={"SAGEMAKER_BIND_TO_PORT": "9091"}) as c:
        assert c.container_port == 9091
        assert requests.get(f"{c.url}/ping", timeout=5).status_code == 200
        probe = ("import socket\n"
                 "def up(p):\n"
                 "    s = socket.socket(); s.settimeout(2)\n"
                 "    try: return s.connect_ex(('127.0.0.1', p)) == 0\n"
                 "    finally: s.close()\n"
                 "print(up(9091), up(8080))")
        out = c.exec("python", "-c", probe)
        assert out.stdout.split() == ["True", "False"], out.stdout + out.stderr
