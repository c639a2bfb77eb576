"""TF Serving's own test SavedModels (tests/fixtures/tfserving/), served as TF Serving and AWS's
container serve them (issue 21), on the host and in the amd64 image: exports this project did not
make, with TensorInfos that lack shapes or contradict the graph, and versions named 00000123."""
from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from tests.fixtures.targets import PROCESS_TARGETS, start_target

ATTRS = "X-Amzn-SageMaker-Custom-Attributes"


def invoke(url, body, attributes=None, content_type="application/json", **headers):
    if attributes:
        headers[ATTRS] = attributes
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{url}/invocations", data=data, headers={"Content-Type": content_type, **headers},
                         timeout=60)


@pytest.fixture(scope="module", params=PROCESS_TARGETS)
def tfs_server(request, tfs_models):
    with start_target(request, request.param, tfs_models.model_dir,
                      env={"SAGEMAKER_TFS_DEFAULT_MODEL_NAME": "half_plus_two"}) as server:
        yield server


# -- signatures read as TF Serving reads them ----------------------------------------------------

def test_tensorinfo_without_shape_is_unknown_not_scalar(tfs_server):
    # half_plus_three's TensorInfos have no tensor_shape field: TF Serving feeds [1, 2, 5] as it is
    r = invoke(tfs_server.url, {"instances": [1.0, 2.0, 5.0]}, "tfs-model-name=half_plus_three")
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [3.5, 4.0, 5.5]}


def test_regress_input_typed_by_the_graph_not_its_tensorinfo(tfs_server):
    # its regress input says DT_FLOAT but names tf_example:0, the string placeholder of Examples
    r = invoke(tfs_server.url, {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 4.0}]},
               "tfs-model-name=half_plus_three,tfs-method=regress")
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [3.5, 5.0]}


def test_what_tensorflow_refuses_is_a_400_naming_the_input(tfs_server):
    # no feature x: the graph's ParseExample refuses, and that is the answer
    r = invoke(tfs_server.url, {"signature_name": "tensorflow/serving/regress", "examples": [{"z": 1.0}]},
               "tfs-model-name=half_plus_three,tfs-method=regress")
    assert r.status_code == 400, r.text
    assert "'inputs'" in r.json()["error"] and "x" in r.json()["error"]


def test_exact_signature_keeps_its_early_check(tfs_server):
    r = invoke(tfs_server.url, {"instances": [[1.0, 2.0]]})
    assert r.status_code == 400
    assert "input 'x' shape (-1, 1) float32 does not accept shape (1, 2)" in r.json()["error"]


def test_classify_and_regress_signatures(tfs_server):
    r = invoke(tfs_server.url, {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}, {"x": 3.0}]},
               "tfs-method=regress")
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [2.5, 3.5]}
    r = invoke(tfs_server.url, {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}, "tfs-method=classify")
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [[["", 3.0]]]}


def test_tf2_export(tfs_server):
    r = invoke(tfs_server.url, {"instances": [1.0]}, "tfs-model-name=tf2")
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [2.5]}


# -- answers shaped as AWS's container (TF Serving) shapes them --------------------------------------

@pytest.mark.parametrize("body, content_type, expected", [
    ({"instances": [1.0, 2.0, 5.0]}, "application/json", {"predictions": [2.5, 3.0, 4.5]}),
    ({"inputs": [1.0, 2.0, 5.0]}, "application/json", {"outputs": [2.5, 3.0, 4.5]}),
    ("1.0\n2.0\n5.0\n", "text/csv", {"predictions": [2.5, 3.0, 4.5]}),
    ({"instances": [[1.0], [2.0]]}, "application/json", {"predictions": [[2.5], [3.0]]}),
])
def test_scalars_in_scalars_out(tfs_server, body, content_type, expected):
    r = invoke(tfs_server.url, body, content_type=content_type)
    assert r.status_code == 200, r.text
    assert r.json() == expected


# -- versions as TF Serving numbers them ---------------------------------------------------------

@pytest.mark.parametrize("version", ["123", "00000123", "0123"])
def test_version_is_an_integer(tfs_server, version):
    r = invoke(tfs_server.url, {"instances": [1.0]}, f"tfs-model-name=two_versions,tfs-model-version={version}")
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [2.5]}
    r = requests.post(f"{tfs_server.url}/v1/models/two_versions/versions/{version}:predict",
                      json={"instances": [1.0]}, timeout=60)
    assert r.status_code == 200, r.text


def test_versions_listed_as_integers_highest_first_and_others_ignored(tfs_server):
    status = requests.get(f"{tfs_server.url}/v1/models/two_versions", timeout=30).json()["model_version_status"]
    assert [v["version"] for v in status] == ["124", "123"]
    r = invoke(tfs_server.url, {"instances": [1.0]}, "tfs-model-name=two_versions,tfs-model-version=125")
    assert r.status_code == 404
    assert r.json()["error"].endswith("has no version 125; it has 123, 124")
    r = requests.get(f"{tfs_server.url}/v1/models/two_versions/versions/00000124", timeout=30)
    assert r.json()["model_version_status"][0]["version"] == "124"


# -- JSON as Python writes it --------------------------------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_json_tokens_are_the_documented_400(tfs_server, value):
    r = invoke(tfs_server.url, json.dumps({"instances": [value, 1.0]}))  # NaN, Infinity, -Infinity tokens
    assert r.status_code == 400, r.text
    assert "input 'x'" in r.json()["error"] and "NaN or Infinity" in r.json()["error"]
    r = invoke(tfs_server.url, json.dumps({"signature_name": "regress_x_to_y", "examples": [{"x": value}]}),
               "tfs-method=regress")
    assert r.status_code == 400, r.text
    assert "feature 'x'" in r.json()["error"] and "NaN or Infinity" in r.json()["error"]


# -- multi-model mode: the same answers, and GET /models as AWS's container answers it ---------------

@pytest.fixture(scope="module", params=PROCESS_TARGETS)
def tfs_mme(request, tmp_path_factory):
    from tests.fixtures.tfs_models import copy_model
    from tests.host.test_multimodel import mme_server

    root = tmp_path_factory.mktemp("tfs-mme") / "models"
    copy_model("saved_model_half_plus_two_2_versions", root / "half_plus_two" / "model")
    with mme_server(request, request.param, root) as (server, models_root):
        yield server, models_root


def test_multi_model_lists_statuses_and_answers_scalars(tfs_mme):
    server, root = tfs_mme
    assert requests.get(f"{server.url}/models", timeout=10).json() == {}
    r = requests.post(f"{server.url}/models", json={"model_name": "half_plus_two", "url": f"{root}/half_plus_two/model"},
                      timeout=300)
    assert r.status_code == 200, r.text
    try:
        listed = requests.get(f"{server.url}/models", timeout=10).json()
        assert listed == {"half_plus_two": {"model_version_status": [
            {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            for v in ("124", "123")]}}
        r = requests.post(f"{server.url}/models/half_plus_two/invoke", json={"instances": [1.0, 2.0, 5.0]},
                          headers={ATTRS: "tfs-model-version=00000123"}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [2.5, 3.0, 4.5]}
    finally:
        requests.delete(f"{server.url}/models/half_plus_two", timeout=60)


# -- response content types, as AWS's container labels them ----------------------------------------
# (its tensorflowServing.js: the first type listed in Accept when it names application/json or
# application/jsonlines, else nginx's default_type application/json; here text/csv is answered in CSV,
# a documented difference)

@pytest.mark.parametrize("accept, content_type", [
    (None, "application/json"), ("*/*", "application/json"), ("application/json", "application/json"),
    ("application/jsonlines", "application/jsonlines"), ("application/jsons", "application/json"),
    ("application/jsonlines,application/json", "application/jsonlines"), ("text/csv", "text/csv"),
])
@pytest.mark.parametrize("body, request_type", [
    ({"instances": [1.0, 2.0]}, "application/json"), ("[1.0]\n[2.0]\n", "application/jsonlines"),
    ("[1.0]\n[2.0]\n", "application/jsons"), ("1.0\n2.0\n", "text/csv"),
])
def test_response_content_types(tfs_server, body, request_type, accept, content_type):
    headers = {"Accept": accept} if accept else {}
    r = invoke(tfs_server.url, body, content_type=request_type, **headers)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].split(";")[0] == content_type


@pytest.mark.parametrize("accept, content_type", [
    (None, "application/json"), ("application/jsonlines", "application/jsonlines"), ("text/csv", "application/json"),
])
def test_classify_and_regress_answer_tf_servings_json_in_any_accept(tfs_server, accept, content_type):
    headers = {"Accept": accept} if accept else {}
    r = invoke(tfs_server.url, {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]}, "tfs-method=regress",
               **headers)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].split(";")[0] == content_type and r.json() == {"results": [2.5]}
