"""Per-request memory of the server (issue 17, point 6): how far one large request raises the resident
memory of the HTTP worker and of the model process at its peak, and how much of it is still held after
50 more small requests.

    .venv/bin/python -m bench.memory                       # every kind, label "current"
    .venv/bin/python -m bench.memory --label before        # store under another label (before/after a change)
    .venv/bin/python -m bench.memory --kinds npz-zeros,json-strings --repeat 3
    .venv/bin/python -m bench.memory --label "8 at once" --kinds json-numbers --concurrency 8
    .venv/bin/python -m bench.memory --report-only         # memory.md from memory.json
    .venv/bin/python -m bench.memory --supervision         # issue 23: burst, segments, freeze (supervision.md)

``--supervision`` (issue 23, points 5 and 18) runs one host server (2 HTTP workers) and measures:
held memory (RSS of every process plus the run's /dev/shm segments) after a burst of 64 concurrent
4 MiB .npy requests, then 50 small ones and 20 s idle, over the warm baseline; the run's segments
before and after kill -9 of the model process and of an HTTP worker, and after SIGTERM; and the
time from SIGSTOP of the model process to /ping 503 and to the first 504 (timeout 3 s).

For each request kind a fresh host server (1 HTTP worker, 1 model process, defaults otherwise) serves a
model whose signatures are cheap (row sums of a float32 matrix; lengths of strings), so what is measured
is the server's own cost: reading the body, decoding it, the arrays, the channel to the model process,
TensorFlow's input tensors, the answer. After 20 small warm-up requests:

- baseline: RSS of the worker and of the model process (psutil);
- peak: the kernel's high-water mark (VmHWM, reset through /proc/PID/clear_refs before the large
  requests) over REPEAT rounds of CONCURRENCY large requests at once, minus the baseline;
- held: RSS after those and 50 small requests, minus the baseline.

K is the peak over the size of the arrays the body decodes to (what NumPy holds for it). RSS counts the
shared-memory segments of the channel where a process has touched them.

Writes bench/results/memory.json (every label) and bench/results/memory.md (one table per label).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import requests

from .harness import REPO, RESULTS, TMP, log

sys.path.insert(0, str(REPO))
from tests.fixtures.server import launch, model_pids, wait_for_ping, worker_pids  # noqa: E402

MiB = 1 << 20
JSON_PATH = RESULTS / "memory.json"
MD_PATH = RESULTS / "memory.md"
SMALL = b'{"instances": [[1, 2, 3, 4]]}'


def build_model(root: Path) -> Path:
    """sums: x float32 (None, None) -> row sums; text: s string (None,) -> lengths."""
    model_dir = root / "model"
    if (model_dir / "1" / "saved_model.pb").exists():
        return model_dir
    import tensorflow as tf

    class Cheap(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="x")])
        def sums(self, x):
            return {"y": tf.reduce_sum(x, axis=1)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="s")])
        def text(self, s):
            return {"n": tf.strings.length(s)}

    module = Cheap()
    tf.saved_model.save(module, str(model_dir / "1"), signatures={"serving_default": module.sums, "text": module.text})
    return model_dir


# -- request kinds: (body, content type, bytes of the arrays it decodes to) -----------------------------

CAP = 6 * 1000 * 1000   # under SAGEMAKER_MAX_PAYLOAD_IN_MB=6 (6 MiB), with room for the framing


def json_numbers():
    rng = np.random.default_rng(0)
    rows = np.round(rng.random((2300, 256)), 6)            # "0.123456, " ~ 9.9 bytes a number
    body = json.dumps({"instances": rows.tolist()}).encode()
    assert len(body) < CAP, len(body)
    return body, "application/json", rows.astype(np.float64).nbytes


def json_strings():
    """One long string and many empty ones: NumPy's fixed-width str dtype stores each at the longest's width."""
    strings = ["a" * 250_000] + [""] * 1000
    body = json.dumps({"signature_name": "text", "instances": strings}).encode()
    return body, "application/json", np.asarray(strings).nbytes


def csv_numbers():
    rng = np.random.default_rng(1)
    rows = np.round(rng.random((2600, 256)), 6)
    buf = io.StringIO()
    np.savetxt(buf, rows, fmt="%.6f", delimiter=",")
    body = buf.getvalue().encode()
    assert len(body) < CAP, len(body)
    return body, "text/csv", rows.nbytes


def npy():
    x = np.random.default_rng(2).random((1400, 1024), dtype=np.float32)    # 5.5 MiB
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue(), "application/x-npy", x.nbytes


def npz_stored():
    x = np.random.default_rng(3).random((1400, 1024), dtype=np.float32)
    buf = io.BytesIO()
    np.savez(buf, x=x)
    return buf.getvalue(), "application/x-npz", x.nbytes


def npz_zeros():
    """255 MiB of zeros, deflated to a few hundred KB: the .npz expansion budget is 256 MiB."""
    x = np.zeros((255 * 256, 1024), np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x)
    return buf.getvalue(), "application/x-npz", x.nbytes


KINDS = {"json-numbers": json_numbers, "json-strings": json_strings, "csv": csv_numbers, "npy": npy,
         "npz-stored": npz_stored, "npz-zeros": npz_zeros}


# -- measuring ----------------------------------------------------------------------------------------

def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")     # the high-water mark restarts at the current RSS


def peak(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def shmem(pid: int) -> int:
    """The part of RSS that is shared memory (the channel's segments in /dev/shm)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssShmem:"):
            return int(line.split()[1]) * 1024
    return 0


def post(url: str, body: bytes, content_type: str, accept: str = "application/json") -> requests.Response:
    return requests.post(f"{url}/invocations", data=body, timeout=300,
                         headers={"Content-Type": content_type, "Accept": accept})


def measure(kind: str, model_dir: Path, repeat: int, small: int, env: dict, concurrency: int = 1) -> dict:
    body, content_type, decoded = KINDS[kind]()
    handle = launch(model_dir, {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", **env})
    try:
        wait_for_ping(handle.url, 180, handle.alive)
        (worker,), (model,) = worker_pids(handle.master_pid()), model_pids(handle.master_pid())
        for _ in range(20):
            assert post(handle.url, SMALL, "application/json").status_code == 200
        time.sleep(0.5)
        base = {"worker": rss(worker), "model": rss(model)}
        for pid in (worker, model):
            reset_peak(pid)
        statuses, took = [], []
        with ThreadPoolExecutor(concurrency) as pool:
            for _ in range(repeat):
                start = time.monotonic()
                answers = list(pool.map(lambda _: post(handle.url, body, content_type), range(concurrency)))
                took.append(time.monotonic() - start)
                statuses += [r.status_code for r in answers]
        peaks = {"worker": peak(worker), "model": peak(model)}
        after_large = {"worker": rss(worker), "model": rss(model)}
        for _ in range(small):
            assert post(handle.url, SMALL, "application/json").status_code == 200
        time.sleep(0.5)
        held = {"worker": rss(worker), "model": rss(model)}
        held_shm = {"worker": shmem(worker), "model": shmem(model)}
    finally:
        handle.stop()
    row = {"kind": kind, "body_bytes": len(body), "decoded_bytes": decoded, "statuses": statuses,
           "seconds": round(max(took), 2), "repeat": repeat, "small": small, "concurrency": concurrency}
    for role in ("worker", "model"):
        row[f"{role}_base_mib"] = round(base[role] / MiB, 1)
        row[f"{role}_peak_mib"] = round((peaks[role] - base[role]) / MiB, 1)
        row[f"{role}_after_large_mib"] = round((after_large[role] - base[role]) / MiB, 1)
        row[f"{role}_held_mib"] = round((held[role] - base[role]) / MiB, 1)
        row[f"{role}_held_shm_mib"] = round(held_shm[role] / MiB, 1)
        row[f"{role}_k"] = round((peaks[role] - base[role]) / decoded, 2)
    log(kind, json.dumps(row))
    return row


# -- report -------------------------------------------------------------------------------------------

NOTES = """## What the figures say

- **Bound per request, per kind** (from the *after* table, one request at a time): the HTTP worker's peak
  is at most about 4x the decoded arrays for CSV, .npy and .npz (3.0x for the deflated 255 MiB .npz:
  the expanded bytes, the array, its copy in the channel's segment), and about 16x for JSON numbers
  (Python's floats and the parsers' buffers; with the 6 MiB body cap that is under 80 MiB). The model
  process adds about 1.1x (TensorFlow's input tensor). `tests/host/test_hardening.py::
  test_a_255_mib_npz_of_zeros_is_bounded_and_given_back` asserts 4x / 1.5x for the worst kind.
- **Memory given back** (`serve/contract/memory.py`, `serve/contract/channel.py`): after a request that leaves a process more
  than 32 MiB larger than after its last trim with no request in flight, `malloc_trim(0)` (at once when
  it was the last one in flight, at most once a second while requests overlap: a size taken mid-flight
  would count the others' memory and hide what they free later; that rule took the held memory after
  8 .npy at once from +89 to +64 MiB); and the model process punches a large
  (> 4 MiB) request segment out of /dev/shm as soon as it has answered, because the batcher's thread
  keeps its last batch (a view of that segment) until its next one. 255 MiB .npz: held after 50 small
  requests went from +505 MiB (worker) and +261 MiB (model process) to +1 and +6.
- **Chosen by measurement:** a fixed `MALLOC_MMAP_THRESHOLD_=131072` also gives the .npz memory back and
  halves its peak, but leaves JSON's held memory (+22 MiB) and the model process's segment (+260), and
  makes every allocation over 128 KiB a system call; the trim costs only the requests that grew the
  process, so it is what the server does.
- **JSON strings and the JSON parser** (fixed after the tables above were first taken; see the
  *after: strings as objects* tables): NumPy's fixed-width str dtype stored every string at the longest
  one's width, so 0.24 MiB of JSON (one long string, many empty ones) decoded to 955 MiB (the *decoded*
  column still shows that size, computed the old way): strings now decode to object arrays, and that
  body peaks at +3 MiB. And the simdjson parser each thread keeps held about 3.5x the largest body it
  parsed; a body over 1 MiB now gets a parser of its own, freed with it: held after one 5.5 MiB JSON
  body +60 -> +6 MiB, after 8 at once +230 -> +93 MiB.
- **Not bounded yet:**
  - *Held after concurrent .npy*: +64 MiB in the worker after 8 at once, with no free pages left for
    `malloc_trim` (5.5 MiB regions in the threads' arenas, so live or unreleasable; not found yet).
  - *Concurrency*: the bound is per request; a worker runs up to SAGEMAKER_MODEL_SERVER_THREADS (64) at
    once, so 8 deflated 255 MiB .npz at once peaked at +5.8 GiB in the worker. A per-worker budget of
    expanded bytes would bound that; it is not built.
"""


def k(row: dict, role: str) -> float:
    """Peak over the arrays of the requests that were in flight at once."""
    return row[f"{role}_peak_mib"] * MiB / (row["decoded_bytes"] * row.get("concurrency", 1))


def shm(row: dict, role: str) -> str:
    return f"shm {row.get(role + '_held_shm_mib', 0):.0f}"


def render(results: dict) -> str:
    out = ["# Per-request memory (issue 17, point 6)", "",
           "Written by `.venv/bin/python -m bench.memory` (see its docstring for the method). Peak and held are "
           "growth over the process's RSS after warm-up, in MiB; K = peak / bytes of the arrays the bodies "
           "in flight at once decode to; shm is how much of the process's RSS is then shared memory (the channel's segments in "
           "/dev/shm, counted in both processes where both map them). One HTTP worker, one model process; a model "
           "that only sums rows or measures strings.", ""]
    for label, run in results.items():
        rounds = run["rows"][0] if run["rows"] else {}
        out += [f"## {label}", "", f"{run['when']}, {run['machine']}, load average {run['load']}; "
                f"{rounds.get('repeat')} rounds of {rounds.get('concurrency', 1)} large request(s) at once, then "
                f"{rounds.get('small')} small ones; "
                f"command: `{run['command']}`" + (f"; environment: `{run['env']}`" if run.get("env") else ""), "",
                "| kind | body | decoded | status | worker peak | worker K | worker held | model peak | model K "
                "| model held |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in run["rows"]:
            out.append(f"| {r['kind']} | {r['body_bytes'] / MiB:.2f} MiB | {r['decoded_bytes'] / MiB:.1f} MiB "
                       f"| {','.join(map(str, sorted(set(r['statuses']))))} "
                       f"| {r['worker_peak_mib']:+.0f} | {k(r, 'worker'):.1f} | {r['worker_held_mib']:+.0f} ({shm(r, 'worker')}) "
                       f"| {r['model_peak_mib']:+.0f} | {k(r, 'model'):.1f} | {r['model_held_mib']:+.0f} "
                       f"({shm(r, 'model')}) |")
        out.append("")
    return "\n".join(out) + "\n" + NOTES


def _run_segments(run: str) -> list[Path]:
    return [p for d in (Path("/dev/shm"), Path(os.environ.get("TMPDIR", "/tmp"))) for p in d.glob(f"{run}.*")]


def _anon(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


def _segment_bytes(run: str) -> int:
    """What the run's segments hold (allocated blocks: a punched-out segment keeps its size, not its pages)."""
    return sum(p.stat().st_blocks * 512 for p in _run_segments(run) if p.exists())


def _held(server, run: str) -> int:
    """Anonymous memory of every process plus the run's segments, each page counted once (RSS would count a
    segment's pages again in every process that touched them)."""
    pids = [server.master_pid(), *worker_pids(server.master_pid()), *model_pids(server.master_pid())]
    return sum(_anon(p) for p in pids if psutil.pid_exists(p)) + _segment_bytes(run)


def supervision(model_dir: Path) -> dict:
    """Issue 23's figures, from one server."""
    import signal as sig

    out: dict = {}
    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3"}
    small = SMALL
    x = np.random.default_rng(5).random((1024, 1024), dtype=np.float32)      # 4 MiB
    buf = io.BytesIO()
    np.save(buf, x)
    big = buf.getvalue()
    server = launch(model_dir, env)
    try:
        wait_for_ping(server.url, 300, server.alive)
        (model,) = model_pids(server.master_pid())
        run = next(a for a in psutil.Process(model).cmdline() if "serve-ready" in a).rsplit("/", 1)[-1]
        for _ in range(20):
            post(server.url, small, "application/json")
        time.sleep(2)
        base = _held(server, run)
        with ThreadPoolExecutor(64) as pool:
            codes = list(pool.map(lambda _: post(server.url, big, "application/x-npy").status_code, range(64)))
        peak = _held(server, run)
        for _ in range(50):
            post(server.url, small, "application/json")
        time.sleep(20)
        held = _held(server, run)
        out["burst"] = {"ok": codes.count(200), "baseline_mib": base / MiB, "after_burst_mib": (peak - base) / MiB,
                        "held_mib": (held - base) / MiB,
                        "segments_held_mib": _segment_bytes(run) / MiB}
        log(f"burst: {out['burst']}")
        segs = {"before": len(_run_segments(run))}
        os.kill(model, sig.SIGKILL)
        time.sleep(5)
        segs["after kill -9 of the model process"] = len([p for p in _run_segments(run) if f"-{model}-" in p.name])
        wait_for_ping(server.url, 300, server.alive)
        for _ in range(10):
            post(server.url, big, "application/x-npy")
        worker = sorted(worker_pids(server.master_pid()))[0]
        os.kill(worker, sig.SIGKILL)
        time.sleep(5)
        segs["after kill -9 of an HTTP worker"] = len([p for p in _run_segments(run) if f"-{worker}-" in p.name])
        wait_for_ping(server.url, 300, server.alive)
        (model,) = model_pids(server.master_pid())
        os.kill(model, sig.SIGSTOP)
        stopped = time.monotonic()
        first_504 = None
        to_503 = None
        while time.monotonic() - stopped < 20 and (first_504 is None or to_503 is None):
            if to_503 is None and requests.get(f"{server.url}/ping", timeout=5).status_code == 503:
                to_503 = time.monotonic() - stopped
            if first_504 is None:
                try:
                    r = post(server.url, small, "application/json")
                    if r.status_code == 504:
                        first_504 = time.monotonic() - stopped
                except requests.RequestException:
                    pass
            time.sleep(0.1)
        os.kill(model, sig.SIGCONT)
        out["freeze"] = {"to_ping_503_s": to_503, "to_first_504_s": first_504}
        log(f"freeze: {out['freeze']}")
    finally:
        server.stop()
    segs["after SIGTERM"] = len(_run_segments(run))
    out["segments"] = segs
    log(f"segments: {segs}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n")[0])
    ap.add_argument("--label", default="current", help="name of this run in memory.json/.md (e.g. before, after)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, from {', '.join(KINDS)}")
    ap.add_argument("--repeat", type=int, default=3, help="large requests per kind")
    ap.add_argument("--concurrency", type=int, default=1, help="large requests sent at once, each round")
    ap.add_argument("--small", type=int, default=50, help="small requests after the large ones")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="server environment")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--supervision", action="store_true", help="issue 23's figures (bench/results/supervision.json)")
    a = ap.parse_args(argv)
    if a.supervision:
        figures = supervision(build_model(TMP / "memory-model"))
        figures["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        figures["load"] = " ".join(f"{v:.1f}" for v in os.getloadavg())
        (RESULTS / "supervision.json").write_text(json.dumps(figures, indent=1))
        print(json.dumps(figures, indent=1))
        return 0
    results = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {}
    if not a.report_only:
        env = dict(item.split("=", 1) for item in a.env)
        model_dir = build_model(TMP / "memory-model")
        rows = [measure(kind, model_dir, a.repeat, a.small, env, a.concurrency) for kind in a.kinds.split(",")]
        results[a.label] = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                            "machine": f"{platform.machine()}, {os.cpu_count()} vCPUs",
                            "load": " ".join(f"{v:.1f}" for v in os.getloadavg()), "env": " ".join(a.env),
                            "command": ".venv/bin/python -m bench.memory " + shlex.join(argv or sys.argv[1:]),
                            "rows": rows}
        JSON_PATH.write_text(json.dumps(results, indent=1))
    MD_PATH.write_text(render(results))
    print(MD_PATH.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
