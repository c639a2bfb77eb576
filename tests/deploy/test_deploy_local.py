"""`deploy local`: the real images, the example model, one invoke, clean exit.

The images come from the container fixtures (`image_amd64`, `image_arm64`, built by ./build.sh);
the model is the README's example (examples/digits/model.tar.gz, trained into a temp dir by
examples/digits/train.py when it has not been built).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.fixtures.server import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = str(Path(sys.executable).with_name("deploy"))
EXAMPLE = ROOT / "examples" / "digits"


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """(model.tar.gz, request.json, expected class) for the example digits model."""
    if (EXAMPLE / "model.tar.gz").is_file():
        return EXAMPLE / "model.tar.gz", EXAMPLE / "request.json", 7
    out = tmp_path_factory.mktemp("digits")
    subprocess.run([sys.executable, str(EXAMPLE / "train.py"), "--out", str(out)], check=True,
                   capture_output=True, timeout=900)
    return out / "model.tar.gz", out / "request.json", 7


def image(request, arch):
    try:
        return request.getfixturevalue(f"image_{arch}")
    except pytest.FixtureLookupError:
        pytest.skip("the container fixtures (tests/fixtures/docker.py) are not loaded")


def leftover_containers() -> list[str]:
    out = subprocess.run(["docker", "ps", "-a", "--filter", "name=deploy-local-", "--format", "{{.Names}}"],
                         capture_output=True, text=True, timeout=60).stdout
    return out.split()


def own_container(stderr: str) -> str:
    """The container this run started (`docker run -d --name deploy-local-...` on stderr): other
    sessions' `deploy local` containers may be running beside it on a shared engine."""
    return stderr.split("docker run -d --name ", 1)[1].split()[0]


def run_local_invoke(img, digits, timeout):
    tgz, req, _ = digits
    port = free_port()
    proc = subprocess.run([DEPLOY, "local", "--image", img, "--model-data", str(tgz), "--port", str(port),
                           "--invoke", str(req), "--region", "eu-west-1", "--env", "SAGEMAKER_MODEL_SERVER_WORKERS=1",
                           "--ping-timeout", str(timeout - 120)],   # emulated arm64 on a busy machine is slow
                          capture_output=True, text=True, timeout=timeout)
    return proc


def check_answer(proc, digits):
    assert proc.returncode == 0, proc.stderr[-4000:]
    probs = json.loads(proc.stdout)["predictions"][0]
    assert len(probs) == 10
    assert max(range(10), key=probs.__getitem__) == digits[2]
    assert "stopped (exit code 0)" in proc.stderr
    # SageMaker's way of starting it: model read-only at /opt/ml/model, `serve`, the deploy env
    assert ":/opt/ml/model:ro" in proc.stderr
    assert "-e SAGEMAKER_REGION=eu-west-1" in proc.stderr and "-e TF_ENABLE_ONEDNN_OPTS=1" in proc.stderr
    assert own_container(proc.stderr) not in leftover_containers()


@pytest.mark.container
def test_local_amd64_one_invoke_clean_exit(request, digits):
    img = image(request, "amd64")
    proc = run_local_invoke(img, digits, timeout=600)
    check_answer(proc, digits)


@pytest.mark.container
def test_local_output_json(request, digits):
    """`deploy local --invoke F --output json`: the answer wrapped in one parseable document."""
    img = image(request, "amd64")
    tgz, req, expected = digits
    proc = subprocess.run([DEPLOY, "local", "--image", img, "--model-data", str(tgz), "--port", str(free_port()),
                           "--invoke", str(req), "--no-logs", "--output", "json",
                           "--env", "SAGEMAKER_MODEL_SERVER_WORKERS=1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(proc.stdout)
    assert doc["image"] == img and doc["status_code"] == 200 and doc["content_type"].startswith("application/json")
    probs = doc["body"]["predictions"][0]
    assert max(range(10), key=probs.__getitem__) == expected
    assert own_container(proc.stderr) not in leftover_containers()


# `deploy local` with the arm64 image under emulation (--platform linux/arm64 picked from the
# image, an answer, a clean stop) is tests/deploy/test_deploy_compare.py's
# test_local_fpmath_check_with_the_arm64_image: the same container.run, two arm64 starts.


@pytest.mark.container
def test_local_stays_up_until_ctrl_c(request, digits):
    img = image(request, "amd64")
    tgz, req, expected = digits
    port = free_port()
    proc = subprocess.Popen([DEPLOY, "local", "--image", img, "--model-data", str(tgz), "--port", str(port),
                             "--no-logs"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        lines = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            if "press Ctrl-C to stop" in line:
                break
        url = f"http://127.0.0.1:{port}"
        assert requests.get(f"{url}/ping", timeout=5).status_code == 200
        resp = requests.post(f"{url}/invocations", data=req.read_bytes(),
                             headers={"Content-Type": "application/json"}, timeout=60)
        assert resp.status_code == 200
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(lines) + rest
    assert "stopped (exit code 0)" in rest
    assert own_container("".join(lines) + rest) not in leftover_containers()


# --- refused before Docker is touched ----------------------------------------------------------

# unsafe archives (every kind): tests/unit/test_archives.py::test_deploy_local_refuses_an_unsafe_archive

def test_local_refuses_a_folder_without_a_model(tmp_path):
    proc = subprocess.run([DEPLOY, "local", "--image", "never-pulled:latest", "--model-data", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no loadable model" in proc.stderr
