"""TensorFlow in-process, no HTTP: the ceiling every server is measured against.

python -m bench.inprocess --saved-model DIR --body FILE --duration S [--batches 1,8,32,128]
prints one JSON line: batch-1 calls/s and latency, items/s per batch size (best = ceiling),
and batch 1 with the stdlib JSON decode + encode a naive server adds.
TensorFlow's own thread defaults (all cores), as a user's script would get.
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _timed(fn, duration, min_calls=5):
    lat = []
    t_end = time.perf_counter() + duration
    while time.perf_counter() < t_end or len(lat) < min_calls:
        t0 = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t0)
    lat = np.array(lat)
    return {"calls": int(lat.size), "calls_per_s": round(lat.size / lat.sum(), 1),
            "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 3),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 3)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--saved-model", required=True)
    ap.add_argument("--body", required=True, help="the JSON nested-list request body")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--batches", default="1,8,32,64,128,256")
    a = ap.parse_args()

    loaded = tf.saved_model.load(a.saved_model)
    sig = loaded.signatures["serving_default"]
    key = next(iter(sig.structured_input_signature[1]))
    body = open(a.body, "rb").read()
    x1 = np.array(json.loads(body), dtype=np.float32)

    def call(x):
        return next(iter(sig(**{key: tf.constant(x)}).values())).numpy()

    res = {"batches": {}}
    for b in [int(s) for s in a.batches.split(",")]:
        xb = np.repeat(x1, b, axis=0)
        for _ in range(3):
            call(xb)  # warm-up (tracing, oneDNN primitive creation)
        m = _timed(lambda: call(xb), a.duration)
        m["items_per_s"] = round(m["calls_per_s"] * b, 1)
        res["batches"][str(b)] = m
    best = max(res["batches"].items(), key=lambda kv: kv[1]["items_per_s"])
    res["batch1"] = res["batches"]["1"] if "1" in res["batches"] else None
    res["best_batch"] = int(best[0])
    res["best_items_per_s"] = best[1]["items_per_s"]

    def json_roundtrip():
        x = np.array(json.loads(body), dtype=np.float32)
        return json.dumps({"predictions": call(x).tolist()})

    json_roundtrip()
    res["batch1_stdlib_json"] = _timed(json_roundtrip, a.duration)
    print("INPROCJSON " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
