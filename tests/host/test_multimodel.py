"""Multi-model endpoints (issue 12): SageMaker's /models contract, many models in one model process.

Run against a host server and the amd64 image with the models folder mounted read-only at
/opt/ml/models, as SageMaker mounts it. The models folder holds what users ship: a TF2 SavedModel
(the MLP), a TF1 SavedModel with classify/regress signatures and two versions, a model with a
toolkit-style code/inference.py and one with an AWS-container-style one.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests

from tests.fixtures.report import report
from tests.fixtures.server import model_pids, start_host_server
from tests.fixtures.targets import PROCESS_TARGETS, bf16_tolerance

ENV = {"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}

TOOLKIT = """
import json
import numpy as np


def input_fn(body, content_type):
    return np.asarray(json.loads(body)["x"], np.float32)


def output_fn(prediction, accept):
    return json.dumps({"toolkit": np.asarray(prediction["output_0"]).tolist()}), "application/json"
"""

TFS = """
import json


def input_handler(data, context):
    return json.dumps({"instances": json.loads(data.read())["rows"]})


def output_handler(response, context):
    return json.dumps({"tfs": response.json()["predictions"], "model": context.model_name}), "application/json"
"""

SLOW = """
import time


def model_fn(model_dir):
    time.sleep(4)
    return "slow"


def predict_fn(data, model):
    return data
"""


def _copy(src: Path, dst: Path, script: str | None = None) -> None:
    shutil.copytree(src, dst)
    if script:
        (dst / "code").mkdir()
        (dst / "code" / "inference.py").write_text(textwrap.dedent(script))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, mlp_model_dir, tf1_model_dir) -> Path:
    root = tmp_path_factory.mktemp("mme") / "models"
    root.mkdir()
    _copy(mlp_model_dir.model_dir, root / "mlp" / "model")
    _copy(tf1_model_dir.model_dir / "half", root / "half" / "model")
    _copy(mlp_model_dir.model_dir, root / "toolkit" / "model", TOOLKIT)
    _copy(mlp_model_dir.model_dir, root / "tfs" / "model", TFS)
    _copy(mlp_model_dir.model_dir, root / "slow" / "model", SLOW)
    (root / "broken" / "model" / "1").mkdir(parents=True)
    (root / "broken" / "model" / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    big = root / "huge" / "model"
    _copy(mlp_model_dir.model_dir, big)
    with open(big / "1" / "assets.bin", "wb") as f:  # sparse: a size on disk no machine here can hold
        f.truncate(64 << 30)
    os.chmod(root, 0o755)
    return root


@contextlib.contextmanager
def mme_server(request, target: str, models_dir: Path, env: dict | None = None):
    """A multi-model server; yields (handle, the models folder as the server sees it)."""
    env = {**ENV, **(env or {})}
    if target == "host":
        base = Path(tempfile.mkdtemp(prefix="sm-mme-"))
        (base / "models").symlink_to(models_dir)
        with start_host_server(None, {**env, "SAGEMAKER_BASE_DIR": str(base)}) as server:
            yield server, str(base / "models")
        return
    from tests.fixtures.docker import start_container

    with start_container(request.getfixturevalue(f"image_{target}"), None, env=env,
                         mounts={models_dir: "/opt/ml/models"}) as server:
        yield server, "/opt/ml/models"


@pytest.fixture(scope="module", params=PROCESS_TARGETS)
def mme(request, models_dir):
    with mme_server(request, request.param, models_dir) as (server, root):
        yield server, root


def load(url, name, root, model=None):
    return requests.post(f"{url}/models", json={"model_name": name, "url": f"{root}/{model or name}/model"},
                         timeout=300)


def invoke(url, name, body, **headers):
    return requests.post(f"{url}/models/{name}/invoke", data=json.dumps(body), timeout=60,
                         headers={"Content-Type": "application/json", **headers})


def test_ping_with_no_model_and_invoke_of_an_unloaded_model(mme):
    server, _ = mme
    if server.name != "host":
        labels = server.inspect()["Config"]["Labels"]
        assert labels["com.amazonaws.sagemaker.capabilities.multi-models"] == "true"
    assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200
    r = invoke(server.url, "mlp", {"instances": [[1, 2, 3, 4]]})
    assert r.status_code == 404 and "not loaded" in r.json()["error"]
    assert requests.get(f"{server.url}/models/mlp", timeout=5).status_code == 404
    r = requests.post(f"{server.url}/invocations", json={"instances": [[1, 2, 3, 4]]}, timeout=5)
    assert r.status_code == 404 and "/models/NAME/invoke" in r.json()["error"]


def test_load_invoke_list_get_unload(mme, mlp_model_dir):
    server, root = mme
    url = server.url
    r = load(url, "mlp", root)
    assert r.status_code == 200, r.text
    assert load(url, "mlp", root).status_code == 409
    x, expected = mlp_model_dir.inputs["features"], mlp_model_dir.expected["output_0"]
    r = invoke(url, "mlp", {"instances": x.tolist()}, Accept="application/jsonlines")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/jsonlines"), r.text
    np.testing.assert_allclose([json.loads(line) for line in r.text.splitlines()], expected, **bf16_tolerance(server))
    # version routing inside the model's own archive (0 is the decoy with zero weights)
    r = invoke(url, "mlp", {"instances": x.tolist()}, **{"X-Amzn-SageMaker-Custom-Attributes": "tfs-model-version=0"})
    np.testing.assert_allclose(r.json()["predictions"], np.full((3, 3), 1 / 3), rtol=1e-5)
    assert requests.get(f"{url}/models/mlp", timeout=5).json() == {"modelName": "mlp", "modelUrl": f"{root}/mlp/model"}
    assert load(url, "half", root).status_code == 200
    # as AWS's container lists them: each model's TF Serving status by name
    listed = requests.get(f"{url}/models", timeout=5).json()
    assert list(listed) == ["half", "mlp"]
    assert [v["version"] for v in listed["mlp"]["model_version_status"]] == ["1", "0"]
    assert {v["state"] for v in listed["half"]["model_version_status"]} == {"AVAILABLE"}
    assert requests.delete(f"{url}/models/mlp", timeout=60).status_code == 200
    gone = invoke(url, "mlp", {"instances": x.tolist()})
    assert gone.status_code == 404 and gone.headers["Content-Type"].startswith("application/json")
    assert requests.delete(f"{url}/models/mlp", timeout=60).status_code == 404
    assert requests.delete(f"{url}/models/half", timeout=60).status_code == 200


def test_load_refusals(mme):
    server, root = mme
    r = load(server.url, "nothing", root)
    assert r.status_code == 404 and f"{root}/nothing/model" in r.json()["error"]
    r = requests.post(f"{server.url}/models", json={"model_name": "x"}, timeout=5)
    assert r.status_code == 400 and "url" in r.json()["error"]
    r = load(server.url, "huge", root)
    assert r.status_code == 507 and "MiB" in r.json()["error"], r.text
    r = load(server.url, "broken", root)
    assert r.status_code >= 400 and "broken" not in requests.get(f"{server.url}/models", timeout=5).text
    assert "saved_model" in r.json()["error"].lower() or "decode" in r.json()["error"].lower(), r.text


def test_each_model_keeps_its_own_code_style_and_tf1_methods(mme, mlp_model_dir, tf1_model_dir):
    server, root = mme
    x, expected = mlp_model_dir.inputs["features"], mlp_model_dir.expected["output_0"]
    for name in ("toolkit", "tfs", "half"):
        assert load(server.url, name, root).status_code == 200
    try:
        r = invoke(server.url, "toolkit", {"x": x.tolist()})
        np.testing.assert_allclose(r.json()["toolkit"], expected, **bf16_tolerance(server))
        r = invoke(server.url, "tfs", {"rows": x.tolist()})
        np.testing.assert_allclose(r.json()["tfs"], expected, **bf16_tolerance(server))
        r = invoke(server.url, "half", {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 2.0}]},
                   **{"X-Amzn-SageMaker-Custom-Attributes": "tfs-method=regress,tfs-model-version=1"})
        assert r.json() == {"results": [3.0]}, r.text
    finally:
        for name in ("toolkit", "tfs", "half"):
            requests.delete(f"{server.url}/models/{name}", timeout=60)


def test_loading_one_model_does_not_stall_the_others(mme, mlp_model_dir):
    server, root = mme
    assert load(server.url, "mlp", root).status_code == 200
    body = {"instances": mlp_model_dir.inputs["features"].tolist()}
    latencies = []
    try:
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(load, server.url, "slow", root)          # model_fn sleeps 4 s
            second = pool.submit(load, server.url, "tfs", root)         # two loads at once
            while not slow.done():
                start = time.monotonic()
                assert invoke(server.url, "mlp", body).status_code == 200
                latencies.append(time.monotonic() - start)
            assert slow.result().status_code == 200 and second.result().status_code == 200
    finally:
        for name in ("mlp", "slow", "tfs"):
            requests.delete(f"{server.url}/models/{name}", timeout=60)
    report("multi-model", f"{server.name}: {len(latencies)} invokes of another model while one loaded for 4 s, "
                          f"slowest {max(latencies) * 1000:.0f} ms")
    assert len(latencies) > 10 and max(latencies) < 2.0   # a stalled one would wait for the 4 s load


def test_unload_frees_memory_for_the_next_model(request, tmp_path, mlp_model_dir):
    """What an unload freed is measured as what the process still holds after it, and each load must
    cost no more than the first (nothing accumulates)."""
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((1024,), name="x"), keras.layers.Dense(4096), keras.layers.Dense(2048),
                              keras.layers.Dense(1)])          # ~12.6 M weights, ~50 MB
    root = tmp_path / "models"
    model.export(str(root / "wide" / "model" / "1"), verbose=False)
    shutil.copytree(root / "wide", root / "wide2")
    _copy(mlp_model_dir.model_dir, root / "mlp" / "model")
    with mme_server(request, "host", root) as (server, models):
        (pid,) = model_pids(server.master_pid())
        rss = lambda: psutil.Process(pid).memory_info().rss  # noqa: E731
        assert load(server.url, "mlp", models).status_code == 200      # TensorFlow's own start-up costs
        costs = []
        for name in ("wide", "wide2", "wide", "wide2"):
            before = rss()
            assert load(server.url, name, models).status_code == 200
            assert invoke(server.url, name, {"instances": [[0.5] * 1024]}).status_code == 200
            costs.append(rss() - before)
            assert requests.delete(f"{server.url}/models/{name}", timeout=60).status_code == 200
        held = rss() - before
    report("multi-model", f"a 50 MB model loaded and unloaded 4 times: resident +{', +'.join(str(c >> 20) for c in costs)} MiB "
                          f"per load, {held >> 20} MiB held after the last unload")
    assert costs[0] > 20 << 20
    # each unload gives the model's memory back (to the system: TF_ONEDNN_USE_SYSTEM_ALLOCATOR, set by the
    # server; with oneDNN's pools it stayed for the next load), so loads never add up
    assert held < costs[0] // 3, (held >> 20, [c >> 20 for c in costs])
    assert all(c < costs[0] * 3 // 2 for c in costs[1:]), [c >> 20 for c in costs]


UNIVERSAL = """
import json


def output_handler(response, context):
    return json.dumps({"universal": True, "predictions": response.json()["predictions"]}), "application/json"
"""


def test_universal_inference_py_applies_to_models_without_code(request, tmp_path, mlp_model_dir):
    root = tmp_path / "models"
    _copy(mlp_model_dir.model_dir, root / "plain" / "model")
    _copy(mlp_model_dir.model_dir, root / "own" / "model", TFS)
    (root / "code").mkdir()
    (root / "code" / "inference.py").write_text(textwrap.dedent(UNIVERSAL))
    with mme_server(request, "host", root) as (server, models):
        assert load(server.url, "plain", models).status_code == 200
        assert load(server.url, "own", models).status_code == 200
        plain = invoke(server.url, "plain", {"instances": mlp_model_dir.inputs["features"].tolist()}).json()
        own = invoke(server.url, "own", {"rows": mlp_model_dir.inputs["features"].tolist()}).json()
    assert plain["universal"] is True and "tfs" in own and "universal" not in own


# -- issue 23: isolation (points 6 to 10; point 11 is tests/unit/test_multimodel_memory.py) ----------

def _mme_call(method, url, path, **kwargs):
    return requests.request(method, f"{url}{path}", timeout=kwargs.pop("timeout", 60), **kwargs)


def test_names_are_the_ones_the_routes_can_address(request, tmp_path, mlp_model_dir):
    """Point 6: a name that loads can be invoked and unloaded; one that could not be is a 400 before loading."""
    from urllib.parse import quote

    root = tmp_path / "models"
    _copy(mlp_model_dir.model_dir, root / "mlp" / "model")
    body = {"instances": mlp_model_dir.inputs["features"].tolist()}
    with mme_server(request, "host", root) as (server, models):
        url, model_url = server.url, f"{models}/mlp/model"
        for name in ("v2/digits", "a" * 1024, "0b1bcf0bc26fb5f25f2e0d3ce1e36f51", "sub dir/model.tar.gz", "ünï/cödé"):
            r = requests.post(f"{url}/models", json={"model_name": name, "url": model_url}, timeout=300)
            assert r.status_code == 200, (name[:40], r.text)
            path = quote(name, safe="/")
            assert _mme_call("GET", url, f"/models/{path}").json()["modelName"] == name
            assert _mme_call("POST", url, f"/models/{path}/invoke", json=body).status_code == 200, name[:40]
            assert _mme_call("DELETE", url, f"/models/{path}").status_code == 200, name[:40]
        for name, why in (("a" * 9000, "1024"), ("x\r\ny", "control"), (" lead", "white space"),
                          ("a//b", "'/' parts"), ("../mlp", "'/' parts"), ("a/./b", "'/' parts"),
                          ("\U0001F600" * 700, "request line")):
            r = requests.post(f"{url}/models", json={"model_name": name, "url": model_url}, timeout=60)
            assert r.status_code == 400 and why in r.json()["error"], (name[:20], r.text)
        assert _mme_call("GET", url, "/models").json() == {}   # nothing refused was loaded


def test_url_is_confined_to_the_models_root(request, tmp_path, mlp_model_dir):
    """Point 7: outside folders, '..', symlinks out, '/', '/proc' and over-long parts are 4xx, and the
    answer for an outside folder that exists is the answer for one that does not."""
    root = tmp_path / "models"
    _copy(mlp_model_dir.model_dir, root / "mlp" / "model")
    outside = tmp_path / "outside"
    _copy(mlp_model_dir.model_dir, outside / "model")
    (root / "escape").mkdir()
    (root / "escape" / "model").symlink_to(outside / "model")
    (root / "alias").mkdir()
    (root / "alias" / "model").symlink_to(root / "mlp" / "model")
    with mme_server(request, "host", root) as (server, models):
        def load_url(target, name="m"):
            started = time.monotonic()
            r = requests.post(f"{server.url}/models", json={"model_name": name, "url": target}, timeout=120)
            return r, time.monotonic() - started

        refusals = {}
        for target in (str(outside / "model"), str(outside / "nothing"), f"{models}/../outside/model",
                       f"{models}/escape/model", "/", "/proc", "/etc/passwd", models, "relative/model",
                       f"{models}/mlp/model\0"):
            r, took = load_url(target)
            assert r.status_code == 400, (target, r.status_code, r.text)
            assert took < 5, (target, took)                  # refused without walking anything
            refusals[target] = r.json()["error"]
        assert len(set(refusals.values())) == 1, refusals   # the same words whatever exists out there
        assert "outside" not in next(iter(refusals.values()))
        r, _ = load_url(f"{models}/{'x' * 300}/model")
        assert r.status_code == 404, r.text
        r, _ = load_url(f"{models}/alias/model", "alias")     # a symlink that stays inside is followed
        assert r.status_code == 200, r.text
        assert requests.delete(f"{server.url}/models/alias", timeout=60).status_code == 200


BIG_MODULE = """
import json
import numpy as np

BIG = np.ones(50 << 20, np.uint8)     # 50 MiB held by the module


def input_fn(body, content_type):
    return np.asarray(json.loads(body)["instances"], np.float32) + 0 * BIG[0]


def output_fn(prediction, accept):
    return json.dumps({"n": len(np.asarray(prediction["output_0"]))}), "application/json"
"""


def test_unloading_drops_the_user_module_and_what_it_holds(request, tmp_path, mlp_model_dir):
    """Point 8: six models whose inference.py holds 50 MiB each, loaded, invoked and unloaded."""
    root = tmp_path / "models"
    for i in range(6):
        _copy(mlp_model_dir.model_dir, root / f"big{i}" / "model", BIG_MODULE)
    _copy(mlp_model_dir.model_dir, root / "warm" / "model", BIG_MODULE)
    body = {"instances": mlp_model_dir.inputs["features"].tolist()}
    with mme_server(request, "host", root) as (server, models):
        (pid,) = model_pids(server.master_pid())
        rss = lambda: psutil.Process(pid).memory_info().rss  # noqa: E731
        assert load(server.url, "warm", models).status_code == 200        # TensorFlow's own first-load costs
        assert invoke(server.url, "warm", body).status_code == 200
        assert requests.delete(f"{server.url}/models/warm", timeout=60).status_code == 200
        before = rss()
        peak = 0
        for i in range(6):
            assert load(server.url, f"big{i}", models).status_code == 200
            assert invoke(server.url, f"big{i}", body).json() == {"n": 3}
            peak = max(peak, rss())
            assert requests.delete(f"{server.url}/models/big{i}", timeout=60).status_code == 200
        after = rss()
    report("multi-model", f"6 models with a 50 MiB module each, loaded, invoked, unloaded: model process "
                          f"{before >> 20} -> {after >> 20} MiB (peak {peak >> 20})")
    assert peak - before > 40 << 20                                   # each really held its 50 MiB
    assert after - before < 80 << 20, (before >> 20, after >> 20)    # 300 MiB held when modules stayed


SLOW_PREDICT = """
import json
import time

import numpy as np


def input_fn(body, content_type):
    return np.asarray(json.loads(body)["instances"], np.float32)


def predict_fn(data, model):
    time.sleep(3)
    return {"output_0": data}


def output_fn(prediction, accept):
    return json.dumps({"slow": np.asarray(prediction["output_0"]).shape[0]}), "application/json"
"""


def test_unload_waits_for_invokes_in_flight(request, tmp_path, mlp_model_dir):
    """Point 9: a DELETE during an invoke lets the invoke answer, then unloads."""
    root = tmp_path / "models"
    _copy(mlp_model_dir.model_dir, root / "slow" / "model", SLOW_PREDICT)
    body = {"instances": mlp_model_dir.inputs["features"].tolist()}
    with mme_server(request, "host", root) as (server, models):
        assert load(server.url, "slow", models).status_code == 200
        with ThreadPoolExecutor(3) as pool:
            calls = [pool.submit(invoke, server.url, "slow", body) for _ in range(2)]
            time.sleep(1.0)
            started = time.monotonic()
            deleted = requests.delete(f"{server.url}/models/slow", timeout=60)
            took = time.monotonic() - started
            answers = [c.result() for c in calls]
        assert deleted.status_code == 200, deleted.text
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert all(a.json() == {"slow": 3} for a in answers)
        assert took > 1.0                                      # it waited for them
        assert invoke(server.url, "slow", body).status_code == 404
    report("multi-model", f"DELETE during 2 invokes of 3 s: both answered 200, the unload took {took:.1f} s")


def test_tf_serving_routes_work_in_multi_model_mode(request, tmp_path, mlp_model_dir):
    """Point 10: GET /v1/models/NAME (and /versions/N), POST :predict, in multi-model mode."""
    root = tmp_path / "models"
    _copy(mlp_model_dir.model_dir, root / "mlp" / "model")
    with mme_server(request, "host", root) as (server, models):
        assert requests.get(f"{server.url}/v1/models/mlp", timeout=10).status_code == 404
        assert load(server.url, "mlp", models).status_code == 200
        r = requests.get(f"{server.url}/v1/models/mlp", timeout=10)
        assert r.status_code == 200, r.text
        versions = [v["version"] for v in r.json()["model_version_status"]]
        assert versions and all(v["state"] == "AVAILABLE" for v in r.json()["model_version_status"])
        r = requests.get(f"{server.url}/v1/models/mlp/versions/{versions[0]}", timeout=10)
        assert r.status_code == 200 and r.json()["model_version_status"][0]["version"] == versions[0], r.text
        assert requests.get(f"{server.url}/v1/models/mlp/versions/999", timeout=10).status_code == 404
        r = requests.post(f"{server.url}/v1/models/mlp:predict",
                          json={"instances": mlp_model_dir.inputs["features"].tolist()}, timeout=30)
        assert r.status_code == 200 and len(r.json()["predictions"]) == 3, r.text
