"""Multi-model endpoints (issue 12): memory with 1, 10 and 50 small models loaded, a loaded model's
invoke p50 at one connection against the same model in single-model mode, and load times.

    .venv/bin/python -m bench.multimodel [--models 1,10,50] [--requests 300]

Both servers are the host `serve` with one HTTP worker and one model process, started one after
the other in the same run; memory is the model process's RSS and PSS (bench.harness.memory_mib).
Writes bench/results/multimodel.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from bench.harness import free_port, memory_mib
from bench.models import ensure_models

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SERVE = REPO / ".venv" / "bin" / "serve"
BODY = json.dumps({"instances": [[0.5] * 64]})


def _start(base: Path, env: dict) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="bench-mme-", suffix=".log")[1])
    full = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "SAGEMAKER_BIND_TO_PORT": str(port),
            "SAGEMAKER_MODEL_SERVER_WORKERS": "1", **env}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(SERVE)], env=full, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return proc, url, log
        except requests.RequestException:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"serve did not start; log {log}")


def _model_pid(proc: subprocess.Popen) -> int:
    for line in subprocess.run(["ps", "-o", "pid=,ppid=,args=", "-e"], capture_output=True, text=True).stdout.splitlines():
        pid, ppid, args = line.split(None, 2)
        if int(ppid) == proc.pid and "serve.model_process.main" in args:
            return int(pid)
    raise RuntimeError("no model process")


def _p50(url: str, path: str, n: int) -> float:
    session = requests.Session()
    for _ in range(20):
        session.post(f"{url}{path}", data=BODY, headers={"Content-Type": "application/json"}, timeout=30)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        r = session.post(f"{url}{path}", data=BODY, headers={"Content-Type": "application/json"}, timeout=30)
        times.append(time.perf_counter() - start)
        assert r.status_code == 200, r.text
    return statistics.median(times) * 1000


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="1,10,50")
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args(argv)
    counts = sorted(int(c) for c in args.models.split(","))
    work = Path(tempfile.mkdtemp(prefix="bench-mme-"))
    mlp = ensure_models(work, ["mlp"])["mlp"] / "model"
    base = work / "mme"
    models = base / "models"
    for i in range(max(counts)):
        shutil.copytree(mlp, models / f"mlp{i:03d}" / "model")
    disk = sum(p.stat().st_size for p in (models / "mlp000").rglob("*") if p.is_file())
    result: dict = {"load_average": os.getloadavg(), "model_disk_kib": disk >> 10}

    single_base = work / "single"
    single_base.mkdir()
    (single_base / "model").symlink_to(mlp)
    proc, url, _ = _start(single_base, {})
    try:
        result["single_p50_ms"] = _p50(url, "/invocations", args.requests)
        result["single_model_process"] = memory_mib([_model_pid(proc)])
    finally:
        proc.terminate()
        proc.wait(30)

    proc, url, log = _start(base, {"SAGEMAKER_MULTI_MODEL": "true"})
    try:
        pid = _model_pid(proc)
        result["empty"] = memory_mib([pid])
        loads, memory = [], {}
        for i in range(max(counts)):
            start = time.perf_counter()
            r = requests.post(f"{url}/models", json={"model_name": f"mlp{i:03d}",
                                                     "url": str(models / f"mlp{i:03d}" / "model")}, timeout=300)
            loads.append(time.perf_counter() - start)
            assert r.status_code == 200, r.text
            if i + 1 in counts:
                memory[i + 1] = memory_mib([pid])
        result["memory_by_models"] = memory
        result["load_s"] = {"first": loads[0], "median": statistics.median(loads), "max": max(loads)}
        result["mme_p50_ms"] = _p50(url, "/models/mlp000/invoke", args.requests)
    finally:
        proc.terminate()
        proc.wait(30)

    base_rss = memory[counts[0]]["rss_mib"]
    lines = [
        "# Multi-model endpoints (bench/multimodel.py)", "",
        f"Load average at start {result['load_average'][0]:.1f}; the 64-feature MLP, {disk >> 10} KiB on disk; "
        "one HTTP worker, one model process; memory is the model process's.", "",
        "| models loaded | model process RSS MiB | PSS MiB | per added model |", "|---|---|---|---|",
    ]
    prev = None
    for n, m in memory.items():
        per = "" if prev is None else f"{(m['rss_mib'] - prev[1]) / (n - prev[0]):.1f} MiB"
        lines.append(f"| {n} | {m['rss_mib']} | {m['pss_mib']} | {per} |")
        prev = (n, m["rss_mib"])
    lines += ["", f"With no model loaded: {result['empty']['rss_mib']} MiB (TensorFlow imported). Single-model mode, "
              f"same model: {result['single_model_process']['rss_mib']} MiB.",
              "", f"Invoke p50 at one connection: multi-model {result['mme_p50_ms']:.2f} ms, single-model "
              f"{result['single_p50_ms']:.2f} ms, ratio {result['mme_p50_ms'] / result['single_p50_ms']:.2f} (target <= 1.1).",
              "", f"POST /models to 200: first {result['load_s']['first'] * 1000:.0f} ms, median "
              f"{result['load_s']['median'] * 1000:.0f} ms, slowest {result['load_s']['max'] * 1000:.0f} ms.",
              "", f"Memory from {counts[0]} to {counts[-1]} models: +{memory[counts[-1]]['rss_mib'] - base_rss:.0f} MiB."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "multimodel.json").write_text(json.dumps(result, indent=1, default=str))
    (RESULTS / "multimodel.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
