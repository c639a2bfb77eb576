"""Batching never changes an answer (issue 23, point 15): a signature whose answer for a row
depends on the other rows of its batch is found at load and served unbatched, so concurrent callers
never see each other's inputs; row-wise signatures stay batched; SAGEMAKER_TFS_ENABLE_BATCHING=false
(AWS's name) turns batching off."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from tests.fixtures.report import report
from tests.fixtures.server import start_host_server


@pytest.fixture(scope="module")
def cross_row_model_dir(tmp_path_factory):
    """serving_default: y = x - mean(x over the batch) (alone, always 0); rowwise: y = 2x."""
    import tensorflow as tf

    class CrossRow(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def centred(self, x):
            return {"y": x - tf.reduce_mean(x, axis=0, keepdims=True)}

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def rowwise(self, x):
            return {"y": 2.0 * x}

    module = CrossRow()
    root = tmp_path_factory.mktemp("crossrow") / "model"
    tf.saved_model.save(module, str(root / "1"), signatures={"serving_default": module.centred,
                                                             "rowwise": module.rowwise})
    return root


def _burst(url: str, signature: str | None, n: int = 120) -> list[list[float]]:
    def one(i: int):
        body = {"instances": [[float(i), float(i + 1), float(-i), 7.0]]}
        if signature:
            body["signature_name"] = signature
        r = requests.post(f"{url}/invocations", data=json.dumps(body), timeout=60,
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        return r.json()["predictions"][0]

    with ThreadPoolExecutor(24) as pool:
        return list(pool.map(one, range(n)))


def test_a_cross_row_signature_is_served_unbatched(cross_row_model_dir):
    env = {"SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS": "20000", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}
    with start_host_server(cross_row_model_dir, env) as server:
        answers = _burst(server.url, None)
        doubled = _burst(server.url, "rowwise", 24)
        logs = server.logs()
    leaked = sum(1 for a in answers if np.any(np.abs(a) > 1e-5))
    report("batching", f"120 concurrent single-row calls of a cross-row signature: {leaked} answers showed "
                       f"another caller's rows")
    assert leaked == 0, [a for a in answers if np.any(np.abs(a) > 1e-5)][:5]
    assert all(len(a) == 4 for a in doubled)
    assert "signature serving_default: served unbatched" in logs, logs[-3000:]
    assert "signature rowwise: served unbatched" not in logs


def test_batching_can_be_turned_off_with_aws_s_variable(cross_row_model_dir):
    with start_host_server(cross_row_model_dir, {"SAGEMAKER_TFS_ENABLE_BATCHING": "false"}) as server:
        doubled = _burst(server.url, "rowwise", 8)
        logs = server.logs()
    assert all(len(a) == 4 for a in doubled)
    assert "batching off (SAGEMAKER_TFS_ENABLE_BATCHING=false)" in logs
