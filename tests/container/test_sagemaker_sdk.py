"""The SageMaker Python SDK 2.x (sagemaker==2.257.7, the last 2.x) as the client, in local mode,
offline, against the amd64 image (issue 21): TF Serving's own test SavedModels in a model.tar.gz,
TensorFlowPredictor's predict, classify and regress, the JSON, CSV and NumPy serializers, custom
attributes naming a second model and a version, entry_point repacking, local batch transform, and
delete_endpoint leaving no container running.

The SDK's pins conflict with the project's (numpy), so it lives in a venv of its own, cached
between runs under /var/tmp (made once, then reused), and runs tests/container/sagemaker_sdk_client.py.
Local mode runs the image through Debian's docker-compose (.ci/setup-host.sh installs it).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from tests.fixtures.docker import docker
from tests.fixtures.server import free_port
from tests.fixtures.tfs_models import TFSERVING

SDK = "sagemaker==2.257.7"
SDK_VENV = Path("/var/tmp/sm-tf-sdk-2.257.7")
CLIENT = Path(__file__).with_name("sagemaker_sdk_client.py")
STOP_WITHIN_S = 45

pytestmark = [pytest.mark.container, pytest.mark.timeout(1500)]

INFERENCE_PY = """
import json


def input_handler(data, context):
    return data.read()


def output_handler(response, context):
    body = response.json()
    body["script"] = "inference.py"
    return json.dumps(body), "application/json"
"""


def make_sdk_venv() -> Path:
    """python of a venv holding only the pinned SDK, made once and kept under /var/tmp. Under an
    exclusive lock: .ci/run makes it ahead, in the background (pip, mostly downloading), and the
    fixture then waits for that and finds it made."""
    import fcntl

    python = SDK_VENV / "bin" / "python"
    done = SDK_VENV / ".installed"
    with open(SDK_VENV.with_name(SDK_VENV.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file() and done.read_text() == SDK:
            return python
        building = SDK_VENV.with_name(SDK_VENV.name + f".{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, timeout=120)
        proc = subprocess.run([str(building / "bin" / "pip"), "install", "-q", SDK], capture_output=True, text=True,
                              timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"pip install {SDK} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        (building / ".installed").write_text(SDK)
        shutil.rmtree(SDK_VENV, ignore_errors=True)
        building.rename(SDK_VENV)   # only bin/python is run, which finds its venv from where it is
        return python


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    try:
        return make_sdk_venv()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def sdk_workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("sdk")
    (work / "plain").mkdir()
    with tarfile.open(work / "plain" / "two.tar.gz", "w:gz") as tar:
        tar.add(TFSERVING / "saved_model_half_plus_two_cpu", arcname="half_plus_two")
        tar.add(TFSERVING / "saved_model_half_plus_three", arcname="half_plus_three")
    (work / "src").mkdir()
    (work / "src" / "inference.py").write_text(textwrap.dedent(INFERENCE_PY))
    (work / "batch").mkdir()
    # one instance per line, as AWS's container reads JSON Lines (a batch of lines is one request)
    (work / "batch" / "input.jsonl").write_text("[1.0]\n[2.0]\n[5.0]\n")
    return work


def _running(image: str) -> list[str]:
    return docker("ps", "-q", "--filter", f"ancestor={image}").stdout.split()


def _all(image: str) -> list[str]:
    return docker("ps", "-aq", "--filter", f"ancestor={image}").stdout.split()


def test_sagemaker_sdk_local_mode(image_amd64, sdk_python, sdk_workdir):
    assert shutil.which("docker-compose"), "local mode needs docker-compose (.ci/setup-host.sh installs it)"
    before, existed = set(_running(image_amd64)), set(_all(image_amd64))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
           "SAGEMAKER_SUPPRESS_V2_WARNING": "1"}
    env.pop("PYTHONPATH", None)
    try:
        proc = subprocess.run([str(sdk_python), str(CLIENT), image_amd64, str(sdk_workdir), str(free_port())],
                              capture_output=True, text=True, timeout=1200, env=env, cwd=sdk_workdir)
    finally:
        # delete_endpoint and the transform's end stop their containers; a stop may take the
        # server's graceful shutdown (under 30 s, SageMaker's limit) to finish
        deadline = time.monotonic() + STOP_WITHIN_S
        while (left := set(_running(image_amd64)) - before) and time.monotonic() < deadline:
            time.sleep(1)
        # what a failed step left running, and the stopped containers local mode never removes
        for container in set(_all(image_amd64)) - existed:
            docker("rm", "-f", container, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    failed = {k: v for k, v in results.items() if isinstance(v, dict) and "error" in v}
    assert not failed, json.dumps(failed, indent=1)[-8000:]
    assert results["predict_json"] == {"predictions": [2.5, 3.0, 4.5]}
    assert results["predict_other_model"] == {"predictions": [3.5, 4.0, 5.5]}
    assert results["predict_version"] == {"predictions": [2.5]}
    assert results["classify"] == {"results": [[["", 2.5]]]}
    assert results["regress"] == {"results": [3.5, 5.0]}
    assert results["predict_csv"] == {"predictions": [2.5, 3.0, 4.5]}
    assert results["predict_numpy"] == [[2.5], [3.0]]
    assert results["custom_attributes"] == {"predictions": [3.5]}
    assert results["entry_point"] == {"predictions": [2.5, 3.0], "script": "inference.py"}
    outputs, text = results["transform"]
    assert outputs == ["input.jsonl.out"]
    assert [json.loads(line) for line in text.splitlines() if line.strip()] == \
        [{"predictions": [[2.5], [3.0], [4.5]]}]
    assert not left, "delete_endpoint or the transform left a container running"


if __name__ == "__main__":      # .ci/run: python -m tests.container.test_sagemaker_sdk
    print(f"SageMaker SDK venv ready: {make_sdk_venv()}")
