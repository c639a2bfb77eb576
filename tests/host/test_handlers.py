"""Users' inference.py, both styles, run unchanged by a real server on the host."""
from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.fixtures.server import start_host_server

ATOL = {"rtol": 1e-5, "atol": 1e-6}


def make_wheel(directory: Path, name: str, source: str) -> Path:
    """A minimal pure-Python wheel, so requirements.txt can be installed without a network."""
    files = {f"{name}.py": source.encode(),
             f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
             f"{name}-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                                           b"Tag: py3-none-any\n"}
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
        f"{len(data)}\n" for path, data in files.items()) + f"{name}-1.0.dist-info/RECORD,,\n"
    files[f"{name}-1.0.dist-info/RECORD"] = record.encode()
    wheel = directory / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


TOOLKIT_SCRIPT = """
import json, os, time
import numpy as np
import tensorflow as tf
import {package}
from scaling import SCALE  # next to inference.py (code/lib with requirements.txt: see test_compat)


def model_fn(model_dir):
    return tf.saved_model.load(os.path.join(model_dir, "1"))


def input_fn(body, content_type):
    doc = json.loads(body)
    if doc.get("raise"):
        raise ValueError("input_fn refused: " + doc["raise"])
    time.sleep(doc.get("sleep", 0))
    return np.asarray(doc["x"], dtype=np.float32) * SCALE


def predict_fn(data, model, context):
    out = model.signatures["serving_default"](features=tf.constant(data))
    return {{"probs": out["output_0"].numpy(), "attrs": context.custom_attributes}}


def output_fn(prediction, accept):
    body = {{"probs": prediction["probs"].tolist(), "attrs": prediction["attrs"],
             "installed": {package}.VALUE, "accept": accept}}
    return json.dumps(body), "application/vnd.custom+json"
"""


@pytest.fixture(scope="module")
def toolkit_server(mlp_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toolkit")
    package = f"smtest_{uuid.uuid4().hex[:8]}"
    wheel = make_wheel(tmp, package, "VALUE = 42\n")
    model_dir = mlp_model_dir.with_code(tmp / "model", TOOLKIT_SCRIPT.format(package=package),
                                        requirements=f"{wheel}\n")
    (model_dir / "code" / "scaling.py").write_text("SCALE = 1.0\n")
    try:
        with start_host_server(model_dir, {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "4"}) as server:
            yield server
    finally:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", package], check=False)


def invoke(url, body, content_type="application/json", **headers):
    return requests.post(f"{url}/invocations", data=body, headers={"Content-Type": content_type, **headers},
                         timeout=60)


def test_toolkit_script_runs_unchanged(toolkit_server, mlp_model_dir):
    x, expected = mlp_model_dir.inputs["features"], mlp_model_dir.expected["output_0"]
    r = invoke(toolkit_server.url, json.dumps({"x": x.tolist()}),
               **{"X-Amzn-SageMaker-Custom-Attributes": "trace=abc", "Accept": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/vnd.custom+json"
    doc = r.json()
    np.testing.assert_allclose(doc["probs"], expected, **ATOL)
    assert doc["attrs"] == "trace=abc"          # custom attributes reach user code via context
    assert doc["installed"] == 42               # code/requirements.txt was installed at start
    assert doc["accept"] == "application/json"


def test_user_exception_is_500_with_message_not_traceback(toolkit_server):
    r = invoke(toolkit_server.url, json.dumps({"raise": "no x given"}))
    assert r.status_code == 500
    error = r.json()["error"]
    assert "input_fn raised ValueError: input_fn refused: no x given" in error
    assert "Traceback" not in error
    assert "Traceback" in toolkit_server.logs()


def test_hung_user_code_answers_504_at_the_timeout(toolkit_server):
    start = time.monotonic()
    r = invoke(toolkit_server.url, json.dumps({"x": [[0, 0, 0, 0]], "sleep": 8}))
    elapsed = time.monotonic() - start
    assert r.status_code == 504 and "SAGEMAKER_MODEL_SERVER_TIMEOUT" in r.json()["error"]
    assert elapsed < 7


def test_others_are_served_while_a_request_hangs(toolkit_server, mlp_model_dir):
    x, expected = mlp_model_dir.inputs["features"], mlp_model_dir.expected["output_0"]
    with ThreadPoolExecutor(1) as pool:
        hung = pool.submit(invoke, toolkit_server.url, json.dumps({"x": [[0, 0, 0, 0]], "sleep": 8}))
        time.sleep(0.5)
        for _ in range(3):
            start = time.monotonic()
            r = invoke(toolkit_server.url, json.dumps({"x": x.tolist()}))
            assert r.status_code == 200 and time.monotonic() - start < 2, r.text
            np.testing.assert_allclose(r.json()["probs"], expected, **ATOL)
        assert not hung.done(), "the hung request was not in flight while the others were served"
        assert hung.result().status_code == 504
    assert invoke(toolkit_server.url, json.dumps({"x": x.tolist()})).status_code == 200


def test_ping_answers_fast_while_every_worker_is_busy(toolkit_server):
    """One worker; eight 3-second inferences in flight; /ping must still answer in well under 2 s."""
    with ThreadPoolExecutor(8) as pool:
        slow = [pool.submit(invoke, toolkit_server.url, json.dumps({"x": [[0, 0, 0, 0]], "sleep": 3}))
                for _ in range(8)]
        time.sleep(0.5)
        timings = []
        for _ in range(3):
            start = time.monotonic()
            assert requests.get(f"{toolkit_server.url}/ping", timeout=2).status_code == 200
            timings.append(time.monotonic() - start)
        assert not any(f.done() for f in slow), "the slow requests were not in flight during the pings"
        assert all(f.result().status_code == 200 for f in slow)
    assert max(timings) < 1.0


PARTIAL_SCRIPT = """
import json
import numpy as np


def output_fn(prediction, accept):
    probs = np.asarray(prediction["output_0"])
    return json.dumps({"labels": probs.argmax(axis=1).tolist()}), "application/json"
"""

TRANSFORM_SCRIPT = """
import json
import numpy as np


def transform_fn(model, body, content_type, accept):
    x = np.asarray(json.loads(body)["rows"], dtype=np.float32)
    out = model.signature(None).call({"features": x})
    return json.dumps({"top": out["output_0"].max(axis=1).tolist(), "ct": content_type}), accept
"""


def test_toolkit_defaults_fill_in_what_the_script_leaves_out(mlp_model_dir, tmp_path):
    """Only output_fn defined; script in a .tar.gz named by SAGEMAKER_SUBMIT_DIRECTORY/SAGEMAKER_PROGRAM."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "custom.py").write_text(PARTIAL_SCRIPT)
    archive = tmp_path / "sourcedir.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "custom.py", arcname="custom.py")
    env = {"SAGEMAKER_SUBMIT_DIRECTORY": str(archive), "SAGEMAKER_PROGRAM": "custom.py"}
    with start_host_server(mlp_model_dir.model_dir, env) as server:
        r = invoke(server.url, json.dumps({"instances": mlp_model_dir.inputs["features"].tolist()}))
    assert r.status_code == 200, r.text
    assert r.json() == {"labels": mlp_model_dir.expected["output_0"].argmax(axis=1).tolist()}


def test_submit_directory_from_s3(mlp_model_dir, tmp_path, aws_env):
    """SageMaker's SDK uploads sourcedir.tar.gz to S3 and names it in SAGEMAKER_SUBMIT_DIRECTORY."""
    import boto3

    archive = tmp_path / "sourcedir.tar.gz"
    (tmp_path / "inference.py").write_text(PARTIAL_SCRIPT)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "inference.py", arcname="inference.py")
    s3 = boto3.client("s3", region_name=aws_env["region"])
    s3.create_bucket(Bucket="code-bucket", CreateBucketConfiguration={"LocationConstraint": aws_env["region"]})
    s3.upload_file(str(archive), "code-bucket", "job/source/sourcedir.tar.gz")
    env = {"SAGEMAKER_SUBMIT_DIRECTORY": "s3://code-bucket/job/source/sourcedir.tar.gz",
           "SAGEMAKER_REGION": aws_env["region"]}
    with start_host_server(mlp_model_dir.model_dir, env) as server:
        r = invoke(server.url, json.dumps({"instances": mlp_model_dir.inputs["features"].tolist()}))
    assert r.status_code == 200, r.text
    assert r.json() == {"labels": mlp_model_dir.expected["output_0"].argmax(axis=1).tolist()}


def test_transform_fn_from_a_submit_directory_folder(mlp_model_dir, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "inference.py").write_text(TRANSFORM_SCRIPT)
    with start_host_server(mlp_model_dir.model_dir, {"SAGEMAKER_SUBMIT_DIRECTORY": str(tmp_path / "src")}) as s:
        r = invoke(s.url, json.dumps({"rows": mlp_model_dir.inputs["features"].tolist()}),
                   "application/json", Accept="application/json")
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["top"], mlp_model_dir.expected["output_0"].max(axis=1), **ATOL)
    assert r.json()["ct"] == "application/json"


TFS_SCRIPT = """
import json


def input_handler(data, context):
    if context.request_content_type == "text/csv":
        rows = [[float(v) for v in line.split(",")] for line in data.read().decode("utf-8").splitlines()]
        return json.dumps({"instances": rows})
    return data.read().decode("utf-8")


def output_handler(response, context):
    if response.status_code != 200:
        raise ValueError(response.content.decode("utf-8"))
    body = {
        "predictions": response.json()["predictions"],
        "text_ok": json.loads(response.text) == response.json(),
        "context": {name: getattr(context, name) for name in (
            "model_name", "model_version", "method", "rest_uri", "custom_attributes",
            "request_content_type", "accept_header", "content_length")},
    }
    return json.dumps(body), context.accept_header
"""

TFS_HANDLER_SCRIPT = """
import json
import requests


def handler(data, context):
    instances = json.loads(data.read().decode("utf-8"))["data"]
    response = requests.post(context.rest_uri, data=json.dumps({"instances": instances}))
    return json.dumps({"via_rest": response.json()["predictions"]}), "application/json"
"""


@pytest.fixture(scope="module")
def tfs_server(mlp_model_dir, tmp_path_factory):
    model_dir = mlp_model_dir.with_code(tmp_path_factory.mktemp("tfs") / "model", TFS_SCRIPT)
    with start_host_server(model_dir) as server:
        yield server


def test_tfs_input_output_handlers_run_unchanged(tfs_server, mlp_model_dir):
    x = mlp_model_dir.inputs["features"]
    body = "\n".join(",".join(map(str, row)) for row in x.tolist())
    r = invoke(tfs_server.url, body, "text/csv", Accept="application/json",
               **{"X-Amzn-SageMaker-Custom-Attributes": "tfs-method=predict,user=1"})
    assert r.status_code == 200, r.text
    doc = r.json()
    np.testing.assert_allclose(doc["predictions"], mlp_model_dir.expected["output_0"], **ATOL)
    assert doc["text_ok"] is True
    ctx = doc["context"]
    assert ctx["request_content_type"] == "text/csv" and ctx["accept_header"] == "application/json"
    assert ctx["custom_attributes"] == "tfs-method=predict,user=1"
    assert ctx["model_name"] == "model" and ctx["method"] == "predict"
    assert ctx["rest_uri"].endswith("/v1/models/model:predict") and ctx["content_length"] == len(body)


def test_tfs_model_error_keeps_its_status(tfs_server):
    r = invoke(tfs_server.url, json.dumps({"instances": [[1, 2]]}))
    assert r.status_code == 400
    assert "shape (-1, 4)" in r.json()["error"]


def test_tfs_handler_calls_rest_uri(mlp_model_dir, tmp_path):
    model_dir = mlp_model_dir.with_code(tmp_path / "model", TFS_HANDLER_SCRIPT)
    with start_host_server(model_dir) as server:
        r = invoke(server.url, json.dumps({"data": mlp_model_dir.inputs["features"].tolist()}))
        direct = requests.post(f"{server.url}/v1/models/model:predict",
                               json={"instances": mlp_model_dir.inputs["features"].tolist()}, timeout=30)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["via_rest"], mlp_model_dir.expected["output_0"], **ATOL)
    assert direct.status_code == 200 and direct.json()["predictions"] == r.json()["via_rest"]


def test_multi_input_multi_output_default_handler(multi_io_model_dir):
    a, b = multi_io_model_dir.inputs["a"], multi_io_model_dir.inputs["b"]
    with start_host_server(multi_io_model_dir.model_dir) as server:
        rows = invoke(server.url, json.dumps({"instances": [{"a": a[i].tolist(), "b": b[i].tolist()}
                                                            for i in range(len(a))]}))
        cols = invoke(server.url, json.dumps({"inputs": {"a": a.tolist(), "b": b.tolist()}}))
        other = invoke(server.url, json.dumps({"signature_name": "sum_only", "instances": b.tolist()}))
        status = requests.get(f"{server.url}/v1/models/pair", timeout=10)
    assert rows.status_code == 200, rows.text
    preds = rows.json()["predictions"]
    assert [p["total"] for p in preds] == pytest.approx(multi_io_model_dir.expected["total"].tolist())
    assert [p["scaled"] for p in preds] == multi_io_model_dir.expected["scaled"].tolist()
    outs = cols.json()["outputs"]
    assert outs["total"] == pytest.approx(multi_io_model_dir.expected["total"].tolist())
    assert other.json()["predictions"] == pytest.approx(b.sum(axis=1).tolist())
    assert status.json()["model_version_status"][0]["version"] == "3"
