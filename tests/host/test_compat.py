"""Drop-in for AWS's TensorFlow serving container (issue 10): archives, requests and scripts
written for that container, served the same, against a real server on the host and, for
loading and routing, the amd64 image.

The models are TF1-style SavedModels built with tf.compat.v1 (tests/fixtures/models.py:
tf1_model_dir): placeholders of unknown rank, ParseExample-based classify and regress
signatures, two versions of one name and a second name, as tf.estimator and TF Serving's own
half_plus_two test models are made.
"""
from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from tests.fixtures.server import launch, start_host_server, wait_for_ping
from tests.fixtures.targets import PROCESS_TARGETS, start_target

ATTRS = "X-Amzn-SageMaker-Custom-Attributes"
X = [1.0, 2.0, 3.0]


def invoke(url, body, content_type="application/json", attributes=None, **headers):
    if attributes:
        headers[ATTRS] = attributes
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{url}/invocations", data=data, headers={"Content-Type": content_type, **headers},
                         timeout=60)


@pytest.fixture(scope="module", params=PROCESS_TARGETS)
def tf1_server(request, tf1_model_dir):
    with start_target(request, request.param, tf1_model_dir.model_dir) as server:
        yield server


# -- loading and routing: host and amd64 image -----------------------------------------------------

def test_tf1_savedmodel_with_unknown_rank_input_is_served(tf1_server, tf1_model_dir):
    # default model: the first name (sorted), "double"; x has unknown rank, so [1, 2, 3] is fed as is
    r = invoke(tf1_server.url, {"instances": X})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], tf1_model_dir.y("double", "1", X))
    r = invoke(tf1_server.url, {"instances": [[1.0, 2.0], [3.0, 4.0]]})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], tf1_model_dir.y("double", "1", [[1, 2], [3, 4]]))


@pytest.mark.parametrize("attributes, name, version", [
    ("tfs-model-name=half", "half", "2"),                          # highest version by default
    ("tfs-model-name=half,tfs-model-version=1", "half", "1"),
    ("user=7,tfs-model-version=1,tfs-model-name=half", "half", "1"),
    ("tfs-model-name=double,tfs-method=predict", "double", "1"),
])
def test_custom_attributes_route_to_model_and_version(tf1_server, tf1_model_dir, attributes, name, version):
    r = invoke(tf1_server.url, {"instances": X}, attributes=attributes)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], tf1_model_dir.y(name, version, X))


@pytest.mark.parametrize("attributes, fragment", [
    ("tfs-model-name=nope", "'double'"),
    ("tfs-model-name=half,tfs-model-version=9", "1, 2"),
])
def test_unknown_model_or_version_is_404_naming_what_exists(tf1_server, attributes, fragment):
    r = invoke(tf1_server.url, {"instances": X}, attributes=attributes)
    assert r.status_code == 404, r.text
    assert r.headers["Content-Type"].startswith("application/json") and fragment in r.json()["error"]


def test_regress_and_classify_by_custom_attribute(tf1_server, tf1_model_dir):
    body = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}
    r = invoke(tf1_server.url, body, attributes="tfs-model-name=half,tfs-model-version=1,tfs-method=regress")
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["results"], tf1_model_dir.y("half", "1", [1.0, 2.0]))
    body = {"signature_name": "tensorflow/serving/classify", "examples": [{"x": 1.0}, {"x": -9.0}]}
    r = invoke(tf1_server.url, body, attributes="tfs-model-name=half,tfs-method=classify")
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    y = tf1_model_dir.y("half", "2", [1.0, -9.0])
    assert [[label for label, _ in pairs] for pairs in results] == [["low", "high"]] * 2
    np.testing.assert_allclose([[s for _, s in pairs] for pairs in results],
                               np.stack([1 - 1 / (1 + np.exp(-y)), 1 / (1 + np.exp(-y))], 1), rtol=1e-5)


def test_tf_serving_rest_routes_for_every_model(tf1_server, tf1_model_dir):
    url = tf1_server.url
    r = requests.post(f"{url}/v1/models/half/versions/1:regress", timeout=30,
                      json={"signature_name": "tensorflow/serving/regress", "examples": [{"x": 4.0}]})
    assert r.status_code == 200 and r.json() == {"results": [4.0]}, r.text
    r = requests.post(f"{url}/v1/models/double:predict", json={"instances": X}, timeout=30)
    np.testing.assert_allclose(r.json()["predictions"], tf1_model_dir.y("double", "1", X))
    status = requests.get(f"{url}/v1/models/half", timeout=30).json()["model_version_status"]
    assert [v["version"] for v in status] == ["2", "1"] and {v["state"] for v in status} == {"AVAILABLE"}
    assert requests.get(f"{url}/v1/models/half/versions/1", timeout=30).json()["model_version_status"][0][
        "version"] == "1"
    missing = requests.get(f"{url}/v1/models/nope", timeout=30)
    assert missing.status_code == 404 and "'half'" in missing.json()["error"]


# -- host only from here: request conventions ------------------------------------------------------

@pytest.fixture(scope="module")
def host_tf1(tf1_model_dir):
    with start_host_server(tf1_model_dir.model_dir, {"SAGEMAKER_TFS_DEFAULT_MODEL_NAME": "half"}) as server:
        yield server


def test_default_model_name_setting(host_tf1, tf1_model_dir):
    r = invoke(host_tf1.url, {"instances": X})
    np.testing.assert_allclose(r.json()["predictions"], tf1_model_dir.y("half", "2", X))


def test_examples_pick_the_signature_method(host_tf1, tf1_model_dir):
    # no tfs-method: the named signature says it is a regress one
    r = invoke(host_tf1.url, {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 2.0}]})
    assert r.status_code == 200 and r.json() == {"results": [4.0]}, r.text
    # examples for a predict signature: a 400 that says what to send
    r = invoke(host_tf1.url, {"examples": [{"x": 2.0}]})
    assert r.status_code == 400 and "tfs-method" in r.json()["error"]
    r = invoke(host_tf1.url, {"examples": [{"x": 2.0}]}, attributes="tfs-method=classify")
    assert r.status_code == 400 and "tensorflow/serving/classify" in r.json()["error"]


def test_input_tensorflow_rejects_is_400_naming_the_input(host_tf1):
    body = {"signature_name": "tensorflow/serving/regress", "examples": [{"y": 2.0}]}
    r = invoke(host_tf1.url, body, attributes="tfs-method=regress")
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "'inputs'" in error and "Feature: x" in error and "Traceback" not in error


def test_string_inputs_and_b64_outputs(host_tf1):
    r = invoke(host_tf1.url, {"signature_name": "text", "instances": ["héllo", {"b64": base64.b64encode(b"ab").decode()}]})
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    assert [row["length"] for row in rows] == [6, 2]
    assert [base64.b64decode(row["echo_bytes"]["b64"]) for row in rows] == ["héllo!".encode(), b"ab!"]


@pytest.mark.parametrize("body, content_type, expected_x", [
    (b"[1.0, 2.0]\n[3.0, 4.0]\n", "application/json", [[1, 2], [3, 4]]),         # JSON Lines sent as JSON
    (b"[1.0, 2.0]\n[3.0, 4.0]\n", "application/jsons", [[1, 2], [3, 4]]),
    (b"[1.0, 2.0, 3.0]", "application/json", [[1, 2, 3]]),                         # one instance
    (b"7", "application/json", [7]),
    (b"1\n2\n3\n", "text/csv", [1, 2, 3]),                                         # one scalar per line
    (b"1,2\n3,4\n", "text/csv", [[1, 2], [3, 4]]),
])
def test_request_conventions_of_the_default_path(host_tf1, tf1_model_dir, body, content_type, expected_x):
    r = invoke(host_tf1.url, body, content_type)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], tf1_model_dir.y("half", "2", expected_x))


def test_json_object_without_tfs_keys_is_one_instance(mlp_server, mlp_model_dir):
    x = mlp_model_dir.inputs["features"][0]
    r = invoke(mlp_server.url, {"features": x.tolist()})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], mlp_model_dir.expected["output_0"][:1], rtol=1e-5)


@pytest.mark.parametrize("accept, content_type", [
    ("application/jsonlines,application/json", "application/jsonlines"),
    ("application/json, application/jsonlines", "application/json"),
    ("application/json; charset=utf-8", "application/json"),
])
def test_accept_listing_several_types_answers_the_first(mlp_server, mlp_model_dir, accept, content_type):
    r = invoke(mlp_server.url, {"instances": mlp_model_dir.inputs["features"].tolist()}, Accept=accept)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith(content_type)


# -- user code conventions ---------------------------------------------------------------------------

CONTEXT_SCRIPT = """
import json


def input_handler(data, context):
    body = data.read()
    if not body:
        return json.dumps({"instances": [[0.0, 0.0, 0.0, 0.0]]})
    return body


def output_handler(response, context):
    return json.dumps({"status": response.status_code, "body": response.json(),
                       "context": [context.model_name, context.model_version, context.method,
                                   context.rest_uri]}), "application/json"
"""


def test_empty_body_reaches_input_handler_and_context_carries_the_route(mlp_model_dir, tmp_path):
    model_dir = mlp_model_dir.with_code(tmp_path / "model", CONTEXT_SCRIPT)
    with start_host_server(model_dir) as server:
        empty = invoke(server.url, b"")
        routed = invoke(server.url, {"instances": [[1, 2, 3, 4]]}, attributes="tfs-model-name=model,tfs-model-version=0")
    assert empty.status_code == 200, empty.text
    assert empty.json()["status"] == 200 and len(empty.json()["body"]["predictions"]) == 1
    doc = routed.json()
    assert doc["context"][:3] == ["model", "0", "predict"] and doc["context"][3].endswith("/v1/models/model/versions/0:predict")
    # version 0 is the decoy with zero weights: softmax of zeros is uniform
    np.testing.assert_allclose(doc["body"]["predictions"], [[1 / 3] * 3], rtol=1e-5)


def test_code_lib_means_requirements_are_not_installed(mlp_model_dir, tmp_path):
    script = "from helper import VALUE\n\ndef input_handler(data, context):\n    return data.read()\n"
    model_dir = mlp_model_dir.with_code(tmp_path / "model", script,
                                        requirements="this-package-does-not-exist-anywhere==9.9.9\n",
                                        lib={"helper.py": "VALUE = 1\n"})
    with start_host_server(model_dir) as server:
        r = invoke(server.url, {"instances": mlp_model_dir.inputs["features"].tolist()})
        logs = server.logs()
    assert r.status_code == 200, r.text
    assert "not installing" in logs and "requirements.txt" in logs


# -- settings under that container's names ---------------------------------------------------------

def test_aws_container_settings_apply_and_unused_ones_are_named_once(mlp_model_dir):
    env = {"SAGEMAKER_GUNICORN_WORKERS": "2", "SAGEMAKER_GUNICORN_TIMEOUT_SECONDS": "30",
           "SAGEMAKER_NGINX_PROXY_READ_TIMEOUT_SECONDS": "90", "SAGEMAKER_TFS_NUM_BATCH_THREADS": "8",
           "SAGEMAKER_NOT_A_THING": "1", "SAGEMAKER_TFS_NGINX_LOGLEVEL": "info"}
    env_without_ours = {k: v for k, v in env.items()}
    with start_host_server(mlp_model_dir.model_dir, {**env_without_ours, "SAGEMAKER_MODEL_SERVER_WORKERS": ""}) as server:
        assert invoke(server.url, {"instances": mlp_model_dir.inputs["features"].tolist()}).status_code == 200
        time.sleep(0.5)
        logs = server.logs()
    start = next(line for line in logs.splitlines() if " on 0.0.0.0:" in line)
    assert "workers=2" in start and "timeout 90 s" in start
    assert "SAGEMAKER_GUNICORN_WORKERS as SAGEMAKER_MODEL_SERVER_WORKERS" in start
    assert "SAGEMAKER_NGINX_PROXY_READ_TIMEOUT_SECONDS as SAGEMAKER_MODEL_SERVER_TIMEOUT" in start
    assert logs.count("SAGEMAKER_TFS_NUM_BATCH_THREADS is set but means nothing here") == 1
    assert logs.count("SAGEMAKER_NOT_A_THING is set but means nothing here") == 1
    assert "POST /invocations 200" in logs  # nginx log level info: every request in the access log


# -- readiness across workers ------------------------------------------------------------------------

SLOW_LOAD_SCRIPT = """
import os, time


def model_fn(model_dir):
    time.sleep(float(os.environ.get("SLOW_LOAD_S", "0")) * (os.getpid() % 4))
    return "model"


def predict_fn(data, model):
    return data * 2
"""


def test_ping_is_200_only_when_every_worker_can_answer(mlp_model_dir, tmp_path):
    model_dir = mlp_model_dir.with_code(tmp_path / "model", SLOW_LOAD_SCRIPT)
    server = launch(model_dir, {"SAGEMAKER_MODEL_SERVER_WORKERS": "4", "SLOW_LOAD_S": "3"})
    try:
        wait_for_ping(server.url, 240, server.alive)

        def one(_):
            # a new connection each time, so the requests spread over the workers
            return requests.post(f"{server.url}/invocations", json=[1.0], timeout=60,
                                 headers={"Connection": "close"}).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one, range(60)))
    finally:
        server.stop()
    assert statuses.count(200) == 60, {s: statuses.count(s) for s in set(statuses)}
