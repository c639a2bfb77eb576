"""The process under stress: a worker killed under load, SIGTERM / docker stop, body size limits and
slow clients. Each runs against a fresh server on the host and, where it is about the process or
the image, in the amd64 container. None depends on the CPU architecture (signals, sockets, the
same Python on both images), so none runs under arm64 emulation, where a start costs 60-140 s
and a stop's timing says more about qemu than about Graviton; the arm64 image starts, answers
and stops cleanly in tests/container and tests/deploy.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from urllib.parse import urlparse

import numpy as np
import pytest
import requests

from tests.fixtures.docker import SLOW_PREDICT_S
from tests.fixtures.report import report
from bench.soak import tree_rss
from tests.fixtures.server import raw_post, worker_pids
from tests.fixtures.targets import PROCESS_TARGETS, start_target

MAX_PAYLOAD = 6 * 1024 * 1024  # SAGEMAKER_MAX_PAYLOAD_IN_MB's default, in bytes
PING_LIMIT_S = 2.0             # SageMaker's health check gives /ping 2 s


def body_for(rows: np.ndarray) -> bytes:
    return json.dumps({"instances": rows.tolist()}).encode()


class Load:
    """Closed-loop load on fresh connections from THREADS threads; results are (time, outcome)."""

    def __init__(self, url: str, body: bytes, threads: int):
        self.url, self.body, self.threads = url, body, threads
        self.results: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = requests.post(f"{self.url}/invocations", data=self.body,
                                  headers={"Content-Type": "application/json", "Connection": "close"}, timeout=60)
                outcome = "ok" if r.status_code == 200 else f"http {r.status_code}: {r.text[:200]}"
            except requests.RequestException as exc:
                outcome = f"connection: {type(exc).__name__}"
            self.results.append((time.monotonic(), outcome))

    def __enter__(self):
        for t in self._workers:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._workers:
            t.join(90)


def ping_seconds(url: str) -> float | None:
    """How long GET /ping took to answer 200, or None if it did not (error, timeout, other status)."""
    start = time.monotonic()
    try:
        ok = requests.get(f"{url}/ping", timeout=PING_LIMIT_S).status_code == 200
    except requests.RequestException:
        ok = False
    return time.monotonic() - start if ok else None


# -- worker death -----------------------------------------------------------------------------------

@pytest.mark.parametrize("target", PROCESS_TARGETS)
def test_killed_worker_is_replaced_and_only_its_requests_fail(request, target, mlp_model_dir):
    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}
    with start_target(request, target, mlp_model_dir, env) as server:
        deadline = time.monotonic() + 120
        while server.logs().count("HTTP worker ready in") < 2:  # both workers are up, not just the first
            assert time.monotonic() < deadline, server.logs()[-3000:]
            time.sleep(0.5)
        workers = worker_pids(server.master_pid())
        assert len(workers) == 2
        load = Load(server.url, body_for(mlp_model_dir.inputs["features"]), threads=6)
        with load:
            time.sleep(3)
            victim = min(workers)
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            pings = []
            ping_ok_after = None
            replaced_ready_after = None
            while time.monotonic() - killed_at < 120:
                took = ping_seconds(server.url)
                pings.append(took)
                now = time.monotonic() - killed_at
                if took is not None and ping_ok_after is None:
                    ping_ok_after = now
                if replaced_ready_after is None and server.logs().count("HTTP worker ready in") >= 3:
                    replaced_ready_after = now
                if ping_ok_after is not None and replaced_ready_after is not None:
                    break
                time.sleep(0.2)
            time.sleep(3)  # traffic after the new worker is in
        now_workers = worker_pids(server.master_pid())

    outcomes = Counter(o if o == "ok" else o.split(":")[0] for _, o in load.results)
    http_errors = [o for _, o in load.results if o.startswith("http")]
    dropped = [o for t, o in load.results if o.startswith("connection")]
    report("worker death", f"{target}: kill -9 of 1 of 2 workers under load from 6 threads: "
                           f"{len(load.results)} requests, {len(dropped)} dropped with the worker, "
                           f"{len(http_errors)} HTTP errors; /ping 200 {ping_ok_after:.2f} s after the kill, "
                           f"replacement ready after {replaced_ready_after:.1f} s")
    assert victim not in now_workers and len(now_workers) == 2, (workers, now_workers)
    assert ping_ok_after is not None and ping_ok_after <= 15
    assert replaced_ready_after is not None
    assert not http_errors, http_errors[:5]           # no 5xx, and no 503 from a worker still loading
    assert len(dropped) <= load.threads, outcomes     # at most the requests in flight on the dead worker
    assert outcomes["ok"] > 50


# -- shutdown ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", PROCESS_TARGETS)
def test_sigterm_finishes_in_flight_refuses_new_and_exits_0(request, target, slow_model_dir):
    """SageMaker stops a container with SIGTERM and kills it 30 s later (docker stop -t 30)."""
    with start_target(request, target, slow_model_dir) as server:
        if target != "host":  # docker's SIGTERM reaches the server only if it is PID 1
            cmdline = server.exec("cat", "/proc/1/cmdline").stdout.split("\0")
            assert "/opt/venv/bin/serve" in cmdline, f"PID 1 is {cmdline}, not the serve command"
        result: dict = {}

        def in_flight():
            try:
                r = requests.post(f"{server.url}/invocations", json={"instances": [[1, 2, 3, 4]]}, timeout=60)
                result.update(status=r.status_code, body=r.text)
            except requests.RequestException as exc:
                result.update(error=repr(exc))

        caller = threading.Thread(target=in_flight)
        caller.start()
        time.sleep(2)  # inside predict_fn's sleep now
        assert caller.is_alive(), f"the slow request ended early: {result}"
        stopped: dict = {}
        signalled = time.monotonic()
        if target == "host":
            server.process.send_signal(signal.SIGTERM)
            stopper = threading.Thread(target=lambda: stopped.update(code=server.process.wait(60)))
        else:
            stopper = threading.Thread(target=lambda: stopped.update(code=server.stop(timeout=30)))
        stopper.start()
        time.sleep(1.5)
        tried = time.monotonic()
        with pytest.raises(requests.ConnectionError):  # refused (or, behind docker-proxy, closed unanswered)
            requests.get(f"{server.url}/ping", timeout=10)
        refused_in = time.monotonic() - tried  # not left waiting in a backlog until the server exits
        caller.join(60)
        stopper.join(90)
        took = time.monotonic() - signalled
        logs = server.logs()
    report("shutdown", f"{target}: in-flight request {result.get('status')}, exit code {stopped.get('code')} "
                       f"{took:.1f} s after SIGTERM")
    assert result.get("status") == 200, f"{result}\n{logs[-3000:]}"
    assert np.allclose(json.loads(result["body"])["predictions"], [[0.5, 0.5, 0.5]])
    assert stopped.get("code") == 0, logs[-3000:]
    assert refused_in < 1.0
    assert SLOW_PREDICT_S - 2 <= took < 30


# -- size -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", PROCESS_TARGETS)
def test_body_size_limit(request, target, mlp_model_dir):
    with start_target(request, target, mlp_model_dir) as server:
        rows = np.round(np.random.default_rng(0).random((60_000, 4)), 6)
        body = body_for(rows)
        assert len(body) < MAX_PAYLOAD - 4096
        body = body[:-2] + b" " * (MAX_PAYLOAD - 1024 - len(body)) + body[-2:]  # JSON allows the padding
        r = requests.post(f"{server.url}/invocations", data=body,
                          headers={"Content-Type": "application/json"}, timeout=120)
        assert r.status_code == 200, r.text[:500]
        assert len(r.json()["predictions"]) == len(rows)

        # the socket stays open with most of the body unsent: the answer must not wait for it
        over = raw_post(server.url, b"[" * 65536, declared=MAX_PAYLOAD + 1, timeout=20)
        assert over.status == 413 and "SAGEMAKER_MAX_PAYLOAD_IN_MB" in json.loads(over.body)["error"]
        assert over.seconds < 10

        pid = server.master_pid()
        before = tree_rss(pid)[0]
        for _ in range(3):
            claim = raw_post(server.url, b"{" * 1024, declared=1 << 30, timeout=20)
            assert claim.status == 413 and claim.seconds < 10
        grew = tree_rss(pid)[0] - before
        assert requests.get(f"{server.url}/ping", timeout=PING_LIMIT_S).status_code == 200
    report("size", f"{target}: {MAX_PAYLOAD - 1024} B body 200; {MAX_PAYLOAD + 1} B claim 413 in {over.seconds:.2f} s; "
                   f"three 1 GiB claims moved resident memory by {grew / 2**20:+.1f} MiB")
    assert grew < 8 * 2**20


# -- slow clients -----------------------------------------------------------------------------------

SLOW_CLIENTS = 40      # half dribble their headers, half their body, one byte every DRIBBLE_S
DRIBBLE_S = 0.5
SLOW_FOR_S = 20


def test_slow_clients_neither_block_ping_nor_starve_requests(mlp_server, mlp_model_dir):
    parsed = urlparse(mlp_server.url)
    stop = threading.Event()
    opened = []

    def dribble(index: int) -> None:
        try:
            with socket.create_connection((parsed.hostname, parsed.port), timeout=30) as sock:
                opened.append(index)
                if index % 2:
                    head, rest = b"POST /invocations HTTP/1.1\r\nHost: x\r\n", b"X-Slow: " + b"a" * 1000
                else:
                    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" \
                           b"Content-Length: 1000\r\n\r\n"
                    rest = b" " * 1000
                sock.sendall(head)
                for byte in rest:
                    if stop.wait(DRIBBLE_S):
                        return
                    sock.sendall(bytes([byte]))
        except OSError:
            pass

    slow = [threading.Thread(target=dribble, args=(i,), daemon=True) for i in range(SLOW_CLIENTS)]
    for t in slow:
        t.start()
    body = body_for(mlp_model_dir.inputs["features"])
    pings, answered = [], Counter()
    session = requests.Session()
    start = time.monotonic()
    time.sleep(1)
    while time.monotonic() - start < SLOW_FOR_S:
        pings.append(ping_seconds(mlp_server.url))
        r = session.post(f"{mlp_server.url}/invocations", data=body,
                         headers={"Content-Type": "application/json"}, timeout=10)
        answered[r.status_code] += 1
        np.testing.assert_allclose(r.json()["predictions"], mlp_model_dir.expected["output_0"], rtol=1e-5)
        time.sleep(0.2)
    stop.set()
    for t in slow:
        t.join(10)
    slowest = max(p for p in pings if p is not None) if any(p is not None for p in pings) else None
    report("slow clients", f"{len(opened)} slow connections for {SLOW_FOR_S} s: {len(pings)} pings, "
                           f"slowest {slowest:.3f} s, {sum(p is None for p in pings)} failed; "
                           f"requests {dict(answered)}")
    assert len(opened) == SLOW_CLIENTS
    assert all(p is not None for p in pings), "a /ping took 2 s or more, or failed"
    assert set(answered) == {200} and answered[200] >= 20
