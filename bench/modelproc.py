"""Issue 11's targets for the split server (HTTP workers without TensorFlow + model processes),
each as a ratio to a reference measured in the same run on this machine.

    .venv/bin/python -m bench.modelproc            # default: every section, short runs (15-20 min on 2 loaded vCPUs)
    .venv/bin/python -m bench.modelproc --quick    # smoke run (~8 min): fewer requests, 3 s levels, 1 round
    .venv/bin/python -m bench.modelproc --sections memory,startup,npy64,throughput,ipc,profile
    .venv/bin/python -m bench.modelproc --merge --sections npy64 --rounds 4   # re-measure one section
    .venv/bin/python -m bench.modelproc --report-only                         # modelproc.md from the .json

Writes bench/results/modelproc.json and modelproc.md (targets, each met or missed, and the
reasoned model of the layout rule at 4 to 192 vCPUs). Load averages are recorded with every figure.

1. memory: `serve` with the CIFAR CNN at SAGEMAKER_MODEL_SERVER_WORKERS = 1, 2, 8, 32 (and 2
   workers with 2 model processes): seconds from start to the first GET /ping 200, then idle RSS,
   PSS and USS (psutil memory_full_info) summed over the server's process tree and per role
   (master, model process, HTTP workers), after a short burst so that every worker has answered;
   BYOC (Flask + gunicorn sync) with 1 and 2 workers, measured the same way.
   startup: start -> /ping 200 at 1, 2, 8 workers, three interleaved rounds.
2. npy64: one request of 64 CIFAR images as .npy, N sequential requests on one keep-alive
   connection, p50; against TensorFlow in-process at batch 64 (bench.inprocess, TF's default
   threads), with TF's default math (fp32) and with the server's (oneDNN BF16 where the CPU has
   AMX/bf16 units); the server also with max batch 64 and with STRICT fp32, and ModelClient.infer
   straight to its model process (no HTTP); --rounds pairs of (server, in-process) in all.
3. throughput: bench.run's own run_http/run_inprocess (wrk, one example per request as JSON) for
   the CNN and the MLP at 1 and 32 connections: this project (default, and STRICT fp32), BYOC with
   2 workers, TF in-process.
4. ipc: serve.contract.channel place/views and a multiprocessing.connection round trip against an echo
   process (no TensorFlow); and against the live model process: ModelClient.infer (channel +
   batcher + model call) vs the HTTP request end to end vs the model call in-process.
5. profile: CPU ms per request of each process (psutil, all threads) at 1 and 32 connections, for
   this project and for BYOC; py-spy (bench/.venvs/pyspy, made on first use) of one HTTP worker and
   the model process at 1 and 32 connections, and with --gil at 32: where the Python time goes.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import psutil

from . import run as R
from . import stacks as S
from .harness import REPO, RESULTS, TMP, ensure_venv, log, wrk, wrk_script
from .models import MODELS, saved_model_dir, write_bodies

SECTIONS = ("memory", "startup", "npy64", "throughput", "ipc", "profile")
MiB = 2 ** 20


def load1():
    return round(os.getloadavg()[0], 2)


# ------------------------------------------------------------------ processes and memory

def roles(server, kind: str) -> dict[str, list[int]]:
    """pids by role: master, model (serve.model_process.main), http (gunicorn workers)."""
    out = {"master": [], "model": [], "http": []}
    for pid in server.pids():
        try:
            cmd = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
        if pid == server.proc.pid:
            out["master"].append(pid)
        elif "serve.model_process.main" in cmd:
            out["model"].append(pid)
        else:
            out["http"].append(pid)
    return out


def memory(server, kind: str) -> dict:
    """RSS/PSS/USS in MiB, whole tree and per role."""
    rec = {"total": {"rss": 0.0, "pss": 0.0, "uss": 0.0, "processes": 0}}
    for role, pids in roles(server, kind).items():
        r = {"rss": 0.0, "pss": 0.0, "uss": 0.0, "processes": 0}
        for pid in pids:
            try:
                m = psutil.Process(pid).memory_full_info()
            except psutil.Error:
                continue
            for k in ("rss", "pss", "uss"):
                r[k] += getattr(m, k) / MiB
            r["processes"] += 1
        if r["processes"]:
            r["rss_each"] = r["rss"] / r["processes"]
            r["pss_each"] = r["pss"] / r["processes"]
            r["uss_each"] = r["uss"] / r["processes"]
        rec[role] = {k: round(v, 1) for k, v in r.items()}
        for k in ("rss", "pss", "uss", "processes"):
            rec["total"][k] += r[k]
    rec["total"] = {k: round(v, 1) for k, v in rec["total"].items()}
    return rec


def get_status(url: str, timeout=5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def wait_ping(server, timeout=600.0) -> float:
    """Seconds from now (just after the start) to the first /ping 200, polled every 50 ms."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited during start-up:\n{server.logs()}")
        if get_status(server.url + "/ping") == 200:
            return time.perf_counter() - t0
        time.sleep(0.05)
    raise TimeoutError(f"{server.name}: no /ping 200 after {timeout:.0f} s\n{server.logs()}")


def start_ours(model: str, env: dict):
    t0 = time.perf_counter()
    server, path, _ = S.start_ours(model, TMP / "models" / model, None, {k: str(v) for k, v in env.items()})
    try:
        wait_ping(server)
        startup = time.perf_counter() - t0  # from just before the Popen
    except Exception:
        server.stop()
        raise
    return server, startup


# ------------------------------------------------------------------ sequential requests

def sequential(port: int, body: bytes, ctype: str, accept: str, n: int, warm: int = 5) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    lat, status = [], None
    for i in range(warm + n):
        t = time.perf_counter()
        conn.request("POST", "/invocations", body, {"Content-Type": ctype, "Accept": accept})
        r = conn.getresponse()
        data = r.read()
        dt = time.perf_counter() - t
        status = r.status
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {data[:300]!r}")
        if i >= warm:
            lat.append(dt)
    conn.close()
    a = np.array(lat) * 1e3
    return {"n": n, "p50_ms": round(float(np.percentile(a, 50)), 3), "p90_ms": round(float(np.percentile(a, 90)), 3),
            "min_ms": round(float(a.min()), 3), "mean_ms": round(float(a.mean()), 3), "status": status,
            "response_bytes": len(data), "loadavg_1m": load1()}


def npy_body(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def inprocess(model: str, batches: str, duration: float, env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "bench.inprocess", "--saved-model", str(saved_model_dir(TMP, model)),
           "--body", str(TMP / "bodies" / f"{model}.json"), "--duration", str(duration), "--batches", batches]
    full = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1800, env=full)
    line = next((l for l in r.stdout.splitlines() if l.startswith("INPROCJSON ")), None)
    if not line:
        return {"status": "failed", "reason": (r.stderr or r.stdout)[-800:]}
    return {"status": "ok", "env": env or {}, "loadavg_1m": load1(), **json.loads(line[len("INPROCJSON "):])}


# ------------------------------------------------------------------ sections

def section_memory(a, res):
    out = res["memory"] = {"ours": [], "byoc": []}
    cnn_json = TMP / "bodies" / "cifar_cnn.json"
    script = wrk_script(cnn_json)
    for w in a.workers:
        log(f"[memory] ours workers={w}")
        rec = {"workers": w, "loadavg_1m_before": load1()}
        try:
            server, startup = start_ours("cifar_cnn", {"SAGEMAKER_MODEL_SERVER_WORKERS": w})
        except Exception as e:
            rec.update(status="failed", reason=f"{type(e).__name__}: {e}"[:1500])
            out["ours"].append(rec)
            continue
        try:
            rec["startup_to_ping_s"] = round(startup, 2)
            rec["first_answer"] = memory(server, "ours")
            # every worker answers at least once (gunicorn spreads connections over the workers)
            rec["burst"] = wrk(server.url + "/invocations", script, max(4, 2 * w), 2.0)
            time.sleep(3.0)
            rec["idle"] = memory(server, "ours")
            rec["status"] = "ok"
            t = rec["idle"]["total"]
            log(f"  workers={w:<3d} ping 200 after {startup:5.1f} s; idle RSS {t['rss']:7.0f} PSS {t['pss']:7.0f} "
                f"USS {t['uss']:7.0f} MiB ({t['processes']} processes)")
            if w == 2 and "npy64" in a.sections:
                section_npy64_server(a, res, server, "default")
        except Exception as e:
            rec.update(status="failed", reason=f"{type(e).__name__}: {e}"[:1500])
            traceback.print_exc()
        finally:
            server.stop()
        out["ours"].append(rec)
    log("[memory] ours workers=2, model processes=2")
    out["ours_two_model_processes"] = section_memory_two_model_processes(a, res, script)
    for w in a.byoc_workers:
        log(f"[memory] byoc workers={w}")
        rec = {"workers": w, "loadavg_1m_before": load1()}
        t0 = time.perf_counter()
        server, path, _ = S.start_byoc("cifar_cnn", TMP / "models" / "cifar_cnn", w)
        try:
            R.wait_ready(server, path, cnn_json.read_bytes(), timeout=300, check=S.check_json)
            rec["startup_to_first_answer_s"] = round(time.perf_counter() - t0, 2)
            rec["first_answer"] = memory(server, "byoc")
            # BYOC loads the model on a worker's first request: make every worker load it
            rec["burst"] = wrk(server.url + path, script, max(4, 2 * w), 2.0)
            time.sleep(3.0)
            rec["idle"] = memory(server, "byoc")
            rec["status"] = "ok"
            t = rec["idle"]["total"]
            log(f"  byoc workers={w}: idle RSS {t['rss']:7.0f} PSS {t['pss']:7.0f} USS {t['uss']:7.0f} MiB")
        except Exception as e:
            rec.update(status="failed", reason=f"{type(e).__name__}: {e}"[:1500])
        finally:
            server.stop()
        out["byoc"].append(rec)


def section_memory_two_model_processes(a, res, script):
    """2 HTTP workers and 2 model processes (SAGEMAKER_TFS_INSTANCE_COUNT=2): what one more costs."""
    rec = {"workers": 2, "model_processes": 2, "loadavg_1m_before": load1()}
    try:
        server, startup = start_ours("cifar_cnn", {"SAGEMAKER_MODEL_SERVER_WORKERS": 2,
                                                   "SAGEMAKER_TFS_INSTANCE_COUNT": 2})
    except Exception as e:
        rec.update(status="failed", reason=f"{type(e).__name__}: {e}"[:1500])
        return rec
    try:
        rec["startup_to_ping_s"] = round(startup, 2)
        rec["burst"] = wrk(server.url + "/invocations", script, 8, 2.0)
        time.sleep(3.0)
        rec["idle"] = memory(server, "ours")
        rec["status"] = "ok"
        t = rec["idle"]["total"]
        log(f"  workers=2 model processes=2: idle RSS {t['rss']:7.0f} PSS {t['pss']:7.0f} USS {t['uss']:7.0f} MiB")
    except Exception as e:
        rec.update(status="failed", reason=f"{type(e).__name__}: {e}"[:1500])
    finally:
        server.stop()
    return rec


def section_startup(a, res):
    """Start -> first /ping 200, repeated, the worker counts interleaved so load drifts hit all alike."""
    out = res["startup"] = {"rounds": [], "workers": a.startup_workers}
    for rnd in range(a.startup_repeats):
        row = {}
        for w in a.startup_workers:
            server = None
            try:
                server, startup = start_ours("cifar_cnn", {"SAGEMAKER_MODEL_SERVER_WORKERS": w})
                logs = server.logs(200000)
                mp = re.search(r"model process 1 of \d+ ready in ([\d.]+) s", logs)
                row[str(w)] = {"to_ping_s": round(startup, 2), "loadavg_1m": load1(),
                               "model_process_ready_s": float(mp.group(1)) if mp else None}
            except Exception as e:
                row[str(w)] = {"error": f"{type(e).__name__}: {e}"[:500]}
            finally:
                if server is not None:
                    server.stop()
        out["rounds"].append(row)
        log(f"[startup] round {rnd + 1}: " + ", ".join(f"{w} workers {v.get('to_ping_s')} s" for w, v in row.items()))
    for w in a.startup_workers:
        xs = [r[str(w)]["to_ping_s"] for r in out["rounds"] if "to_ping_s" in r.get(str(w), {})]
        out.setdefault("median_s", {})[str(w)] = round(statistics.median(xs), 2) if xs else None
        out.setdefault("min_s", {})[str(w)] = round(min(xs), 2) if xs else None


def model_process_p50(server, x: np.ndarray, n: int) -> float:
    """p50 ms of ModelClient.infer from this process straight to the server's model process: the
    channel, the model process's dispatch and batcher, and the model call; no HTTP, no codec."""
    from serve.http_worker.modelclient import ModelClient, catalog

    mp_pid = roles(server, "ours")["model"][0]
    client = ModelClient(Path(psutil.Process(mp_pid).cmdline()[-1]), 1)
    try:
        model = catalog(client.describe()).get()
        inputs = {next(iter(model.signatures["serving_default"].inputs)): x}
        for _ in range(5):
            client.infer(model, "serving_default", inputs, None, 60)
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            client.infer(model, "serving_default", inputs, None, 60)
            lat.append(time.perf_counter() - t)
    finally:
        client.close()
    return round(float(np.percentile(np.array(lat) * 1e3, 50)), 3)


def section_npy64_server(a, res, server, variant):
    x = MODELS["cifar_cnn"].example()
    x64 = np.repeat(x, 64, axis=0)
    body = npy_body(x64)
    d = res.setdefault("npy64", {}).setdefault("server", {})
    port = int(server.url.rsplit(":", 1)[1])
    d[variant] = {"npy_accept_npy": sequential(port, body, "application/x-npy", "application/x-npy", a.requests),
                  "npy_accept_json": sequential(port, body, "application/x-npy", "application/json", a.requests),
                  "model_process_direct_p50_ms": model_process_p50(server, x64, a.requests)}
    log(f"[npy64] server {variant}: p50 {d[variant]['npy_accept_npy']['p50_ms']} ms (Accept npy), "
        f"{d[variant]['npy_accept_json']['p50_ms']} ms (Accept json), "
        f"{d[variant]['model_process_direct_p50_ms']} ms (ModelClient.infer, no HTTP)")


def section_npy64(a, res):
    d = res.setdefault("npy64", {})
    d["body_bytes"] = len(npy_body(np.repeat(MODELS["cifar_cnn"].example(), 64, axis=0)))
    if "memory" not in a.sections:  # otherwise measured on the 2-worker server of the memory section
        server, _ = start_ours("cifar_cnn", {})
        try:
            section_npy64_server(a, res, server, "default")
        finally:
            server.stop()
    for variant, env in (("max_batch_64", {"SAGEMAKER_TFS_MAX_BATCH_SIZE": 64}),
                         ("strict_fp32", {"DNNL_DEFAULT_FPMATH_MODE": "STRICT"})):
        server, _ = start_ours("cifar_cnn", env)
        try:
            section_npy64_server(a, res, server, variant)
        finally:
            server.stop()
    log("[npy64] TF in-process, batch 32 and 64")
    d["inprocess_default"] = inprocess("cifar_cnn", "32,64", a.inproc_duration)
    d["inprocess_bf16"] = inprocess("cifar_cnn", "32,64", a.inproc_duration,
                                    {"DNNL_DEFAULT_FPMATH_MODE": "BF16", "TF_ENABLE_ONEDNN_OPTS": "1"})
    for k in ("inprocess_default", "inprocess_bf16"):
        if d[k]["status"] == "ok":
            log(f"  {k}: batch 64 p50 {d[k]['batches']['64']['p50_ms']} ms, batch 32 p50 {d[k]['batches']['32']['p50_ms']} ms")
    # more rounds of the headline pair (default server, in-process batch 64), each a fresh start
    d["rounds"] = []
    x64 = np.repeat(MODELS["cifar_cnn"].example(), 64, axis=0)
    for rnd in range(1, a.rounds):
        server, _ = start_ours("cifar_cnn", {})
        try:
            port = int(server.url.rsplit(":", 1)[1])
            srv = sequential(port, npy_body(x64), "application/x-npy", "application/x-npy", a.requests)
        finally:
            server.stop()
        ipd = inprocess("cifar_cnn", "64", a.inproc_duration)
        ipb = inprocess("cifar_cnn", "64", a.inproc_duration, {"DNNL_DEFAULT_FPMATH_MODE": "BF16", "TF_ENABLE_ONEDNN_OPTS": "1"})
        row = {"server_p50_ms": srv["p50_ms"], "loadavg_1m": load1(),
               "inprocess_default_b64_p50_ms": ipd["batches"]["64"]["p50_ms"] if ipd["status"] == "ok" else None,
               "inprocess_bf16_b64_p50_ms": ipb["batches"]["64"]["p50_ms"] if ipb["status"] == "ok" else None}
        d["rounds"].append(row)
        log(f"[npy64] round {rnd + 1}: {row}")


def section_throughput(a, res):
    ra = R.parse_args(["--concurrency", "1,32", "--warmup", str(a.warmup), "--duration", str(a.duration),
                       "--inproc-duration", str(a.inproc_duration), "--workers", "2", "--skip-arm64"])
    bodies = write_bodies(TMP, ["cifar_cnn", "mlp"])
    bases = {m: TMP / "models" / m for m in ("cifar_cnn", "mlp")}
    out = res["throughput"] = {"runs": [], "inprocess": {}, "inprocess_bf16": {},
                               "bench_run_args": vars(ra)}
    for m in ("cifar_cnn", "mlp"):
        log(f"[throughput] TF in-process {m} (default math, then BF16)")
        out["inprocess"][m] = R.run_inprocess(m, ra)
        saved = {k: os.environ.get(k) for k in ("DNNL_DEFAULT_FPMATH_MODE", "TF_ENABLE_ONEDNN_OPTS")}
        os.environ.update({"DNNL_DEFAULT_FPMATH_MODE": "BF16", "TF_ENABLE_ONEDNN_OPTS": "1"})
        try:
            out["inprocess_bf16"][m] = R.run_inprocess(m, ra)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    order = [("byoc", "byoc", []), ("ours", "ours", []), ("ours-strict", "ours", ["DNNL_DEFAULT_FPMATH_MODE=STRICT"])]
    for rnd in range(a.rounds):  # rounds alternate the order, so a drift of the load favours no stack
        for label, stack, env in (order if rnd % 2 == 0 else order[::-1]):
            ra.ours_env = env
            for m in ("cifar_cnn", "mlp"):
                log(f"[throughput] round {rnd + 1} {label} {m}")
                rec = R.run_http(stack, m, bases[m], ra, bodies)
                rec["label"], rec["round"] = label, rnd + 1
                out["runs"].append(rec)


# -- ipc ------------------------------------------------------------------------------------

def _echo_server(address: str) -> None:
    from multiprocessing.connection import Listener

    from serve.contract import channel

    listener = Listener(address, family="AF_UNIX")
    conn = listener.accept()
    attached, answer = {}, None
    while True:
        try:
            op, req = conn.recv()
        except (EOFError, OSError):
            break
        if op == "bare":
            conn.send(("ok", None))
            continue
        seg = attached.get(req["segment"])
        if seg is None:
            seg = attached[req["segment"]] = channel.Segment(Path(req["segment"]), 0, create=False)
        x = channel.views(seg, req["arrays"])["x"]
        y = {"y": np.asarray(x.reshape(len(x), -1)[:, :10], dtype=np.float32)}  # a (n, 10) answer, as the CNN's
        need = channel.room(y)
        if answer is None or answer.size < need:
            answer = channel.Segment.new("bench-out", need * 2)
        conn.send(("ok", {"segment": str(answer.path), "arrays": channel.place(answer, y)}))
    if answer is not None:
        answer.unlink()


def _p50_us(fn, n):
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    return round(float(np.percentile(np.array(lat) * 1e6, 50)), 1)


def ipc_micro(a) -> dict:
    import multiprocessing as mp
    from multiprocessing.connection import Client

    from serve.contract import channel

    address = str(TMP / f"bench-echo-{os.getpid()}.sock")
    Path(address).unlink(missing_ok=True)
    proc = mp.get_context("spawn").Process(target=_echo_server, args=(address,), daemon=True)
    proc.start()
    for _ in range(200):
        if Path(address).exists():
            break
        time.sleep(0.05)
    conn = Client(address, family="AF_UNIX")
    out = {"loadavg_1m": load1(), "shapes": {}}
    n = a.ipc_iterations
    out["bare_round_trip_us"] = _p50_us(lambda: (conn.send(("bare", {"model": "model", "version": "1"})), conn.recv()), n)
    answers: dict = {}
    for label, shape in (("mlp (1, 64)", (1, 64)), ("cnn (1, 32, 32, 3)", (1, 32, 32, 3)),
                         ("cnn x64 (64, 32, 32, 3)", (64, 32, 32, 3))):
        x = {"x": np.random.default_rng(0).random(shape, dtype=np.float32)}
        seg = channel.Segment.new("bench-in", channel.room(x) * 2)
        placed = channel.place(seg, x)

        def full():
            req = {"model": "model", "version": "1", "signature": "serving_default", "origin": 1,
                   "segment": str(seg.path), "arrays": channel.place(seg, x)}
            conn.send(("infer", req))
            reply = conn.recv()[1]
            s = answers.get(reply["segment"])
            if s is None:
                s = answers[reply["segment"]] = channel.Segment(Path(reply["segment"]), 0, create=False)
            return channel.views(s, reply["arrays"])["y"]

        full()
        k = n if shape[0] == 1 else max(200, n // 5)
        out["shapes"][label] = {
            "bytes": int(x["x"].nbytes),
            "place_us": _p50_us(lambda: channel.place(seg, x), k),
            "views_us": _p50_us(lambda: channel.views(seg, placed), k),
            "round_trip_us": _p50_us(full, k),
        }
        seg.unlink()
        seg.close()
    conn.close()
    proc.join(5)
    Path(address).unlink(missing_ok=True)
    return out


def ipc_live(a, res) -> dict:
    """Against a live MLP server: HTTP end to end vs ModelClient.infer vs in-process model call."""
    from serve.http_worker.modelclient import ModelClient, catalog

    out = {}
    server, startup = start_ours("mlp", {})
    try:
        port = int(server.url.rsplit(":", 1)[1])
        body = (TMP / "bodies" / "mlp.json").read_bytes()
        out["http_json_c1"] = sequential(port, body, "application/json", "application/json", a.requests * 4)
        mp_pid = roles(server, "ours")["model"][0]
        run_dir = Path(psutil.Process(mp_pid).cmdline()[-1])
        client = ModelClient(run_dir, 1)
        models = catalog(client.describe())
        model = models.get()
        name = next(iter(model.signatures["serving_default"].inputs))
        x = {name: MODELS["mlp"].example()}
        for _ in range(20):
            client.infer(model, "serving_default", x, None, 60)
        lat = []
        for _ in range(a.requests * 4):
            t = time.perf_counter()
            client.infer(model, "serving_default", x, None, 60)
            lat.append(time.perf_counter() - t)
        client.close()
        out["modelclient_infer_p50_ms"] = round(float(np.percentile(np.array(lat) * 1e3, 50)), 3)
        out["modelclient_infer_n"] = len(lat)
        out["loadavg_1m"] = load1()
    finally:
        server.stop()
    ip = inprocess("mlp", "1", a.inproc_duration, {"DNNL_DEFAULT_FPMATH_MODE": "BF16", "TF_ENABLE_ONEDNN_OPTS": "1"})
    out["inprocess_bf16_batch1_p50_ms"] = ip["batches"]["1"]["p50_ms"] if ip["status"] == "ok" else None
    return out


def section_ipc(a, res):
    log("[ipc] channel micro-benchmark (echo process, no TensorFlow)")
    res["ipc"] = {"micro": ipc_micro(a)}
    log(f"  {json.dumps(res['ipc']['micro'])}")
    log("[ipc] live MLP server: HTTP vs ModelClient.infer vs in-process")
    res["ipc"]["live_mlp"] = ipc_live(a, res)
    log(f"  {json.dumps(res['ipc']['live_mlp'])}")


# -- profile ---------------------------------------------------------------------------------

def cpu_seconds(pids) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def thread_cpu(pid) -> dict[str, float]:
    """CPU seconds per thread name (comm) of one process."""
    out: dict[str, float] = defaultdict(float)
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            rest = stat[stat.rindex(")") + 2:].split()
            out[re.sub(r"\d+$", "#", comm)] += (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError):
            pass
    return dict(out)


PYSPY_RATE = 199
# leaf frames of a thread that waits (py-spy's own idle detection does not work here: it reports
# every thread as active), dropped before the shares are taken
WAITING = re.compile(r"^(wait|_wait_for_tstate_lock|select|poll|_poll|_recv|recv_into|readinto|accept|_worker|sleep|"
                     r"_exit_with_parent)$")

BUCKETS = (  # innermost frame that matches decides (file fragment, function regex or None, bucket)
    ("serve/contract/channel.py", None, "channel (shared memory)"),
    ("multiprocessing/connection.py", None, "socket round trip (multiprocessing.connection)"),
    ("serve/http_worker/modelclient.py", None, "modelclient"),
    ("serve/contract/codecs.py", r"^(encode|_encode|_json_ready|_text|_rows|_only|_binary)", "encode"),
    ("serve/contract/codecs.py", None, "decode"),
    ("serve/model_process/batching.py", None, "batcher"),
    ("tensorflow/", None, "TensorFlow call"),
    ("serve/model_process/model.py", None, "model.py (feed, call)"),
    ("serve/contract/handlers.py", None, "handlers"),
    ("serve/model_process/main.py", None, "modelproc dispatch"),
    ("serve/http_worker/app.py", None, "Flask route (serve/http_worker/app.py)"),
    ("flask/", None, "Flask/werkzeug"),
    ("werkzeug/", None, "Flask/werkzeug"),
    ("gunicorn/", None, "gunicorn (HTTP parse, sockets, threads)"),
    ("concurrent/futures", None, "threads / futures"),
    ("threading.py", None, "threads / futures"),
    ("selectors.py", None, "sockets / selectors"),
    ("socket.py", None, "sockets / selectors"),
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::\d+)?\)$")


def _bucket(stack: list[str]) -> str:
    for frame in reversed(stack):
        m = _FRAME.match(frame.strip())
        if not m:
            continue
        for frag, func, name in BUCKETS:
            if frag in m["file"] and (func is None or re.search(func, m["func"])):
                return name
    return "other"


def pyspy_summary(path: Path) -> dict:
    buckets, leaves, total, waiting = Counter(), Counter(), 0, 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f]
        if frames and frames[0].startswith(("thread (", "process ")):
            frames = frames[1:]
        n = int(count)
        leaf = _FRAME.match(frames[-1].strip()) if frames else None
        if leaf is None or WAITING.match(leaf["func"]):
            waiting += n
            continue
        total += n
        buckets[_bucket(frames)] += n
        if frames:
            m = _FRAME.match(frames[-1].strip())
            leaves[f"{m['func']} ({Path(m['file']).name})" if m else frames[-1]] += n
    return {"samples": total, "waiting_samples_dropped": waiting,
            "buckets": {k: round(100 * v / total, 1) for k, v in buckets.most_common()} if total else {},
            "top_leaves": {k: round(100 * v / total, 1) for k, v in leaves.most_common(10)} if total else {}}


def profile_window(server, rl, script, url, c, seconds, warm=2.0) -> dict:
    wrk(url, script, c, warm)
    pids = [p for ps in rl.values() for p in ps]
    before = cpu_seconds(pids)
    model_threads_before = {p: thread_cpu(p) for p in rl["model"]}
    t0 = time.perf_counter()
    m = wrk(url, script, c, seconds)
    wall = time.perf_counter() - t0
    after = cpu_seconds(pids)
    req = m["requests"] or 1
    per = {}
    for role, ps in rl.items():
        cpu = sum(after.get(p, 0) - before.get(p, 0) for p in ps)
        per[role] = {"cpu_ms_per_request": round(cpu * 1e3 / req, 3), "cpu_share_of_2_vcpus": round(cpu / wall / 2, 3)}
    threads = defaultdict(float)
    for p in rl["model"]:
        aft = thread_cpu(p)
        for k, v in aft.items():
            threads[k] += v - model_threads_before[p].get(k, 0.0)
    per["model_threads_cpu_ms_per_request"] = {k: round(v * 1e3 / req, 3) for k, v in
                                                sorted(threads.items(), key=lambda kv: -kv[1]) if v > 0}
    return {"wrk": m, "wall_s": round(wall, 2), "per_process": per}


def pyspy_window(pyspy, rl, script, url, c, seconds, model, gil=False) -> dict:
    """py-spy record of one HTTP worker and the model process while wrk runs at C connections.
    py-spy's own sampling takes CPU from the same 2 cores: only its shares are used."""
    load = {}
    th = threading.Thread(target=lambda: load.update(wrk(url, script, c, seconds + 3)), daemon=True)
    th.start()
    time.sleep(1.0)
    spies = []
    for role in ("http", "model"):
        pid = rl[role][0]
        path = TMP / f"pyspy-{model}-c{c}-{role}{'-gil' if gil else ''}.txt"
        path.unlink(missing_ok=True)
        spies.append((role, path, subprocess.Popen(
            [str(pyspy), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", str(PYSPY_RATE), "-f", "raw",
             *(["--gil"] if gil else ["--nonblocking"]), "-o", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    out = {}
    for role, path, p in spies:
        _, err = p.communicate(timeout=seconds + 60)
        out[role] = pyspy_summary(path) if path.exists() else {"error": err.decode(errors="replace")[-500:]}
    th.join(seconds + 30)
    out["load_rps"] = load.get("rps")
    return out


def section_profile(a, res):
    out = res["profile"] = {}
    pyspy = None
    try:
        req = TMP / "pyspy-requirements.txt"
        req.parent.mkdir(parents=True, exist_ok=True)
        req.write_text("py-spy==0.4.2\n")
        pyspy = ensure_venv("pyspy", req) / "bin" / "py-spy"
    except Exception as e:
        out["pyspy_error"] = f"{type(e).__name__}: {e}"
    for model in ("cifar_cnn", "mlp"):
        # BYOC's CPU per request the same way: a comparison that a busy shared machine disturbs less
        # than req/s (the CPU a request costs, not the CPU the server happened to get)
        log(f"[profile] byoc {model}")
        server, path, _ = S.start_byoc(model, TMP / "models" / model, 2)
        rec = out[f"byoc_{model}"] = {}
        try:
            body = TMP / "bodies" / f"{model}.json"
            R.wait_ready(server, path, body.read_bytes(), timeout=300, check=S.check_json)
            wrk(server.url + path, wrk_script(body), 4, 2.0)  # both workers load the model
            rl = roles(server, "byoc")
            for c in (1, 32):
                rec[f"c{c}"] = profile_window(server, rl, wrk_script(body), server.url + path, c, a.profile_seconds)
                pp = rec[f"c{c}"]["per_process"]
                log(f"  byoc c{c}: {rec[f'c{c}']['wrk']['rps']} req/s; CPU ms/request: workers "
                    f"{pp['http']['cpu_ms_per_request']}, master {pp['master']['cpu_ms_per_request']}")
        except Exception as e:
            rec["error"] = f"{type(e).__name__}: {e}"[:1000]
        finally:
            server.stop()
        log(f"[profile] {model}")
        server, _ = start_ours(model, {})
        rec = out[model] = {}
        try:
            rl = roles(server, "ours")
            out["http_workers"] = len(rl["http"])
            body = TMP / "bodies" / f"{model}.json"
            script = wrk_script(body)
            url = server.url + "/invocations"
            for c in (1, 32):
                rec[f"c{c}"] = profile_window(server, rl, script, url, c, a.profile_seconds)
                pp = rec[f"c{c}"]["per_process"]
                log(f"  c{c}: {rec[f'c{c}']['wrk']['rps']} req/s; CPU ms/request: http "
                    f"{pp['http']['cpu_ms_per_request']}, model {pp['model']['cpu_ms_per_request']}, "
                    f"master {pp['master']['cpu_ms_per_request']}")
            if pyspy is not None:
                for c, gil in ((1, False), (32, False), (32, True)):
                    name = f"pyspy_{'gil_' if gil else ''}c{c}"
                    rec[name] = pyspy_window(pyspy, rl, script, url, c, a.profile_seconds, model, gil)
                    for key, sp in rec[name].items():
                        if isinstance(sp, dict):
                            log(f"  py-spy c{c} {key}: {sp.get('samples')} active samples "
                                f"{json.dumps(sp.get('buckets', sp))[:300]}")
        finally:
            server.stop()


# ------------------------------------------------------------------ report

def _ratio(x, y):
    return round(x / y, 3) if x is not None and y else None


def derive(res) -> dict:
    """The issue's target figures out of the measurements."""
    d = {}
    mem = res.get("memory")
    if mem:
        ours = {r["workers"]: r for r in mem["ours"] if r.get("status") == "ok"}
        byoc = {r["workers"]: r for r in mem["byoc"] if r.get("status") == "ok"}
        if 2 in ours and 2 in byoc:
            for k in ("rss", "pss"):
                d[f"idle_{k}_2w_vs_byoc_2w"] = _ratio(ours[2]["idle"]["total"][k], byoc[2]["idle"]["total"][k])
        ws = sorted(ours)
        if len(ws) >= 2:
            lo, hi = ws[0], ws[-1]
            for k in ("rss", "pss", "uss"):
                d[f"per_added_worker_{k}_mib"] = round(
                    (ours[hi]["idle"]["total"][k] - ours[lo]["idle"]["total"][k]) / (hi - lo), 1)
            d["per_added_worker_span"] = f"{lo}->{hi}"
        d["startup_s_memory_runs"] = {w: r["startup_to_ping_s"] for w, r in sorted(ours.items())}
        if 1 in ours and 32 in ours:
            for k in ("rss", "pss", "uss"):
                d[f"per_added_worker_{k}_mib_2_to_32"] = round(
                    (ours[32]["idle"]["total"][k] - ours[2]["idle"]["total"][k]) / 30, 1) if 2 in ours else None
        two = mem.get("ours_two_model_processes")
        if two and two.get("status") == "ok" and 2 in ours:
            for k in ("rss", "pss", "uss"):
                d[f"added_model_process_{k}_mib"] = round(two["idle"]["total"][k] - ours[2]["idle"]["total"][k], 1)
    st = res.get("startup")
    if st and st.get("median_s"):
        d["startup_median_s"] = st["median_s"]
        ws = [w for w in st["workers"] if st["median_s"].get(str(w))]
        if len(ws) >= 2:
            d["startup_growth_most_vs_fewest_workers"] = _ratio(st["median_s"][str(ws[-1])], st["median_s"][str(ws[0])])
    n = res.get("npy64")
    if n and n.get("server", {}).get("default"):
        srv = n["server"]["default"]["npy_accept_npy"]["p50_ms"]
        for k in ("inprocess_default", "inprocess_bf16"):
            if n.get(k, {}).get("status") == "ok":
                per_round = [_ratio(srv, n[k]["batches"]["64"]["p50_ms"])]
                per_round += [_ratio(r["server_p50_ms"], r[f"{k}_b64_p50_ms"]) for r in n.get("rounds", [])
                              if r.get(f"{k}_b64_p50_ms")]
                d[f"npy64_p50_vs_{k}_b64_rounds"] = per_round
                d[f"npy64_p50_vs_{k}_b64"] = round(statistics.median(per_round), 3)
        for v in ("max_batch_64", "strict_fp32"):
            if v in n["server"] and n.get("inprocess_bf16", {}).get("status") == "ok":
                ref = n["inprocess_bf16" if v != "strict_fp32" else "inprocess_default"]["batches"]["64"]["p50_ms"]
                d[f"npy64_p50_{v}_vs_same_math_inprocess_b64"] = _ratio(
                    n["server"][v]["npy_accept_npy"]["p50_ms"], ref)
    pr = res.get("profile")
    if pr:
        for m in ("cifar_cnn", "mlp"):
            for c in ("c1", "c32"):
                o, b = pr.get(m, {}).get(c), pr.get(f"byoc_{m}", {}).get(c)
                if o and b:
                    oc = sum(o["per_process"][r]["cpu_ms_per_request"] for r in ("http", "model", "master"))
                    bc = sum(b["per_process"][r]["cpu_ms_per_request"] for r in ("http", "master"))
                    d[f"{m}_{c}_cpu_ms_per_request_ours_byoc"] = [round(oc, 3), round(bc, 3)]
                    d[f"{m}_{c}_requests_per_cpu_second_vs_byoc"] = _ratio(bc, oc)
    t = res.get("throughput")
    if t:
        def lvl(label, model, c, rnd):
            r = next((r for r in t["runs"] if r.get("label") == label and r["model"] == model
                      and r.get("round", 1) == rnd and r.get("status") == "ok"), None)
            return next((l for l in r["levels"] if l["connections"] == c), None) if r else None
        rounds = sorted({r.get("round", 1) for r in t["runs"]})
        per: dict[str, list] = defaultdict(list)
        for rnd in rounds:
            for m in ("cifar_cnn", "mlp"):
                b32, b1 = lvl("byoc", m, 32, rnd), lvl("byoc", m, 1, rnd)
                for label in ("ours", "ours-strict"):
                    o32, o1 = lvl(label, m, 32, rnd), lvl(label, m, 1, rnd)
                    if o32 and b32:
                        per[f"{m}_{label}_c32_vs_byoc"].append(_ratio(o32["rps"], b32["rps"]))
                    if o1 and b1:
                        per[f"{m}_{label}_c1_p50_vs_byoc"].append(_ratio(o1["p50_ms"], b1["p50_ms"]))
                    for ref in ("inprocess", "inprocess_bf16"):
                        ip = t[ref].get(m, {})
                        if o32 and ip.get("status") == "ok":
                            per[f"{m}_{label}_c32_vs_tf_{ref}_best"].append(_ratio(o32["rps"], ip["best_items_per_s"]))
        for k, vs in per.items():
            d[k] = round(statistics.median(vs), 3)
            d[k + "_rounds"] = vs
    return d


def fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return str(v)


def _verdict(ok):
    return "–" if ok is None else ("**met**" if ok else "**missed**")


def targets_md(res) -> list[str]:
    d = res["derived"]
    rows = []

    def row(target, value, ok, note=""):
        rows.append(f"| {target} | {value} | {_verdict(ok)} | {note} |")

    v = d.get("idle_rss_2w_vs_byoc_2w")
    if v is not None:
        row("idle RSS, 2 HTTP workers ≤ 0.7× BYOC with 2 workers", f"{v:.2f}× (PSS {d.get('idle_pss_2w_vs_byoc_2w', 0):.2f}×)",
            v <= 0.7)
    v = d.get("per_added_worker_rss_mib")
    if v is not None:
        row(f"each added HTTP worker ≤ 80 MiB (RSS, {d.get('per_added_worker_span')})",
            f"{v:.0f} MiB RSS, {d.get('per_added_worker_pss_mib', 0):.0f} PSS, {d.get('per_added_worker_uss_mib', 0):.0f} USS",
            v <= 80)
    v = d.get("npy64_p50_vs_inprocess_default_b64")
    if v is not None:
        row("64 images as .npy: p50 ≤ 1.3× TF in-process batch 64, default threads", f"{v:.2f}× (TF's default math, fp32)",
            v <= 1.3, f"same math as the server (BF16): {d.get('npy64_p50_vs_inprocess_bf16_b64')}×; "
                      f"STRICT server vs fp32 in-process: {d.get('npy64_p50_strict_fp32_vs_same_math_inprocess_b64')}×")
    for m, today in (("cifar_cnn", 2.1), ("mlp", 1.65)):
        v = d.get(f"{m}_ours_c32_vs_byoc")
        if v is not None:
            row(f"{m} c32 req/s ≥ today's {today}× BYOC", f"{v:.2f}× (median of rounds {d.get(f'{m}_ours_c32_vs_byoc_rounds')})",
                v >= today, f"with STRICT fp32 (BYOC's math): {d.get(f'{m}_ours-strict_c32_vs_byoc')}× "
                            f"({d.get(f'{m}_ours-strict_c32_vs_byoc_rounds')}); requests per CPU-second of the server's "
                            f"processes at c32 (section 5): {d.get(f'{m}_c32_requests_per_cpu_second_vs_byoc')}× BYOC's")
        v = d.get(f"{m}_ours_c1_p50_vs_byoc")
        if v is not None:
            row(f"{m} c1 p50 ≤ BYOC's", f"{v:.2f}×", v <= 1.0, f"STRICT: {d.get(f'{m}_ours-strict_c1_p50_vs_byoc')}×")
    v = d.get("cifar_cnn_ours_c32_vs_byoc")
    if v is not None:
        row("CNN c32 ≥ 2× best peer", f"{v:.2f}× BYOC (the only peer run here)", v >= 2.0,
            "MLServer (the best CNN peer on 2026-11-26, 1.5× BYOC then) was not run: against it this is about "
            f"{v / 1.52:.2f}×")
    v = d.get("cifar_cnn_ours_c32_vs_tf_inprocess_best")
    if v is not None:
        row("CNN c32 ≥ 0.5× TF in-process at its best batch", f"{v:.2f}× (fp32 in-process)", v >= 0.5,
            f"against BF16 in-process (the server's math here): {d.get('cifar_cnn_ours_c32_vs_tf_inprocess_bf16_best')}×")
    v = d.get("startup_growth_most_vs_fewest_workers")
    if v is not None:
        row("start → /ping 200 does not grow with HTTP workers", f"median {d.get('startup_median_s')}: {v:.2f}× from fewest to most",
            v <= 1.25, "criterion used here: at most 1.25× (the noise of one start on this shared machine)")
    if not rows:
        return []
    return ["## Targets (issue 11)", "", "| target | measured | result | note |", "|---|---|---|---|", *rows, ""]


def layout_model_md(res) -> list[str]:
    """The layout rule of serve/contract/tuning.py at 4 to 192 vCPUs: a reasoned model from this run's figures."""
    pr, mem = res.get("profile"), res.get("memory")
    if not pr or not mem:
        return []
    from serve.contract.tuning import default_model_processes, default_workers
    ours = {r["workers"]: r for r in mem["ours"] if r.get("status") == "ok"}
    big = ours.get(max(ours)) if ours else None
    two = mem.get("ours_two_model_processes")
    L = ["## What 2 vCPUs cannot show: the layout rule at 4 to 192 vCPUs (a reasoned model, not a measurement)", "",
         "Inputs, all measured above at 32 connections: h = CPU ms per request of the HTTP workers, p = of the model "
         "process (all its threads, TensorFlow included); the GIL time per request, estimated two ways: from thread "
         "CPU (gh = h: an HTTP worker's Python runs under its GIL, per request it serves; gm = CPU of the model "
         "process's Python threads, which includes what TensorFlow runs on the calling thread without the GIL) and "
         "from py-spy --gil (wall time in which a thread holds the GIL: it also counts a holder that the loaded "
         "2-core machine has preempted, so it can exceed the CPU estimate). Per layout (HTTP workers W, model processes M from "
         "serve/contract/tuning.py, V vCPUs): CPU bound V/(h+p), HTTP-GIL bound W/gh, model-process-GIL bound M/gm; the smallest "
         "binds. Assumes the per-request costs stay what they are at 2 vCPUs (batches there are already full at 32 "
         "connections; larger machines batch at least as well, so p is if anything lower) and that the client and "
         "the network keep up. Memory: master + W × HTTP worker PSS (at the largest W measured) + M × model process "
         "PSS (from the run with 2 model processes when there is one).", ""]
    if not big:
        return L
    http_pss = big["idle"]["http"]["pss_each"]
    master = big["idle"]["master"]["rss"]
    model_pss = big["idle"]["model"]["pss"]
    if two and two.get("status") == "ok" and 2 in ours:
        model_pss = (two["idle"]["total"]["pss"] - ours[2]["idle"]["total"]["pss"]) or model_pss
    for m in ("cifar_cnn", "mlp"):
        w = pr.get(m, {}).get("c32")
        if not w:
            continue
        pp = w["per_process"]
        h = pp["http"]["cpu_ms_per_request"]
        p = pp["model"]["cpu_ms_per_request"]
        # upper bounds of the GIL-held time: an HTTP worker's Python runs under its GIL (all of h,
        # for the requests it serves); the model process's Python threads (not TensorFlow's pool,
        # but including what TensorFlow runs on the calling thread without the GIL)
        gh = h
        gm = sum(v for k, v in pp["model_threads_cpu_ms_per_request"].items() if k.startswith("python"))
        # py-spy --gil: samples only while a thread of the process holds the GIL, so its samples over
        # the possible ones are the GIL's busy share (py-spy may miss samples: a lower bound)
        spy = pr[m].get("pyspy_gil_c32", {})
        secs = int(res["meta"]["args"]["profile_seconds"])
        gm_spy = gh_spy = None
        if spy.get("load_rps") and "samples" in spy.get("model", {}) and "samples" in spy.get("http", {}):
            gm_spy = spy["model"]["samples"] / (PYSPY_RATE * secs) * 1e3 / spy["load_rps"]
            gh_spy = spy["http"]["samples"] / (PYSPY_RATE * secs) * 1e3 / (spy["load_rps"] / pr.get("http_workers", 2))
        L += [f"**{m}**: h = {h} ms, p = {p} ms; GIL ms per request from thread CPU: gh = {gh:.3f}, "
              f"gm = {gm:.3f}; from py-spy --gil: gh = {fmt(gh_spy, 3)}, gm = {fmt(gm_spy, 3)}.", "",
              "| vCPUs | HTTP workers | model processes | CPU bound | HTTP-GIL bound (thread CPU / py-spy) | model-GIL bound "
              "(thread CPU / py-spy) | predicted req/s, GIL from thread CPU (binds) | from py-spy (binds) | idle memory (PSS) |",
              "|---|---|---|---|---|---|---|---|---|"]
        for v in (2, 4, 16, 32, 64, 192):
            W, M = default_workers(v), default_model_processes(v)
            xc, xh, xm = 1e3 * v / (h + p), 1e3 * W / gh, 1e3 * M / gm
            xh2 = 1e3 * W / gh_spy if gh_spy else None
            xm2 = 1e3 * M / gm_spy if gm_spy else None

            def bind(*pairs):
                pairs = [(x, n) for x, n in pairs if x is not None]
                x, n = min(pairs)
                return f"{x:,.0f} ({n})"
            memory_mib = master + W * http_pss + M * model_pss
            L.append(f"| {v} | {W} | {M} | {xc:,.0f} | {xh:,.0f} / {fmt(xh2, 0)} | {xm:,.0f} / {fmt(xm2, 0)} | "
                     f"{bind((xc, 'CPU'), (xh, 'HTTP GIL'), (xm, 'model GIL'))} | "
                     f"{bind((xc, 'CPU'), (xh2, 'HTTP GIL'), (xm2, 'model GIL'))} | {memory_mib / 1024:.1f} GiB |")
        L.append("")
    return L


def write_md(res, path: Path):
    d = res["derived"]
    L = []
    meta = res["meta"]
    L += [f"# Model processes (issue 11): measurements", "",
          f"`{meta['command']}` — {meta['date']}, {meta['cpu']} ({meta['vcpus']} vCPUs, bf16 matrix units: "
          f"{meta['bf16_units']}), load average at start {meta['loadavg_at_start']}, at end "
          f"{meta.get('loadavg_at_end')}. The machine is shared with other sessions' test runs: read the ratios, "
          f"each against a reference measured minutes apart in this run, not the absolute numbers.", ""]
    for m in meta.get("merged", []):
        L += [f"Sections {', '.join(m['args']['sections'])} re-measured by `{m['command']}` at {m['date']} "
              f"(load average at start {m['loadavg_at_start']}); the last re-measurement of a section is the one shown.", ""]
    mem = res.get("memory")
    if mem:
        L += ["## 1. Idle memory and start-up by HTTP workers (CIFAR CNN)", "",
              "Idle: after a 2 s burst at 2 connections per worker (every worker has answered), then 3 s idle. "
              "MiB, psutil `memory_full_info`.", "",
              "| server | workers | start → /ping 200 | RSS total | PSS total | USS total | master RSS | model process RSS (PSS) | HTTP worker RSS each (PSS, USS) | load 1m |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in mem["ours"]:
            if r.get("status") != "ok":
                L.append(f"| serve | {r['workers']} | failed: {r.get('reason', '')[:100]} |||||||")
                continue
            i = r["idle"]
            L.append(f"| serve | {r['workers']} | {r['startup_to_ping_s']:.1f} s | {fmt(i['total']['rss'], 0)} | "
                     f"{fmt(i['total']['pss'], 0)} | {fmt(i['total']['uss'], 0)} | {fmt(i['master'].get('rss'), 0)} | "
                     f"{fmt(i['model'].get('rss'), 0)} ({fmt(i['model'].get('pss'), 0)}) | "
                     f"{fmt(i['http'].get('rss_each'), 0)} ({fmt(i['http'].get('pss_each'), 0)}, "
                     f"{fmt(i['http'].get('uss_each'), 0)}) | {r['loadavg_1m_before']} |")
        for r in mem["byoc"]:
            if r.get("status") != "ok":
                L.append(f"| BYOC | {r['workers']} | failed |||||||")
                continue
            i = r["idle"]
            L.append(f"| BYOC Flask + gunicorn sync | {r['workers']} | {r['startup_to_first_answer_s']:.1f} s (first answer) | "
                     f"{fmt(i['total']['rss'], 0)} | {fmt(i['total']['pss'], 0)} | {fmt(i['total']['uss'], 0)} | "
                     f"{fmt(i['master'].get('rss'), 0)} | – | {fmt(i['http'].get('rss_each'), 0)} "
                     f"({fmt(i['http'].get('pss_each'), 0)}, {fmt(i['http'].get('uss_each'), 0)}) | {r['loadavg_1m_before']} |")
        two = mem.get("ours_two_model_processes")
        if two and two.get("status") == "ok":
            i = two["idle"]
            L.append(f"| serve, SAGEMAKER_TFS_INSTANCE_COUNT=2 | 2 | {two['startup_to_ping_s']:.1f} s | {fmt(i['total']['rss'], 0)} | "
                     f"{fmt(i['total']['pss'], 0)} | {fmt(i['total']['uss'], 0)} | {fmt(i['master'].get('rss'), 0)} | "
                     f"{fmt(i['model'].get('rss'), 0)} ({fmt(i['model'].get('pss'), 0)}) for 2 | "
                     f"{fmt(i['http'].get('rss_each'), 0)} ({fmt(i['http'].get('pss_each'), 0)}, "
                     f"{fmt(i['http'].get('uss_each'), 0)}) | {two['loadavg_1m_before']} |")
        L.append("")
    st = res.get("startup")
    if st and st.get("rounds"):
        L += ["## 1b. Start → first GET /ping 200 by HTTP workers (CIFAR CNN, polled every 50 ms)", "",
              "Rounds interleave the worker counts, so a change of load hits each alike. In brackets: the model "
              "process's own \"ready in\" (TensorFlow import, load, warm-up).", "",
              "| round | " + " | ".join(f"{w} workers" for w in st["workers"]) + " |",
              "|---|" + "---|" * len(st["workers"])]
        for i, row in enumerate(st["rounds"]):
            cells = []
            for w in st["workers"]:
                v = row.get(str(w), {})
                cells.append(f"{v['to_ping_s']:.1f} s ({v.get('model_process_ready_s')} s), load {v['loadavg_1m']}"
                             if "to_ping_s" in v else "failed")
            L.append(f"| {i + 1} | " + " | ".join(cells) + " |")
        L.append("| median | " + " | ".join(f"{st['median_s'].get(str(w))} s" for w in st["workers"]) + " |")
        L.append("")
    n = res.get("npy64")
    if n and n.get("server"):
        L += ["## 2. One request of 64 CIFAR images as .npy (2 HTTP workers, 1 model process)", "",
              f"{n['server']['default']['npy_accept_npy']['n']} sequential requests on one keep-alive connection "
              f"after 5 discarded; body {n.get('body_bytes')} bytes.", "",
              "| what | p50 | p90 | min |", "|---|---|---|---|"]
        for v, rec in n["server"].items():
            for k, lab in (("npy_accept_npy", "Accept .npy"), ("npy_accept_json", "Accept JSON")):
                s = rec[k]
                L.append(f"| serve, {v}, {lab} | {s['p50_ms']:.1f} ms | {s['p90_ms']:.1f} ms | {s['min_ms']:.1f} ms |")
            if rec.get("model_process_direct_p50_ms"):
                L.append(f"| serve, {v}: `ModelClient.infer` straight to the model process (no HTTP, no codec) | "
                         f"{rec['model_process_direct_p50_ms']:.1f} ms | | |")
        for k, lab in (("inprocess_default", "TF in-process, default math (fp32), default threads"),
                       ("inprocess_bf16", "TF in-process, DNNL_DEFAULT_FPMATH_MODE=BF16 (the server's math here)")):
            ip = n.get(k, {})
            if ip.get("status") == "ok":
                for b in ("64", "32"):
                    s = ip["batches"][b]
                    L.append(f"| {lab}, batch {b} | {s['p50_ms']:.1f} ms | | |")
        for i, r in enumerate(n.get("rounds", [])):
            L.append(f"| round {i + 2}: serve default, Accept .npy / in-process batch 64 fp32 / BF16 | "
                     f"{r['server_p50_ms']:.1f} / {fmt(r['inprocess_default_b64_p50_ms'])} / "
                     f"{fmt(r['inprocess_bf16_b64_p50_ms'])} ms | | |")
        L.append("")
    t = res.get("throughput")
    if t:
        L += ["## 3. Throughput and latency, one example per JSON request (wrk, bench.run's run_http)", "",
              f"warm-up {t['bench_run_args']['warmup']} s, {t['bench_run_args']['duration']} s per level.", "",
              "| round | stack | model | c1 p50 | c32 req/s | c32 p50 | c32 p99 | idle RSS (PSS) | load 1m |", "|---|---|---|---|---|---|---|---|---|"]
        for r in t["runs"]:
            if r.get("status") != "ok":
                L.append(f"| {r.get('round', 1)} | {r['label']} | {r['model']} | failed: {r.get('reason', '')[:120]} ||||||")
                continue
            l1 = next((l for l in r["levels"] if l["connections"] == 1), {})
            l32 = next((l for l in r["levels"] if l["connections"] == 32), {})
            mi = r.get("memory_idle", {})
            L.append(f"| {r.get('round', 1)} | {r['label']} | {r['model']} | {l1.get('p50_ms')} ms | {fmt(l32.get('rps'))} | "
                     f"{l32.get('p50_ms')} ms | {l32.get('p99_ms')} ms | {fmt(mi.get('rss_mib'), 0)} ({fmt(mi.get('pss_mib'), 0)}) | "
                     f"{r.get('loadavg_1m_before')} |")
        for ref, lab in (("inprocess", "default math"), ("inprocess_bf16", "BF16")):
            for m, ip in t[ref].items():
                if ip.get("status") == "ok":
                    L.append(f"| | TF in-process ({lab}) | {m} | batch 1 {ip['batch1']['p50_ms']} ms | best batch "
                             f"{ip['best_batch']}: {fmt(ip['best_items_per_s'])} items/s | | | | |")
        L.append("")
    ipc = res.get("ipc")
    if ipc:
        mi = ipc["micro"]
        L += ["## 4. The channel's round trip", "",
              f"Echo process, no TensorFlow, p50 of {res['meta']['args']['ipc_iterations']} iterations: "
              f"bare `Connection` send+recv of a small tuple {mi['bare_round_trip_us']} µs.", "",
              "| input | bytes | place (copy in) | views | full round trip (place, descriptor, echo's views + place of a (n, 10) answer, views) |",
              "|---|---|---|---|---|"]
        for k, s in mi["shapes"].items():
            L.append(f"| {k} | {s['bytes']:,} | {s['place_us']} µs | {s['views_us']} µs | {s['round_trip_us']} µs |")
        lv = ipc.get("live_mlp", {})
        if lv:
            L += ["", "Live MLP server (p50, sequential, one connection):", "",
                  f"- HTTP end to end (JSON in and out): {lv['http_json_c1']['p50_ms']} ms",
                  f"- `ModelClient.infer` from this process (channel + model process + batcher + model call): "
                  f"{lv['modelclient_infer_p50_ms']} ms",
                  f"- the model call in-process (batch 1, BF16 as the server): {lv.get('inprocess_bf16_batch1_p50_ms')} ms", ""]
    pr = res.get("profile")
    if pr:
        L += ["## 5. CPU per request, per process", "",
              "psutil CPU time of each process (all its threads) over a wrk window, divided by the requests served.", "",
              "| model | connections | req/s | HTTP workers (all) | model process | master | model process threads |",
              "|---|---|---|---|---|---|---|"]
        for m in ("cifar_cnn", "mlp"):
            for c in ("c1", "c32"):
                w = pr.get(m, {}).get(c)
                if not w:
                    continue
                pp = w["per_process"]
                th = ", ".join(f"{k} {v}" for k, v in list(pp["model_threads_cpu_ms_per_request"].items())[:4])
                L.append(f"| {m} | {c[1:]} | {fmt(w['wrk']['rps'])} | {pp['http']['cpu_ms_per_request']} ms | "
                         f"{pp['model']['cpu_ms_per_request']} ms | {pp['master']['cpu_ms_per_request']} ms | {th} |")
                b = pr.get(f"byoc_{m}", {}).get(c)
                if b:
                    bp = b["per_process"]
                    L.append(f"| {m}, BYOC 2 workers | {c[1:]} | {fmt(b['wrk']['rps'])} | "
                             f"{bp['http']['cpu_ms_per_request']} ms (TensorFlow inside) | – | "
                             f"{bp['master']['cpu_ms_per_request']} ms | |")
        L.append("")
        for m in ("cifar_cnn", "mlp"):
            for c, gil in ((1, False), (32, False), (32, True)):
                sp = pr.get(m, {}).get(f"pyspy_{'gil_' if gil else ''}c{c}")
                if not sp:
                    continue
                what = ("samples of the thread holding the GIL (py-spy --gil)" if gil else
                        "samples of threads not blocked in a wait; a thread queued for the GIL or for a CPU counts "
                        "where it stopped")
                L += [f"py-spy, {m} at {c} connection(s), one HTTP worker and the model process: share of the "
                      f"{what}, by the innermost known frame:", ""]
                for key, s in sp.items():
                    if not isinstance(s, dict):
                        continue
                    if "buckets" in s:
                        L.append(f"- {key} ({s['samples']} active samples; {s.get('waiting_samples_dropped')} of waiting "
                                 f"threads dropped): " + ", ".join(f"{k} {v}%" for k, v in s["buckets"].items()))
                        L.append(f"  - top leaf frames: " + ", ".join(f"{k} {v}%" for k, v in list(s["top_leaves"].items())[:6]))
                    else:
                        L.append(f"- {key}: py-spy failed: {s.get('error', '')[:200]}")
                L.append("")
    L += targets_md(res) + layout_model_md(res)
    L += ["## Derived ratios", "", "```", json.dumps(d, indent=1), "```", ""]
    path.write_text("\n".join(L))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer requests, 3 s levels, workers 1,2,8")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--workers", default="1,2,8,32", help="SAGEMAKER_MODEL_SERVER_WORKERS values (memory, start-up)")
    ap.add_argument("--byoc-workers", default="1,2")
    ap.add_argument("--startup-workers", default="1,2,8")
    ap.add_argument("--startup-repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the throughput stacks and of the npy64 pair")
    ap.add_argument("--requests", type=int, default=50, help="sequential requests per latency figure")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per wrk level (throughput)")
    ap.add_argument("--inproc-duration", type=float, default=2.0)
    ap.add_argument("--profile-seconds", type=float, default=5.0)
    ap.add_argument("--ipc-iterations", type=int, default=2000)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--report-only", action="store_true", help="rewrite modelproc.md from modelproc.json")
    ap.add_argument("--merge", action="store_true",
                    help="re-measure only --sections and keep the other sections of the existing modelproc.json")
    a = ap.parse_args(argv)
    if a.report_only:
        res = json.loads((Path(a.out) / "modelproc.json").read_text())
        res["derived"] = derive(res)
        write_md(res, Path(a.out) / "modelproc.md")
        return
    if a.quick:
        a.requests, a.duration, a.warmup, a.inproc_duration, a.profile_seconds = 20, 3.0, 1.0, 1.0, 3.0
        a.ipc_iterations, a.startup_repeats, a.rounds = 500, 1, 1
        if a.workers == "1,2,8,32":
            a.workers = "1,2,8"
    a.workers = [int(w) for w in a.workers.split(",") if w]
    a.byoc_workers = [int(w) for w in a.byoc_workers.split(",") if w]
    a.startup_workers = [int(w) for w in a.startup_workers.split(",") if w]
    a.sections = [s for s in a.sections.split(",") if s]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    TMP.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", "from bench.models import *; from bench.harness import TMP; "
                    "ensure_models(TMP, ['cifar_cnn', 'mlp'])"], cwd=REPO, check=True)
    write_bodies(TMP, ["cifar_cnn", "mlp"])
    ensure_venv("byoc", S.PEERS / "byoc" / "requirements.txt")
    from serve.contract.tuning import detect_cpu
    cpu = detect_cpu()
    res = {"meta": {"command": "python -m bench.modelproc " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": R.machine_info()["cpu"],
                    "vcpus": os.cpu_count(), "bf16_units": cpu.bf16, "python": platform.python_version(),
                    "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
                    "args": {k: v for k, v in vars(a).items()}}}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.merge and (out / "modelproc.json").exists():
        earlier = json.loads((out / "modelproc.json").read_text())
        for name in a.sections:
            earlier.pop(name, None)
        earlier["meta"].setdefault("merged", []).append(res["meta"])
        res = {**earlier, "meta": {**earlier["meta"], "loadavg_at_start": earlier["meta"]["loadavg_at_start"]}}
    t0 = time.time()

    def save():
        res["meta"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        res["meta"]["wall_s"] = round(time.time() - t0, 1)
        res["derived"] = derive(res)
        (out / "modelproc.json").write_text(json.dumps(res, indent=1, default=str))
        write_md(res, out / "modelproc.md")

    steps = [("memory", section_memory), ("startup", section_startup), ("npy64", section_npy64), ("throughput", section_throughput),
             ("ipc", section_ipc), ("profile", section_profile)]
    for name, fn in steps:
        if name not in a.sections:
            continue
        try:
            fn(a, res)
        except Exception as e:
            res.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:2000]
            log(f"[{name}] FAILED: {e}")
            traceback.print_exc()
        save()
    log(f"[modelproc] done in {time.time() - t0:.0f} s -> {out}/modelproc.{{md,json}}")
    log(json.dumps(res["derived"], indent=1))


if __name__ == "__main__":
    main()
