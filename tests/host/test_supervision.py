"""Supervised model processes (issue 23, points 1 to 5 and 18): liveness from the process and its
heartbeat, connections that never outlive the process they reached, restarts with back-off, and
shared memory owned by the run. Each test starts its own host server (they kill and freeze it)."""
from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests

from serve.supervision import FROZEN_AFTER, REPLACE_AFTER, RESTART_LIMIT
from tests.fixtures.report import report
from tests.fixtures.server import model_pids, start_host_server, wait_for_ping, worker_pids
from tests.host.test_modelproc import wait_until


def _post(url: str, body: dict, timeout: float = 60) -> requests.Response:
    return requests.post(f"{url}/invocations", data=json.dumps(body), timeout=timeout,
                         headers={"Content-Type": "application/json"})


def _ping(url: str) -> int:
    try:
        return requests.get(f"{url}/ping", timeout=2).status_code
    except requests.RequestException:
        return 0


def _segments(server) -> list[Path]:
    run = Path(next(p for p in psutil.Process(model_pid(server)).cmdline() if p.startswith("/") and "serve-ready" in p))
    return sorted(Path("/dev/shm").glob(f"{run.name}.*")) + sorted(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"{run.name}.*"))


def model_pid(server) -> int:
    return wait_until(lambda: next(iter(model_pids(server.master_pid())), None), 120, "a model process")


def test_no_request_fails_on_a_connection_to_a_replaced_process(mlp_model_dir):
    """Point 1: threads that were idle when the model process died must not use their dead connections."""
    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SAGEMAKER_MODEL_SERVER_THREADS": "16"}
    body = {"instances": mlp_model_dir.inputs["features"].tolist()}
    with start_host_server(mlp_model_dir.model_dir, env) as server:
        with ThreadPoolExecutor(32) as pool:            # many threads, each with its own connection
            assert all(r.status_code == 200 for r in pool.map(lambda _: _post(server.url, body), range(128)))
        old = model_pid(server)
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: _ping(server.url) != 200, 10, "/ping 503 after the kill")
        wait_for_ping(server.url, 120)
        assert model_pid(server) != old
        with ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(lambda _: _post(server.url, body).status_code, range(64)))
    report("supervision", f"kill -9 of the model process: after /ping 200, {codes.count(200)} of 64 requests 200")
    assert codes == [200] * 64, codes


def test_a_frozen_model_process_turns_ping_503_and_requests_504_at_the_timeout(mlp_model_dir):
    """Points 2 and 18: SIGSTOP; /ping 503 within a few seconds, requests end at the timeout, and a
    process that never resumes is replaced."""
    env = {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "3", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}
    body = {"instances": mlp_model_dir.inputs["features"].tolist()}
    with start_host_server(mlp_model_dir.model_dir, env) as server:
        assert _post(server.url, body).status_code == 200
        pid = model_pid(server)
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            with ThreadPoolExecutor(8) as pool:
                def timed(_):
                    started = time.monotonic()
                    r = _post(server.url, body, timeout=30)
                    return r.status_code, time.monotonic() - started, time.monotonic() - stopped

                calls = [pool.submit(timed, i) for i in range(8)]
                to_503 = wait_until(lambda: _ping(server.url) == 503 and time.monotonic() - stopped, 15, "/ping 503")
                results = [c.result() for c in calls]
            # a new connection now (ready mark gone): refused at once, not blocked in connect()
            late = time.monotonic()
            r = _post(server.url, body, timeout=30)
            late = time.monotonic() - late
            to_replaced = wait_until(lambda: model_pids(server.master_pid()) - {pid} and time.monotonic() - stopped,
                                     REPLACE_AFTER + 20, "a replacement")
            wait_for_ping(server.url, 120)
            after = _post(server.url, body)
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    first_504 = min((at for code, _, at in results if code == 504), default=None)
    report("supervision", f"SIGSTOP of the model process, timeout 3 s: /ping 503 after {to_503:.1f} s, first 504 "
                          f"after {first_504 or 0:.1f} s, slowest request {max(t for _, t, _ in results):.1f} s; "
                          f"replaced after {to_replaced:.1f} s")
    assert to_503 < FROZEN_AFTER + 3
    assert all(code in (503, 504) and took < 3 + 2.5 for code, took, _ in results), results
    assert r.status_code == 503 and late < 2.5, (r.status_code, late)
    assert after.status_code == 200
    assert psutil.pid_exists(pid) is False or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


FORKING = """
import json
import os
import time

import numpy as np

CHILD = os.fork()
if CHILD == 0:                       # a helper process that outlives its parent, holding every socket
    while True:
        time.sleep(1)
open(os.environ["SMTEST_CHILD_PID"], "w").write(str(CHILD))


def input_fn(body, content_type):
    return np.asarray(json.loads(body)["instances"], np.float32)


def predict_fn(data, model):
    time.sleep(float(os.environ.get("SMTEST_SLEEP", "0")))
    return {"output_0": data}


def output_fn(prediction, accept):
    return json.dumps({"n": len(prediction["output_0"])}), "application/json"
"""


def test_a_child_forked_by_user_code_does_not_hide_a_crash(mlp_model_dir, tmp_path):
    """Point 3: the model process dies during a request while a child it forked holds its sockets."""
    child_file = tmp_path / "child.pid"
    model_dir = mlp_model_dir.with_code(tmp_path / "model", FORKING)
    env = {"SMTEST_CHILD_PID": str(child_file), "SMTEST_SLEEP": "5", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "20"}
    child = None
    try:
        with start_host_server(model_dir, env) as server:
            child = int(child_file.read_text())
            with ThreadPoolExecutor(1) as pool:
                call = pool.submit(_post, server.url, {"instances": [[1, 2, 3, 4]]})
                time.sleep(1.5)
                os.kill(model_pid(server), signal.SIGKILL)
                killed = time.monotonic()
                r = call.result()
                took = time.monotonic() - killed
    finally:
        if child is not None:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
    report("supervision", f"model process killed with a forked child holding its sockets: {r.status_code} "
                          f"after {took:.2f} s")
    assert r.status_code == 503 and took < 2, (r.status_code, took, r.text)


def test_segments_are_removed_with_their_process_and_at_shutdown(mlp_model_dir):
    """Point 4: kill -9 of a model process or an HTTP worker, then SIGTERM: no segment of the run is left."""
    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SAGEMAKER_MODEL_SERVER_THREADS": "8"}
    body = {"instances": mlp_model_dir.inputs["features"].tolist() * 1000}   # a few segments of some size
    with start_host_server(mlp_model_dir.model_dir, env) as server:
        def load():
            with ThreadPoolExecutor(16) as pool:
                assert all(r.status_code == 200 for r in pool.map(lambda _: _post(server.url, body), range(32)))

        load()
        run = _segments(server)
        assert run, "no segment of the run found"
        prefix = run[0].name.split(".")[0]
        figures = {"before": len(run)}
        old = model_pid(server)
        mine = [p for p in run if f"-{old}-" in p.name]
        assert mine
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: not any(p.exists() for p in mine), 10, "the dead model process's segments removed")
        wait_for_ping(server.url, 120)
        load()
        worker = sorted(worker_pids(server.master_pid()))[0]
        theirs = [p for p in Path("/dev/shm").glob(f"{prefix}.*-{worker}-*")]
        assert theirs
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: not any(p.exists() for p in theirs), 10, "the dead HTTP worker's segments removed")
        load()
        figures["after kills"] = len(list(Path("/dev/shm").glob(f"{prefix}.*")))
    left = list(Path("/dev/shm").glob(f"{prefix}.*")) + list(Path("/tmp").glob(f"{prefix}.*"))
    report("supervision", f"segments of the run: {figures}, after SIGTERM {len(left)}")
    assert left == []


def test_a_crash_loop_ends_the_server_with_one_line(mlp_model_dir, tmp_path):
    """Restarts with back-off: the RESTART_LIMIT-th failure in the window ends a single-model server."""
    script = textwrap.dedent("""
        import os


        def input_fn(body, content_type):
            os._exit(7)                  # every request costs the model process
    """)
    model_dir = mlp_model_dir.with_code(tmp_path / "model", script)
    with start_host_server(model_dir) as server:
        started = time.monotonic()
        for attempt in range(RESTART_LIMIT):
            r = _post(server.url, {"instances": [[1, 2, 3, 4]]})
            assert r.status_code == 503, (attempt, r.status_code, r.text, server.logs()[-3000:])
            if attempt < RESTART_LIMIT - 1:
                # the master sees the exit on its next turn (about a second): until then /ping may still be 200
                wait_until(lambda: _ping(server.url) != 200, 10, "/ping 503 after the crash")
                wait_for_ping(server.url, 120, server.alive)
        code = server.process.wait(120)
        took = time.monotonic() - started
        lines = server.logs().splitlines()
    failing = [line for line in lines if "model process failing: " in line]
    report("supervision", f"{RESTART_LIMIT} model-process failures: exit {code} after {took:.0f} s")
    assert code == 3 and len(failing) == 1, "\n".join(lines[-60:])
    assert f"failed {RESTART_LIMIT} times" in failing[0] and "exit code" in failing[0], failing


def test_a_model_that_crashes_its_process_on_load_is_refused_with_the_reason(request, tmp_path, mlp_model_dir):
    """Multi-model: the model whose load kills the process, RESTART_LIMIT times, is refused; others go on."""
    from tests.host.test_multimodel import _copy, invoke, load, mme_server

    root = tmp_path / "models"
    _copy(mlp_model_dir.model_dir, root / "mlp" / "model")
    _copy(mlp_model_dir.model_dir, root / "crash" / "model",
          "import os\n\n\ndef model_fn(model_dir):\n    os._exit(9)\n\n\ndef predict_fn(data, model):\n    return data\n")
    with mme_server(request, "host", root) as (server, models):
        for _ in range(RESTART_LIMIT):
            assert load(server.url, "crash", models).status_code == 503
            wait_until(lambda: _ping(server.url) != 200, 10, "/ping 503 after the crash")
            wait_for_ping(server.url, 120, server.alive)
        refused = load(server.url, "crash", models)
        assert refused.status_code == 500 and "not loaded again" in refused.json()["error"], refused.text
        assert load(server.url, "mlp", models).status_code == 200
        assert invoke(server.url, "mlp", {"instances": mlp_model_dir.inputs["features"].tolist()}).status_code == 200
        assert server.alive()
