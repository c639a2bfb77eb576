"""One TensorFlow per instance (issue 11): HTTP workers without TensorFlow, a model process that holds
each model once and batches for every worker, and what happens when either kind of process dies.
Host and the amd64 image: processes and signals do not depend on the CPU architecture."""
from __future__ import annotations

import datetime
import json
import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest
import requests

from tests.fixtures.report import report
from tests.fixtures.server import launch, model_pids, wait_for_ping, worker_pids
from tests.fixtures.targets import PROCESS_TARGETS, bf16_tolerance, start_target


def maps_tensorflow(pid: int) -> bool:
    """Whether the process has TensorFlow's shared library mapped (i.e. imported TensorFlow)."""
    with open(f"/proc/{pid}/maps") as maps:
        return any("libtensorflow" in line or "_pywrap_tensorflow" in line for line in maps)


def wait_until(predicate, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def post(url, body, timeout=60):
    return requests.post(f"{url}/invocations", data=body, timeout=timeout,
                         headers={"Content-Type": "application/json", "Connection": "close"})


@pytest.fixture(scope="module", params=PROCESS_TARGETS)
def two_worker_server(request, image_model_dir):
    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SAGEMAKER_CONTAINER_LOG_LEVEL": "10",
           "SAGEMAKER_MODEL_SERVER_THREADS": "4"}
    with start_target(request, request.param, image_model_dir, env) as server:
        wait_until(lambda: len(worker_pids(server.master_pid())) == 2, 60, "two HTTP workers")
        yield server


def test_http_workers_have_no_tensorflow_and_one_model_process_does(two_worker_server, image_model_dir):
    server = two_worker_server
    body = json.dumps({"instances": image_model_dir.inputs["image"].tolist()})
    assert post(server.url, body).status_code == 200
    workers, models = worker_pids(server.master_pid()), model_pids(server.master_pid())
    assert len(workers) == 2 and len(models) == 1
    assert not any(maps_tensorflow(pid) for pid in workers)
    assert all(maps_tensorflow(pid) for pid in models)
    rss = {pid: psutil.Process(pid).memory_info().rss >> 20 for pid in workers | models}
    report("process roles", f"{server.name}: HTTP workers {sorted(rss[p] for p in workers)} MiB RSS each, "
                            f"model process {[rss[p] for p in models]} MiB")


def test_batches_mix_requests_from_different_http_workers(two_worker_server, image_model_dir):
    server = two_worker_server
    body = json.dumps({"instances": image_model_dir.inputs["image"][:1].tolist()})
    expected = image_model_dir.expected["output_0"][:1]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: post(server.url, body), range(400)))
    assert all(r.status_code == 200 for r in answers)
    np.testing.assert_allclose(answers[-1].json()["predictions"], expected, **bf16_tolerance(server))
    mixed = [m for m in re.findall(r"model call \S+: (\d+) requests, \d+ instances, from \[([^\]]*)\]", server.logs())
             if len(m[1].split(",")) > 1]
    assert mixed, "no model call stacked requests from two HTTP workers"
    report("batching", f"{server.name}: {len(mixed)} model calls stacked requests from both HTTP workers; "
                       f"largest {max(int(m[0]) for m in mixed)} requests")


@pytest.mark.parametrize("target", PROCESS_TARGETS)
def test_killed_model_process_is_seen_at_once_and_replaced(request, target, mlp_model_dir):
    body = json.dumps({"instances": mlp_model_dir.inputs["features"].tolist()})
    with start_target(request, target, mlp_model_dir, {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}) as server:
        (victim,) = model_pids(server.master_pid())
        results: list[tuple[float, int, float]] = []
        stop = threading.Event()

        def load():
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    r = post(server.url, body, timeout=30)
                    status, error = r.status_code, r.json().get("error", "") if r.status_code != 200 else ""
                    assert status == 200 or r.headers["Content-Type"].startswith("application/json"), error
                except requests.RequestException:
                    status = -1
                results.append((sent, status, time.monotonic() - sent))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(2)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        ping_503 = wait_until(lambda: requests.get(f"{server.url}/ping", timeout=5).status_code == 503, 5,
                              "/ping 503 after the kill")
        back = wait_until(lambda: requests.get(f"{server.url}/ping", timeout=5).status_code == 200, 180,
                          "/ping 200 again", step=0.25) and time.monotonic() - killed
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join(60)
        replacement = model_pids(server.master_pid())
        logs = server.logs()
    around = [(status, took) for sent, status, took in results if killed - 1 < sent < killed + back]
    failed = [(s, took) for s, took in around if s != 200]
    after = [s for sent, s, _ in results if sent > killed + back + 0.5]
    report("model process death", f"{target}: kill -9 under load from 4 threads: {len(failed)} requests "
                                  f"answered 503, slowest {max((t for _, t in failed), default=0):.2f} s; "
                                  f"/ping 200 again after {back:.1f} s; {len(after)} requests after, all 200")
    assert ping_503
    assert replacement and victim not in replacement
    ended = [line for line in logs.splitlines() if "model process 0 (pid" in line and " exited (" in line]
    assert ended and all("exited (signal 9)" in line for line in ended), ended   # how it ended, not "exit code 0"
    assert failed and all(s == 503 for s, _ in failed), failed[:5]     # a JSON 503, never a dropped connection
    assert max(t for _, t in failed) < 1.5                               # seen at once, never a hang
    assert after and all(s == 200 for s in after)


@pytest.mark.parametrize("target", PROCESS_TARGETS)
def test_killed_http_worker_is_replaced_in_under_2_s(request, target, mlp_model_dir):
    with start_target(request, target, mlp_model_dir, {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}) as server:
        workers = wait_until(lambda: len(worker_pids(server.master_pid())) == 2 and worker_pids(server.master_pid()),
                             60, "two HTTP workers")
        before = server.logs().count("HTTP worker ready in")
        victim = min(workers)
        killed = datetime.datetime.now()
        os.kill(victim, signal.SIGKILL)
        logs = wait_until(lambda: server.logs().count("HTTP worker ready in") > before and server.logs(), 30,
                          "a replacement worker", step=0.2)
        now = worker_pids(server.master_pid())
    # when the replacement said it was ready, by its own log line's clock (polling the log costs time itself)
    stamp = [line[:23] for line in logs.splitlines() if "HTTP worker ready in" in line][-1]
    took = (datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f") - killed).total_seconds()
    report("HTTP worker death", f"{target}: replacement HTTP worker ready {took:.2f} s after kill -9")
    assert victim not in now and len(now) == 2
    assert 0 < took < 2.0


SLOW_MODEL_FN = """
import time
import tensorflow as tf


def model_fn(model_dir):
    time.sleep(6)
    return tf.saved_model.load(model_dir + "/1")


def predict_fn(data, model):
    import numpy as np
    return model.signatures["serving_default"](features=tf.constant(np.asarray(data, np.float32)))["output_0"].numpy()
"""


def test_ping_is_never_200_while_the_model_loads(mlp_model_dir, tmp_path):
    model_dir = mlp_model_dir.with_code(tmp_path / "model", SLOW_MODEL_FN)
    server = launch(model_dir, {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})
    statuses = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                status = requests.get(f"{server.url}/ping", timeout=2).status_code
            except requests.RequestException:
                status = None
            statuses.append(status)
            if status == 200:
                break
            time.sleep(0.1)
        first = post(server.url, json.dumps({"instances": mlp_model_dir.inputs["features"].tolist()}))
        logs = server.logs()
    finally:
        server.stop()
    assert statuses[-1] == 200 and 503 in statuses
    assert first.status_code == 200, first.text
    np.testing.assert_allclose(first.json()["predictions"], mlp_model_dir.expected["output_0"], rtol=1e-5)
    assert "model process 1 of 1 ready" in logs


def test_model_process_failure_ends_the_server_with_its_reason(mlp_model_dir, tmp_path):
    script = "def model_fn(model_dir):\n    raise RuntimeError('no weights here')\n"
    model_dir = mlp_model_dir.with_code(tmp_path / "model", script)
    server = launch(model_dir)
    try:
        code = server.process.wait(120)
    finally:
        server.stop()
    line = next(l for l in server.logs().splitlines() if "startup failed:" in l)
    assert code == 3 and "model_fn" in line and "no weights here" in line


def test_start_line_states_the_layout(mlp_model_dir):
    server = launch(mlp_model_dir.model_dir, {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})
    try:
        wait_for_ping(server.url, 120, server.alive)
        logs = server.logs()
    finally:
        server.stop()
    start = next(l for l in logs.splitlines() if " on 0.0.0.0:" in l)
    assert "workers=2 model_processes=1 intra_op_threads=" in start
    assert re.search(r"model process 1 of 1 ready in [\d.]+ s \(pid \d+\): intra_op_threads=\d+ inter_op_threads=\d+", logs)
