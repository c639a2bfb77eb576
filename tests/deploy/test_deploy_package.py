"""`pip install ./deploy` in a fresh venv: boto3, requests and the standard library only.

The venv is made in a temp dir from this interpreter (`python -m venv`, no system site packages)
and pip installs a copy of deploy/ (so no build/ or egg-info lands in the tree); pip reaches PyPI
the way the machine's pip does (PIP_CERT, PIP_FIND_LINKS, /etc/xdg/pip/pip.conf are inherited
from the environment, as in the Makefile's venv). Then, with that venv alone:
- `pip list` has no tensorflow, tensorflow-cpu, numpy, flask or gunicorn;
- `deploy --help` and `deploy --version` exit 0, and every subcommand's --help does;
- every module of sagemaker_tf_deploy and model_archive imports, and none of them pulls in those
  packages (they are not there, so an import of one would fail here);
- the installed command does real work: `deploy compare` decodes and compares two servers'
  answers, and `deploy create` / `deploy delete` run against moto.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"tensorflow", "tensorflow-cpu", "numpy", "flask", "gunicorn"}


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """bin/ of a fresh venv with only ./deploy installed."""
    tmp = tmp_path_factory.mktemp("deploy-venv")
    src = tmp / "src"
    shutil.copytree(ROOT / "deploy", src, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build"))
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, timeout=120)
    bin_dir = tmp / "venv" / "bin"
    proc = subprocess.run([str(bin_dir / "pip"), "install", "-q", str(src)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return bin_dir


def run(venv: Path, *cmd: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, **kwargs.pop("env", {})}
    env.pop("PYTHONPATH", None)      # nothing from this tree: only what pip installed
    return subprocess.run([str(venv / cmd[0]), *cmd[1:]], capture_output=True, text=True, timeout=120,
                          cwd=venv, env=env, **kwargs)


def test_installs_without_tensorflow_numpy_flask_gunicorn(venv):
    proc = run(venv, "pip", "list", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    names = {p["name"].lower() for p in json.loads(proc.stdout)}
    assert "sagemaker-tf-deploy" in names and "boto3" in names and "requests" in names
    assert not names & HEAVY, names & HEAVY


def _dotted(path: Path) -> str:
    """deploy/a/b/c.py -> a.b.c; a sub-package's __init__.py -> a.b"""
    parts = path.relative_to(ROOT / "deploy").with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

def test_command_and_every_module(venv):
    for flag in ("--help", "--version"):
        proc = run(venv, "deploy", flag)
        assert proc.returncode == 0, proc.stderr
    assert run(venv, "deploy", "--version").stdout.startswith("deploy 0.1.0")
    commands = [c.strip().split()[0] for c in run(venv, "deploy", "--help").stdout.split("COMMAND ...")[1]
                .split("positional arguments:")[1].split("options:")[0].splitlines()[2:] if c.startswith("    ")
                and not c.startswith("      ")]
    assert {"create", "update", "delete", "migrate", "compare", "transform", "models", "local"} <= set(commands)
    for command in commands:
        proc = run(venv, "deploy", command, "--help")
        assert proc.returncode == 0, (command, proc.stderr)
    check = (
        "import importlib, pkgutil, sys\n"
        "import sagemaker_tf_deploy, model_archive\n"
        "names = []\n"
        "for pkg in (sagemaker_tf_deploy, model_archive):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "        names.append(m.name)\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HEAVY | {'tensorflow_cpu'})!r})\n"
        "assert not heavy, heavy\n"
        "assert 'site-packages' in sagemaker_tf_deploy.__file__, sagemaker_tf_deploy.__file__\n"
        "print(' '.join(names))\n")
    proc = run(venv, "python", "-c", check)
    assert proc.returncode == 0, proc.stderr
    imported = set(proc.stdout.split())
    expected = {_dotted(p) for top in ("sagemaker_tf_deploy", "model_archive")
                for p in (ROOT / "deploy" / top).rglob("*.py") if p != ROOT / "deploy" / top / "__init__.py"}
    assert imported == expected


def _server(scores):
    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            out = json.dumps({"predictions": [scores]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def test_compare_runs_without_numpy(venv, tmp_path):
    reqs = tmp_path / "requests.jsonl"
    reqs.write_text("".join(json.dumps({"instances": [[float(i)]]}) + "\n" for i in range(4)))
    a, url_a = _server([0.1, 0.2, 0.7])
    b, url_b = _server([0.1, 0.6, 0.3])
    try:
        proc = run(venv, "deploy", "compare", "--requests", str(reqs), "--url", url_a, "--url", url_b,
                   "--output", "json")
    finally:
        a.shutdown()
        b.shutdown()
    assert proc.returncode == 0, proc.stderr
    (out,) = json.loads(proc.stdout)["agreement"][0]["outputs"]
    assert out["compared"] == 12 and out["top1_agreement"] == 0.0
    assert out["max_abs_diff"] == pytest.approx(0.4)


def test_create_and_delete_against_moto(venv, aws_env, ecr_images, model_tgz):
    proc = run(venv, "deploy", "create", "--image", ecr_images["multi"], "--model-data", str(model_tgz),
               "--role", aws_env["role"], "--name", "fresh", "--poll", "0.05")
    assert proc.returncode == 0, proc.stderr
    assert "endpoint fresh is InService" in proc.stdout
    proc = run(venv, "deploy", "delete", "fresh", "--poll", "0.05")
    assert proc.returncode == 0, proc.stderr
    assert "deleting endpoint fresh" in proc.stderr + proc.stdout
