"""Measurements behind the server's defaults: `python -m bench.tuning` -> bench/results/tuning.md.

1. JSON decode (and encode) alternatives for one-example bodies, microseconds per body.
2. This project's server (host) with 1 vs 2 workers and batching on/off (plus batch-timeout
   variants) on the CIFAR CNN and the MLP at 1 and 32 connections, all in one run.
Flags: --quick, --warmup, --duration, --models, --skip-server, --skip-codecs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import timeit

import numpy as np

from .harness import REPO, RESULTS, TMP, log, wait_ready, wrk, wrk_script
from .models import write_bodies
from . import stacks as S

# name, env for the server
CONFIGS = [
    ("1 worker, batching on (2 ms)", {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "SAGEMAKER_TFS_ENABLE_BATCHING": "true"}),
    ("1 worker, batching off", {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "SAGEMAKER_TFS_ENABLE_BATCHING": "false"}),
    ("2 workers, batching on (2 ms)", {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SAGEMAKER_TFS_ENABLE_BATCHING": "true"}),
    ("2 workers, batching off", {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SAGEMAKER_TFS_ENABLE_BATCHING": "false"}),
    ("1 worker, batching on, wait 0", {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "SAGEMAKER_TFS_ENABLE_BATCHING": "true",
                                       "SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS": "0"}),
    ("1 worker, batching on, max 64, wait 5 ms", {"SAGEMAKER_MODEL_SERVER_WORKERS": "1",
                                                  "SAGEMAKER_TFS_ENABLE_BATCHING": "true",
                                                  "SAGEMAKER_TFS_MAX_BATCH_SIZE": "64",
                                                  "SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS": "5000"}),
]


# ------------------------------------------------------------------ codecs

def _shape_from_brackets(b: np.ndarray, n_values: int) -> tuple:
    """Shape of a regular nested JSON list from its bracket structure, vectorised."""
    opens = b == ord("[")
    depth_after = np.cumsum(opens.astype(np.int32) - (b == ord("]")))
    d = int(depth_after[opens].max())
    lists_at = np.bincount(depth_after[opens], minlength=d + 1)  # lists opened at each depth (1 = outermost)
    shape = [int(lists_at[k + 1] // lists_at[k]) for k in range(1, d)]
    shape.append(n_values // int(lists_at[d]))
    if int(np.prod(shape)) != n_values:
        raise ValueError("ragged nested list")
    return tuple(shape)


def numpy_fromstring(body: bytes) -> np.ndarray:
    b = np.frombuffer(body, dtype=np.uint8)
    flat = np.fromstring(body.translate(None, b"[] \n").decode(), dtype=np.float32, sep=",")
    return flat.reshape(_shape_from_brackets(b, flat.size))


def numpy_split(body: bytes) -> np.ndarray:
    b = np.frombuffer(body, dtype=np.uint8)
    flat = np.array(body.translate(None, b"[] \n").split(b","), dtype=np.float32)
    return flat.reshape(_shape_from_brackets(b, flat.size))


def codec_bench(models, reps) -> list:
    import orjson
    decoders = [
        ("stdlib json.loads + np.array(float32)", lambda body: np.array(json.loads(body), dtype=np.float32)),
        ("orjson.loads + np.asarray(float32)", lambda body: np.asarray(orjson.loads(body), dtype=np.float32)),
        ("strip brackets + np.fromstring(sep=',') + shape from brackets", numpy_fromstring),
        ("strip brackets + split + np.array(float32) + shape from brackets", numpy_split),
    ]
    try:
        import simdjson
        from serve.contract import codecs as serve_codecs

        def simd(body):
            doc = simdjson.Parser().parse(body)
            return serve_codecs.json_codec._numeric_array(doc)[0].astype(np.float32)
        decoders.append(("pysimdjson as_buffer (serve.contract.codecs fast path core)", simd))
        decoders.append(("serve.contract.codecs.decode (full, with validation)",
                         lambda body: serve_codecs.decode(body, "application/json").inputs))
    except ImportError:
        pass
    rows = []
    bodies = write_bodies(TMP, models)
    for m in models:
        body = bodies[m]["json"].read_bytes()
        ref = np.array(json.loads(body), dtype=np.float32)
        for name, fn in decoders:
            out = np.asarray(fn(body), dtype=np.float32)
            ok = out.shape == ref.shape and np.array_equal(out, ref)
            n = max(3, reps // max(1, len(body) // 20000))
            t = min(timeit.repeat(lambda: fn(body), number=n, repeat=7)) / n
            rows.append({"model": m, "op": "decode", "method": name, "bytes": len(body), "us": round(t * 1e6, 1),
                         "exact": bool(ok), "shape": list(out.shape)})
        # encode: the model's output for one example
        out_shape = {"cifar_cnn": (1, 10), "mlp": (1, 1), "resnet50": (1, 1000)}[m]
        y = np.random.default_rng(0).random(out_shape, dtype=np.float32)
        encoders = [
            ("stdlib json.dumps({'predictions': y.tolist()})", lambda: json.dumps({"predictions": y.tolist()})),
            ("orjson.dumps(OPT_SERIALIZE_NUMPY)", lambda: orjson.dumps({"predictions": y}, option=orjson.OPT_SERIALIZE_NUMPY)),
        ]
        for name, fn in encoders:
            t = min(timeit.repeat(fn, number=reps, repeat=7)) / reps
            rows.append({"model": m, "op": "encode", "method": name, "bytes": len(fn()), "us": round(t * 1e6, 1),
                         "exact": True, "shape": list(out_shape)})
    return rows


# ------------------------------------------------------------------ server configs

def server_bench(models, a) -> list:
    bodies = write_bodies(TMP, models)
    rows = []
    for i, (cname, env) in enumerate(CONFIGS):
        for m in models:
            base = TMP / "models" / m
            if not (base / "model" / "1" / "saved_model.pb").exists():
                raise SystemExit(f"{base} missing: run `python -m bench.models` (or bench.run) first")
            rec = {"config": cname, "env": env, "model": m, "levels": []}
            server = None
            try:
                server, path, _ = S.start_ours(f"tuning{i}-{m}", base, None, env)
                body = bodies[m]["json"].read_bytes()
                wait_ready(server, path, body, timeout=300, check=S.check_json)
                time.sleep(1.5)
                rec["memory_idle"] = server.memory()
                mt = re.search(r"intra_op_threads=(\d+)", server.logs(200000))
                rec["intra_op_threads"] = int(mt.group(1)) if mt else None
                script = wrk_script(bodies[m]["json"])
                for c in a.levels:
                    wrk(server.url + path, script, c, a.warmup)
                    r = wrk(server.url + path, script, c, a.duration)
                    log(f"  {cname:42s} {m:10s} c{c:<3d} {r['rps']:8.1f} req/s p50 {r['p50_ms']:7.2f} p99 {r['p99_ms']:7.2f}")
                    rec["levels"].append(r)
                rec["status"] = "ok"
            except Exception as e:
                rec["status"] = "failed"
                rec["reason"] = f"{type(e).__name__}: {e}"[:600]
                if server is not None:
                    rec["log_tail"] = server.logs(3000)
                log(f"  {cname} {m} FAILED {rec['reason']}")
            finally:
                if server is not None:
                    server.stop()
            rows.append(rec)
    return rows


def write_md(codecs, servers, a, path):
    L = ["# Tuning measurements (input to the server's defaults)\n",
         f"Run {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {os.cpu_count()} vCPUs, load average at start "
         f"{a.load0}, at end {[round(x, 2) for x in os.getloadavg()]}. The machine is shared; compare rows "
         f"within this file only.\n"]
    if codecs:
        L.append("## JSON decode and encode, one example per body (microseconds per body, best of 7)\n")
        L.append("| model | body bytes | op | method | µs | exact |")
        L.append("|---|---|---|---|---|---|")
        for r in codecs:
            L.append(f"| {r['model']} | {r['bytes']:,} | {r['op']} | {r['method']} | {r['us']:,.1f} | "
                     f"{'yes' if r['exact'] else 'NO'} |")
        L.append("")
    if servers:
        L.append("## This project's server (host), workers and batching\n")
        L.append(f"wrk 1 thread, {a.warmup:g} s warm-up + {a.duration:g} s per level; TensorFlow intra-op threads "
                 f"follow the server's rule (vCPUs / workers) unless stated.\n")
        lv = a.levels
        head = ["config", "model", "intra-op"] + [f"c{c} {k}" for c in lv for k in ("req/s", "p50 ms", "p99 ms")] + \
               ["idle RSS MiB (PSS)"]
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        for r in servers:
            if r["status"] != "ok":
                L.append(f"| {r['config']} | {r['model']} | failed: {r['reason'][:120]} |" + " |" * (len(head) - 3))
                continue
            cells = [r["config"], r["model"], str(r.get("intra_op_threads"))]
            for l in r["levels"]:
                cells += [f"{l['rps']:.1f}", f"{l['p50_ms']:.2f}", f"{l['p99_ms']:.1f}"]
            mem = r["memory_idle"]
            cells.append(f"{mem['rss_mib']:.0f} ({mem['pss_mib']:.0f})")
            L.append("| " + " | ".join(cells) + " |")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--warmup", type=float, default=float(os.environ.get("BENCH_WARMUP", 3)))
    ap.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_TUNING_DURATION", 10)))
    ap.add_argument("--models", default="cifar_cnn,mlp")
    ap.add_argument("--levels", default="1,32")
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument("--skip-codecs", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "tuning.md"))
    a = ap.parse_args(argv)
    if a.quick:
        a.warmup, a.duration = 1, 3
    a.levels = [int(x) for x in a.levels.split(",")]
    a.load0 = [round(x, 2) for x in os.getloadavg()]
    models = a.models.split(",")
    subprocess.run([sys.executable, "-c", "from bench.models import *; from bench.harness import TMP; "
                    f"ensure_models(TMP, {models!r})"], cwd=REPO, check=True)
    codecs = [] if a.skip_codecs else codec_bench(models, reps=200 if a.quick else 1000)
    for r in codecs:
        log(f"  {r['model']:10s} {r['op']:6s} {r['us']:10.1f} us  {r['method']}")
    servers = [] if a.skip_server else server_bench(models, a)
    write_md(codecs, servers, a, a.out)
    TMP.mkdir(parents=True, exist_ok=True)
    json.dump({"codecs": codecs, "servers": servers}, open(TMP / "tuning.json", "w"), indent=1)
    log(f"[tuning] wrote {a.out}")


if __name__ == "__main__":
    main()
