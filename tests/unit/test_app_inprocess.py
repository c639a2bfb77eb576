"""The HTTP layer in-process: serve.http_worker.app's routes through Flask's test client, over the real
handlers and codecs, with tests/unit/stubs.py's NumPy model in place of the model process.

What it shows without TensorFlow or a server: routing, formats both ways, Accept, custom
attributes, TF Serving's routes, status codes and their JSON errors. The same contract against a
real server and the images is tests/container/test_contract.py.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from serve.contract import tuning
from serve.http_worker.app import create_app
from serve.contract.handlers import DefaultHandler
from serve.contract.redact import SecretFilter
from serve.contract.settings import Settings
from serve.http_worker.worker import WorkerState
from tests.unit import stubs

X = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]], np.float32)
Y = 2 * X + 1


def direct_infer(model, signature, inputs, examples, timeout):
    """DefaultHandler's infer without the model process: call the signature here."""
    return model.signatures[signature].call(inputs)


def make_client(monkeypatch, status: str = "ready", **env: str):
    for name in list(__import__("os").environ):
        if name.startswith("SAGEMAKER_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    models = stubs.repository(stubs.affine("stub", "1"), stubs.affine("stub", "2"), stubs.affine("other", None))
    state = WorkerState()
    state.status = status
    state.default = state.handler = DefaultHandler(models, direct_infer, timeout=5)
    plan = tuning.plan(settings, tuning.Cpu(arch="amd64", vcpus=2, bf16=False))
    return create_app(settings, state, plan, SecretFilter([])).test_client()


@pytest.fixture
def client(monkeypatch):
    return make_client(monkeypatch)


def invoke(client, body, content_type="application/json", **headers):
    return client.post("/invocations", data=body, headers={"Content-Type": content_type, **headers})


def test_ping_is_200_when_ready_and_a_json_503_while_loading(monkeypatch, client):
    assert client.get("/ping").status_code == 200
    loading = make_client(monkeypatch, status="loading").get("/ping")
    assert loading.status_code == 503 and "still loading" in loading.get_json()["error"]


def test_row_format_in_predictions_out(client):
    r = invoke(client, json.dumps({"instances": X.tolist()}))
    assert r.status_code == 200 and r.content_type.startswith("application/json")
    np.testing.assert_allclose(r.get_json()["predictions"], Y)


def test_columnar_request_gets_a_columnar_reply(client):
    r = invoke(client, json.dumps({"inputs": {"x": X.tolist()}}))
    assert r.status_code == 200, r.get_data(as_text=True)
    assert set(r.get_json()) == {"outputs"}
    np.testing.assert_allclose(r.get_json()["outputs"], Y)


def test_csv_in_csv_out(client):
    r = invoke(client, "1,2,3\n-1,0.5,4\n", "text/csv", Accept="text/csv")
    assert r.status_code == 200 and r.content_type.startswith("text/csv")
    np.testing.assert_allclose(np.loadtxt(io.StringIO(r.get_data(as_text=True)), delimiter=","), Y)


def test_npy_in_npy_out(client):
    buf = io.BytesIO()
    np.save(buf, X)
    r = invoke(client, buf.getvalue(), "application/x-npy", Accept="application/x-npy")
    assert r.status_code == 200 and r.content_type == "application/x-npy"
    np.testing.assert_allclose(np.load(io.BytesIO(r.get_data())), Y)


def test_jsonlines_answer_has_one_prediction_per_line(client):
    r = invoke(client, json.dumps({"instances": X.tolist()}), Accept="application/jsonlines")
    lines = r.get_data(as_text=True).splitlines()
    assert r.status_code == 200 and len(lines) == 2
    np.testing.assert_allclose([json.loads(line) for line in lines], Y)


def test_custom_attributes_route_to_a_model_and_version(client):
    body = json.dumps({"instances": X.tolist()})
    for attrs in ("tfs-model-name=stub,tfs-model-version=1", "tfs-model-name=other"):
        r = invoke(client, body, **{"X-Amzn-SageMaker-Custom-Attributes": attrs})
        assert r.status_code == 200, (attrs, r.get_data(as_text=True))
    r = invoke(client, body, **{"X-Amzn-SageMaker-Custom-Attributes": "tfs-model-name=nope"})
    assert r.status_code == 404
    assert "no model named 'nope'" in r.get_json()["error"] and "'stub'" in r.get_json()["error"]
    r = invoke(client, body, **{"X-Amzn-SageMaker-Custom-Attributes": "tfs-model-name=stub,tfs-model-version=9"})
    assert r.status_code == 404 and "has no version 9" in r.get_json()["error"]


@pytest.mark.parametrize("body, content_type, headers, status, words", [
    ('{"instances": [[1, 2]]}', "application/json", {}, 400, "does not accept shape (1, 2)"),
    ("{not json", "application/json", {}, 400, "not valid JSON"),
    ("", "application/json", {}, 400, "empty"),
    ("x", "application/octet-stream", {}, 415, "is not supported"),
    ('{"instances": [[1, 2, 3]]}', "application/json", {"Accept": "image/png"}, 406, "cannot answer"),
    ('{"instances": [[NaN, 2, 3]]}', "application/json", {}, 400, "input 'x' shape (-1, 3) float32 holds NaN"),
])
def test_bad_requests_get_a_json_error_saying_what_to_fix(client, body, content_type, headers, status, words):
    r = invoke(client, body, content_type, **headers)
    assert r.status_code == status, r.get_data(as_text=True)
    assert words in r.get_json()["error"]


def test_charset_parameters_mean_nothing_to_us(client):
    r = invoke(client, json.dumps({"instances": X.tolist()}), "application/json; charset=utf-8",
               Accept="application/json; charset=utf-8")
    assert r.status_code == 200, r.get_data(as_text=True)


def test_tf_serving_routes(client):
    r = client.post("/v1/models/stub/versions/1:predict", data=json.dumps({"instances": X.tolist()}))
    assert r.status_code == 200
    np.testing.assert_allclose(r.get_json()["predictions"], Y)
    status = client.get("/v1/models/stub").get_json()["model_version_status"]
    assert [s["version"] for s in status] == ["2", "1"] and {s["state"] for s in status} == {"AVAILABLE"}
    assert client.get("/v1/models/nope").status_code == 404
    r = client.post("/v1/models/stub/labels/stable:predict", data="{}")
    assert r.status_code == 404 and "labels are not served" in r.get_json()["error"]


def test_execution_parameters_and_unknown_routes(client):
    params = client.get("/execution-parameters").get_json()
    assert params == {"MaxConcurrentTransforms": 4, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}
    r = client.get("/nope")
    assert r.status_code == 404 and "use GET /ping, POST /invocations" in r.get_json()["error"]
    r = client.get("/invocations")
    assert r.status_code == 405 and "GET is not allowed" in r.get_json()["error"]


def test_a_body_over_the_limit_is_a_413_naming_the_setting(monkeypatch):
    small = make_client(monkeypatch, SAGEMAKER_MAX_PAYLOAD_IN_MB="1")
    r = invoke(small, b"[" + b"1," * (600 * 1024) + b"1]")
    assert r.status_code == 413 and "SAGEMAKER_MAX_PAYLOAD_IN_MB" in r.get_json()["error"]


def test_multi_model_routes_are_refused_on_a_single_model_server(client):
    r = client.get("/models")
    assert r.status_code == 404 and "SAGEMAKER_MULTI_MODEL=true" in r.get_json()["error"]


def test_a_numpy_memory_error_is_a_413_and_the_worker_goes_on(monkeypatch, client):
    """A body that decodes to more than can be allocated is the caller's to shrink: 413, not 500."""
    import serve.contract.handlers

    def too_big(body, content_type):
        return np.empty(2 ** 62, np.uint8)   # NumPy's own MemoryError, naming the shape and dtype

    monkeypatch.setattr(serve.contract.handlers.codecs, "decode", too_big)
    r = invoke(client, json.dumps({"instances": X.tolist()}))
    assert r.status_code == 413, r.get_data(as_text=True)
    assert "more memory than this server can allocate" in r.get_json()["error"] and "uint8" in r.get_json()["error"]
    monkeypatch.undo()
    assert invoke(client, json.dumps({"instances": X.tolist()})).status_code == 200
