"""Server life cycle on the host: start-up, readiness, logging, shutdown."""
import json
import time

import numpy as np
import requests

from tests.fixtures.server import launch, start_host_server, wait_for_ping


def first_answer(url, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return requests.get(f"{url}/ping", timeout=2)
        except requests.RequestException:
            time.sleep(0.05)
    raise TimeoutError("no answer")


def test_ping_is_503_until_the_model_is_loaded_and_warm(mlp_model_dir):
    server = launch(mlp_model_dir.model_dir)
    try:
        first = first_answer(server.url)
        assert first.status_code == 503 and "still loading" in first.json()["error"]
        assert requests.post(f"{server.url}/invocations", json=[[0, 0, 0, 0]], timeout=5).status_code == 503
        wait_for_ping(server.url, 120, server.alive)
        assert "warm-up" in server.logs()
    finally:
        server.stop()


def test_start_line_states_the_effective_settings(mlp_server):
    line = next(l for l in mlp_server.logs().splitlines() if "serve " in l and " on 0.0.0.0:" in l)
    for field in ("arch=", "vcpus=", "workers=1", "intra_op_threads=", "inter_op_threads=",
                  "TF_ENABLE_ONEDNN_OPTS=1", "DNNL_DEFAULT_FPMATH_MODE=", "models model (versions 0, 1)", "serving_default"):
        assert field in line, field


def test_ping_is_not_logged_at_info(mlp_server):
    for _ in range(5):
        requests.get(f"{mlp_server.url}/ping", timeout=5)
    requests.get(f"{mlp_server.url}/missing", timeout=5)
    time.sleep(0.5)
    logs = mlp_server.logs()
    assert "/ping" not in logs
    assert "/missing 404" in logs  # the access log itself works, so the absence above means something


def test_keras_file_is_served(keras_file_model_dirs):
    built = keras_file_model_dirs["keras"]
    with start_host_server(built.model_dir) as server:
        r = requests.post(f"{server.url}/invocations", json={"instances": built.inputs["features"].tolist()},
                          timeout=30)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], built.expected["probabilities"], rtol=1e-5, atol=1e-6)


def test_image_model_takes_flat_csv_rows_and_bare_batches(image_model_dir):
    x, expected = image_model_dir.inputs["image"], image_model_dir.expected["output_0"]
    with start_host_server(image_model_dir.model_dir) as server:
        bare = requests.post(f"{server.url}/invocations", data=json.dumps(x.tolist()), timeout=30)
        csv = requests.post(f"{server.url}/invocations", headers={"Content-Type": "text/csv"},
                            data="\n".join(",".join(map(str, r)) for r in x.reshape(len(x), -1).tolist()),
                            timeout=30)
    np.testing.assert_allclose(bare.json()["predictions"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(csv.json()["predictions"], expected, rtol=1e-5, atol=1e-5)
