"""An input that makes TensorFlow run out of memory (issue 23, point 16) is a 413 naming the input,
and other callers keep being answered meanwhile (how long they wait is reported)."""
from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.fixtures.report import report
from tests.fixtures.server import start_host_server


@pytest.fixture(scope="module")
def oom_model_dir(tmp_path_factory):
    """grow: n int64 (None,) -> total = sum(ones([n[0], n[0]])), memory chosen by the input;
    serving_default: x float32 (None,) -> y = x + 1."""
    import tensorflow as tf

    class Grow(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="n")])
        def grow(self, n):
            total = tf.reduce_sum(tf.ones(tf.stack([n[0], n[0]]), tf.float32))
            return {"total": tf.fill(tf.shape(n), total)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def plus(self, x):
            return {"y": x + 1.0}

    module = Grow()
    root = tmp_path_factory.mktemp("oom") / "model"
    tf.saved_model.save(module, str(root / "1"), signatures={"serving_default": module.plus, "grow": module.grow})
    return root


def test_tensorflow_out_of_memory_is_a_413_naming_the_input_and_others_are_served(oom_model_dir):
    with start_host_server(oom_model_dir, {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}) as server:
        url = f"{server.url}/invocations"
        ok = requests.post(url, json={"signature_name": "grow", "instances": [100]}, timeout=30)
        assert ok.status_code == 200 and ok.json()["predictions"] == [10000.0], ok.text
        waits, stop = [], threading.Event()

        def others():
            while not stop.is_set():
                started = time.monotonic()
                r = requests.post(url, json={"instances": [1.0, 2.0]}, timeout=60)
                assert r.status_code == 200 and r.json()["predictions"] == [2.0, 3.0], r.text
                waits.append(time.monotonic() - started)

        thread = threading.Thread(target=others)
        thread.start()
        try:
            time.sleep(0.5)
            answers = [requests.post(url, json={"signature_name": "grow", "instances": [3_000_000]}, timeout=60)
                       for _ in range(3)]
            time.sleep(0.5)
        finally:
            stop.set()
            thread.join(60)
        after = requests.post(url, json={"signature_name": "grow", "instances": [100]}, timeout=30)
    for r in answers:
        assert r.status_code == 413, r.text
        message = r.json()["error"]
        assert "'n' (1,)" in message and "out of memory" in message and "OOM when allocating" in message, message
        assert "/job:" not in message
    assert after.status_code == 200
    assert waits and max(waits) < 5, max(waits or [0])
    report("hardening", f"3 TensorFlow OOMs from the input: 413 each; {len(waits)} other requests meanwhile, "
                        f"slowest {max(waits) * 1000:.0f} ms")
