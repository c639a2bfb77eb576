"""A model's requirements.txt cannot break the server (issue 23, points 12 and 13): it installs into
a folder of its own, constrained to the server's versions, within a deadline.

The packages come from a local folder of wheels built here (``--no-index --find-links``), so
the tests need no package index; the black-hole index of the deadline test accepts connections
and never answers.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import requests

from tests.fixtures.server import start_host_server
from tests.host.test_startup import failed_start, the_failure_line

SCRIPT = """
import json
import smtest_extra


def input_fn(body, content_type):
    return json.loads(body)["instances"]


def output_fn(prediction, accept):
    return json.dumps({"extra": smtest_extra.VERSION}), "application/json"
"""


def build_wheel(folder: Path, name: str, version: str, module: str, body: str) -> Path:
    """A pure-Python wheel holding MODULE/__init__.py with BODY."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    files = {
        f"{module}/__init__.py": body,
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for member, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{member},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as whl:
        for member, text in files.items():
            whl.writestr(member, text)
    return path


def installed_here(module: str) -> str | None:
    """Where a fresh interpreter of this environment finds MODULE (None: nowhere)."""
    out = subprocess.run([sys.executable, "-c", f"import importlib.util as u; s = u.find_spec({module!r}); "
                                                "print(s.origin if s else '')"], capture_output=True, text=True)
    return out.stdout.strip() or None


def test_requirements_install_where_only_the_model_looks(mlp_model_dir, tmp_path):
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "smtest-extra", "1.2.3", "smtest_extra", "VERSION = '1.2.3'\n")
    model_dir = mlp_model_dir.with_code(tmp_path / "model", SCRIPT,
                                        requirements=f"--no-index\n--find-links {wheels}\nsmtest-extra==1.2.3\n")
    with start_host_server(model_dir) as server:
        r = requests.post(f"{server.url}/invocations", json={"instances": [[1, 2, 3, 4]]}, timeout=30)
        logs = server.logs()
    assert r.status_code == 200 and r.json() == {"extra": "1.2.3"}, r.text
    assert installed_here("smtest_extra") is None          # not in the server's site-packages
    assert "sagemaker-packages-" in logs


def test_a_requirement_that_would_change_the_servers_packages_is_refused(mlp_model_dir, tmp_path):
    ours = importlib.metadata.version("orjson")
    wheels = tmp_path / "wheels"
    build_wheel(wheels, "orjson", "3.0.0", "orjson", "raise ImportError('the model replaced the server orjson')\n")
    model_dir = mlp_model_dir.with_code(tmp_path / "model", "def input_fn(b, c):\n    return b\n",
                                        requirements=f"--no-index\n--find-links {wheels}\norjson==3.0.0\n")
    code, lines = failed_start(model_dir)
    line = the_failure_line(lines)
    assert code == 1, line
    assert f"orjson==3.0.0, but the server runs orjson {ours}" in line, line
    assert importlib.metadata.version("orjson") == ours
    assert "site-packages" in (installed_here("orjson") or "")


def test_a_package_index_that_never_answers_is_a_start_up_failure_at_the_deadline(mlp_model_dir, tmp_path):
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    held = []
    stop = threading.Event()

    def accept():
        hole.settimeout(0.5)
        while not stop.is_set():
            try:
                held.append(hole.accept()[0])          # accepted, never answered
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = hole.getsockname()[1]
    model_dir = mlp_model_dir.with_code(tmp_path / "model", "def input_fn(b, c):\n    return b\n",
                                        requirements=f"--index-url http://127.0.0.1:{port}/simple\nsmtest-nothing\n")
    started = time.monotonic()
    try:
        code, lines = failed_start(model_dir, {"SAGEMAKER_PIP_INSTALL_TIMEOUT": "10"})
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        hole.close()
    took = time.monotonic() - started
    line = the_failure_line(lines)
    assert code == 1
    assert "did not finish within 10 s (SAGEMAKER_PIP_INSTALL_TIMEOUT)" in line, line
    assert held, "pip never reached the index"
    assert took < 40, took
    print(json.dumps({"requirements deadline": f"exit after {took:.1f} s with a 10 s limit"}))
