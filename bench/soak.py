"""Soak: minutes of steady load at a fraction of measured capacity; failures, latency, memory growth.

    .venv/bin/python -m bench.soak --minutes 20 [--workers 2] [--fraction 0.8] [--model mlp]

Starts this project's server on the host (as `bench.run` does), measures its capacity with a
closed loop (every thread sends its next request as soon as the last one is answered), then
sends a paced open loop at `fraction` x capacity for `--minutes` and writes
bench/results/soak.json and soak.md. tests/host/test_soak.py runs the same `soak()` for 5 minutes.

The paced loop is open: request i is due at start + i/rate, whichever thread is free takes it,
and its latency is counted from when it was due, not from when a thread got round to sending it.
A server that stalls therefore shows the stall in every request queued behind it (no
coordinated omission). Memory is the RSS summed over the server's process tree (the gunicorn
master and every worker), sampled every 5 s; growth compares the last minute's mean with the
first minute's. Only 127.0.0.1 (or whatever URL the caller passes) is targeted.
"""
from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import os
import subprocess
import sys
import threading
import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import psutil

HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
REASON_KINDS = 20  # distinct failure reasons kept (with their counts); the rest are only counted


# ---------------------------------------------------------------- recording

def percentile(sorted_values, p: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


class Recorder:
    """Per-minute latencies (seconds) and failures; thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self.latency: dict[int, array] = {}
        self.failed: Counter = Counter()
        self.reasons: Counter = Counter()
        self.other_reasons = 0
        self.last_done = 0.0

    def add(self, minute: int, latency: float, reason: str | None, done: float) -> None:
        with self._lock:
            lat = self.latency.get(minute)
            if lat is None:
                lat = self.latency[minute] = array("d")
            lat.append(latency)
            if done > self.last_done:
                self.last_done = done
            if reason is not None:
                self.failed[minute] += 1
                if reason in self.reasons or len(self.reasons) < REASON_KINDS:
                    self.reasons[reason] += 1
                else:
                    self.other_reasons += 1

    def count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self.latency.values())

    def minute_stats(self, minute: int, seconds: float = 60.0) -> dict:
        with self._lock:
            lat = sorted(self.latency.get(minute, ()))
            failed = self.failed.get(minute, 0)
        return {"minute": minute, "requests": len(lat), "failed": failed,
                "rate": round(len(lat) / seconds, 1) if seconds > 0 else 0.0, **_latency_ms(lat)}

    def overall(self) -> dict:
        with self._lock:
            lat = sorted(itertools.chain.from_iterable(self.latency.values()))
            failed = sum(self.failed.values())
            reasons = dict(self.reasons.most_common())
            if self.other_reasons:
                reasons["(other reasons)"] = self.other_reasons
        return {"requests": len(lat), "failed": failed, "failure_reasons": reasons, **_latency_ms(lat)}


def _latency_ms(sorted_lat) -> dict:
    return {"p50_ms": round(percentile(sorted_lat, 50) * 1000, 2),
            "p99_ms": round(percentile(sorted_lat, 99) * 1000, 2),
            "max_ms": round((sorted_lat[-1] if sorted_lat else 0.0) * 1000, 2)}


# ---------------------------------------------------------------- load generator

class Client:
    """One keep-alive connection. Any exception closes it (the next request reconnects) and
    counts as a failure, as does any status other than 200."""

    def __init__(self, url: str, timeout: float):
        u = urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.path = (u.path.rstrip("/") or "") + "/invocations"
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> str | None:
        """None when the answer is a 200, else a short reason."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.request("POST", self.path, body, HEADERS)
            r = self.conn.getresponse()
            data = r.read()
            if r.status != 200:
                return f"HTTP {r.status}: {data[:120].decode(errors='replace')}"
            return None
        except Exception as e:  # noqa: BLE001 - every failure is recorded, none is fatal
            self.close()
            return f"{type(e).__name__}: {e}"[:160]

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass
            self.conn = None


def _run_threads(n: int, target, stop: threading.Event, join_timeout: float) -> None:
    threads = [threading.Thread(target=target, name=f"soak-load-{i}", daemon=True) for i in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(join_timeout)
    finally:
        stop.set()


def closed_loop(url: str, body: bytes, seconds: float, threads: int = 16, timeout: float = 60.0) -> dict:
    """As fast as possible for `seconds`: each thread sends its next request when the last one is
    answered. Returns req/s (answered 200s per second), request and failure counts and latency."""
    rec, stop = Recorder(), threading.Event()
    t0 = time.perf_counter()
    end = t0 + seconds

    def worker():
        client = Client(url, timeout)
        try:
            while not stop.is_set():
                sent = time.perf_counter()
                if sent >= end:
                    break
                reason = client.post(body)
                done = time.perf_counter()
                rec.add(0, done - sent, reason, done)
        finally:
            client.close()

    _run_threads(threads, worker, stop, seconds + timeout + 30)
    elapsed = max(rec.last_done, end) - t0
    o = rec.overall()
    ok = o["requests"] - o["failed"]
    return {"seconds": round(elapsed, 2), "threads": threads, "rps": round(ok / elapsed, 1), **o}


def paced(url: str, body: bytes, rate: float, seconds: float, threads: int = 16, timeout: float = 60.0,
          on_minute=None) -> tuple[Recorder, float, float]:
    """Open loop at `rate` req/s for `seconds`: request i is due at t0 + i/rate and is taken by the
    next free thread; its latency runs from when it was due. Requests are filed under the minute
    they were due in. Returns (recorder, t0, seconds until the last answer)."""
    rec, stop = Recorder(), threading.Event()
    counter = itertools.count()
    interval = 1.0 / rate
    t0 = time.perf_counter() + 0.05
    end = t0 + seconds

    def worker():
        client = Client(url, timeout)
        try:
            while not stop.is_set():
                due = t0 + next(counter) * interval
                if due >= end:
                    break
                delay = due - time.perf_counter()
                if delay > 0 and stop.wait(delay):
                    break
                reason = client.post(body)
                done = time.perf_counter()
                rec.add(int((due - t0) // 60), done - due, reason, done)
        finally:
            client.close()

    workers = [threading.Thread(target=worker, name=f"soak-paced-{i}", daemon=True) for i in range(threads)]
    try:
        for t in workers:
            t.start()
        reported = 0
        n_minutes = math.ceil(seconds / 60)
        while True:
            alive = [t for t in workers if t.is_alive()]
            if not alive or time.perf_counter() > end + timeout + 30:
                break
            # a minute is reported once its last due request has had 2 s to come back
            now = time.perf_counter()
            while on_minute and reported < n_minutes and now >= t0 + min((reported + 1) * 60, seconds) + 2:
                on_minute(reported, rec)
                reported += 1
            alive[0].join(0.5)
        while on_minute and reported < n_minutes:
            on_minute(reported, rec)
            reported += 1
    finally:
        stop.set()
    return rec, t0, max(rec.last_done, end) - t0


# ---------------------------------------------------------------- memory

def tree_rss(pid: int) -> tuple[int, list[int]]:
    """Bytes of RSS summed over `pid` and all its descendants, and their pids."""
    root = psutil.Process(pid)
    total, pids = 0, []
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_info().rss
            pids.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total, sorted(pids)


class RssSampler(threading.Thread):
    """Every `interval` s: RSS of the server's process tree, tagged with the minute since `t0`."""

    def __init__(self, pid: int, t0: float, interval: float = 5.0):
        super().__init__(name="soak-rss", daemon=True)
        self.pid, self.t0, self.interval = pid, t0, interval
        self.samples: list[dict] = []
        self.pid_changes: list[dict] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def sample(self) -> None:
        t = time.perf_counter() - self.t0
        try:
            rss, pids = tree_rss(self.pid)
        except psutil.Error as e:
            self.errors.append(f"{t:.0f}s: {type(e).__name__}: {e}")
            return
        if self.samples and pids != self.samples[-1]["pids"]:
            self.pid_changes.append({"t_s": round(t, 1), "before": self.samples[-1]["pids"], "after": pids})
        self.samples.append({"t_s": round(t, 1), "minute": int(max(t, 0) // 60),
                             "rss_mib": round(rss / 2**20, 1), "loadavg_1m": round(os.getloadavg()[0], 2),
                             "pids": pids})

    def run(self) -> None:
        delay = max(0.0, self.t0 - time.perf_counter())
        if self._halt.wait(delay):
            return
        k = 0
        while not self._halt.is_set():
            self.sample()
            k += 1
            if self._halt.wait(max(0.0, self.t0 + k * self.interval - time.perf_counter())):
                break

    def stop(self) -> None:
        self._halt.set()
        self.join(self.interval + 5)

    def minute_means(self, key: str = "rss_mib") -> dict[int, float]:
        by: dict[int, list[float]] = {}
        for s in self.samples:
            by.setdefault(s["minute"], []).append(s[key])
        return {m: round(sum(v) / len(v), 2 if key == "loadavg_1m" else 1) for m, v in by.items()}


# ---------------------------------------------------------------- the soak

@dataclass
class SoakResult:
    url: str
    minutes: float
    fraction: float
    threads: int
    timeout_s: float
    capacity_rps: float
    capacity: dict            # the closed-loop run: seconds, requests, failed, p50/p99/max
    target_rps: float
    achieved_rps: float
    scheduled: int            # requests due in the paced run; more than `requests` if some were never sent
    requests: int
    failed: int
    failure_reasons: dict
    p50_ms: float
    p99_ms: float
    max_ms: float
    per_minute: list          # minute, requests, failed, rate, p50/p99/max ms, rss_mib, loadavg_1m
    rss_first_mib: float
    rss_last_mib: float
    rss_growth: float         # last minute mean / first minute mean - 1
    processes: int            # in the server's tree at the start of the paced run
    process_changes: list = field(default_factory=list)
    rss_samples: list = field(default_factory=list)
    sampler_errors: list = field(default_factory=list)
    warmup: list = field(default_factory=list)
    duration_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        reasons = "" if not self.failed else f" ({'; '.join(list(self.failure_reasons)[:3])})"
        unsent = f" ({self.scheduled - self.requests:,} due but never sent)" if self.scheduled > self.requests else ""
        return (f"capacity {self.capacity_rps:.0f} req/s (closed loop, {self.threads} threads, "
                f"{self.capacity['seconds']:.0f} s, {self.capacity['failed']} failed); "
                f"{self.minutes:g} min paced at {self.fraction:.0%} = {self.target_rps:.0f} req/s target, "
                f"{self.achieved_rps:.0f} achieved; {self.requests:,} requests{unsent}, {self.failed} failed{reasons}; "
                f"latency from due time p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
                f"max {self.max_ms:.0f} ms (timeout {self.timeout_s:g} s); "
                f"RSS ({self.processes} processes) first minute {self.rss_first_mib:,.0f} MiB, "
                f"last minute {self.rss_last_mib:,.0f} MiB, growth {self.rss_growth:+.2%}; "
                f"worker set changes {len(self.process_changes)}")


def soak(url: str, server_pid: int, body: bytes, minutes: float, fraction: float = 0.8, threads: int = 16,
         capacity_seconds: float = 15.0, warmup_seconds: float = 3.0, timeout: float = 60.0,
         rss_interval: float = 5.0, settle_timeout: float = 180.0, log=None) -> SoakResult:
    """Warm up, measure capacity (closed loop), then run paced at fraction x capacity for `minutes`.

    Warm-up repeats (for up to `settle_timeout` s) until a round has no failure, so that every
    worker has its model loaded before capacity is measured; its rounds are in the result."""
    log = log or (lambda *a: None)
    started = time.perf_counter()
    warmup = []
    # Warm-up rounds until one is clean: the first answer (or /ping) comes from whichever worker
    # is ready first, and the others answer 503 until their model is loaded.
    while warmup_seconds > 0:
        w = closed_loop(url, body, warmup_seconds, threads, timeout)
        warmup.append({k: w[k] for k in ("seconds", "rps", "requests", "failed", "failure_reasons")})
        log(f"[soak] warm-up {w['rps']:.0f} req/s, {w['failed']} failed"
            + (f": {'; '.join(list(w['failure_reasons'])[:3])}" if w["failed"] else ""))
        if not w["failed"] or time.perf_counter() - started > settle_timeout:
            break
    cap = closed_loop(url, body, capacity_seconds, threads, timeout)
    log(f"[soak] capacity {cap['rps']:.0f} req/s over {cap['seconds']:.0f} s with {threads} threads, "
        f"p50 {cap['p50_ms']} ms, p99 {cap['p99_ms']} ms, {cap['failed']} failed")
    if cap["rps"] <= 0:
        raise RuntimeError(f"no successful request while measuring capacity: {cap['failure_reasons']}")
    target = cap["rps"] * fraction
    seconds = minutes * 60
    log(f"[soak] paced at {target:.0f} req/s ({fraction:.0%}) for {minutes:g} min")

    sampler = RssSampler(server_pid, time.perf_counter() + 0.05, rss_interval)
    sampler.start()

    def on_minute(m, rec):
        s = rec.minute_stats(m, min(60.0, seconds - 60 * m))
        rss, load = sampler.minute_means().get(m), sampler.minute_means("loadavg_1m").get(m)
        log(f"[soak] minute {m + 1}: {s['requests']} requests ({s['rate']}/s), p50 {s['p50_ms']} ms, "
            f"p99 {s['p99_ms']} ms, max {s['max_ms']} ms, {s['failed']} failed, RSS {rss} MiB, load {load}")

    try:
        rec, _t0, elapsed = paced(url, body, target, seconds, threads, timeout, on_minute)
    finally:
        sampler.stop()

    rss_by_minute = sampler.minute_means()
    load_by_minute = sampler.minute_means("loadavg_1m")
    n_minutes = math.ceil(seconds / 60)
    per_minute = []
    for m in range(n_minutes):
        s = rec.minute_stats(m, min(60.0, seconds - 60 * m))
        s["rss_mib"] = rss_by_minute.get(m)
        s["loadavg_1m"] = load_by_minute.get(m)
        per_minute.append(s)
    o = rec.overall()
    first, last = rss_by_minute.get(0), rss_by_minute.get(n_minutes - 1)
    if not first or not last:
        raise RuntimeError(f"no RSS samples for the first or last minute: {sampler.errors[-3:]}")
    return SoakResult(
        url=url, minutes=minutes, fraction=fraction, threads=threads, timeout_s=timeout,
        capacity_rps=cap["rps"], capacity=cap, target_rps=round(target, 1),
        achieved_rps=round(o["requests"] / elapsed, 1), scheduled=math.ceil(seconds * target - 1e-9),
        requests=o["requests"], failed=o["failed"],
        failure_reasons=o["failure_reasons"], p50_ms=o["p50_ms"], p99_ms=o["p99_ms"], max_ms=o["max_ms"],
        per_minute=per_minute, rss_first_mib=first, rss_last_mib=last,
        rss_growth=round(last / first - 1, 4),
        processes=len(sampler.samples[0]["pids"]) if sampler.samples else 0,
        process_changes=sampler.pid_changes,
        rss_samples=[{k: v for k, v in s.items() if k != "pids"} for s in sampler.samples],
        sampler_errors=sampler.errors, warmup=warmup, duration_s=round(time.perf_counter() - started, 1))


# ---------------------------------------------------------------- report

def markdown(r: SoakResult, meta: dict) -> str:
    lines = [
        "# Soak", "",
        f"Run {meta['date']} on {meta['vcpus']} vCPU {meta['arch']} ({meta['cpu']}), Python {meta['python']}. "
        f"Load average at start {meta['loadavg_at_start']}, at end {meta['loadavg_at_end']}; the machine is "
        f"shared and the load generator runs on the same cores.", "",
        f"Server: this project's `serve` on the host, model `{meta['model']}` ({meta['model_description']}), "
        f"{meta['server_workers']} workers, body {meta['body_bytes']:,} bytes. "
        f"Load: `bench.soak`, {r.threads} threads with one keep-alive connection each; capacity = closed loop for "
        f"{r.capacity['seconds']:.0f} s; then an open loop paced at {r.fraction:.0%} of it, latency counted from "
        f"each request's due time. RSS summed over the server's process tree (master and workers), every "
        f"{meta['rss_interval_s']:g} s.", "",
        f"**Summary:** {r.summary()}.", "",
        f"Warm-up before the capacity run: {len(r.warmup)} round(s) of closed loop, repeated until one had no "
        f"failure (workers still loading their model answer 503); failures in those rounds: "
        f"{sum(w['failed'] for w in r.warmup)}"
        + (f" ({'; '.join(sorted({k for w in r.warmup for k in w['failure_reasons']})[:3])})"
           if any(w["failed"] for w in r.warmup) else "") + ".", "",
        "| minute | requests | req/s | p50 ms | p99 ms | max ms | failed | RSS MiB (mean) | load avg 1 min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in r.per_minute:
        rss = f"{m['rss_mib']:,.1f}" if m["rss_mib"] is not None else ""
        lines.append(f"| {m['minute'] + 1} | {m['requests']:,} | {m['rate']:,.1f} | {m['p50_ms']:.2f} | "
                     f"{m['p99_ms']:.2f} | {m['max_ms']:.1f} | {m['failed']} | {rss} | {m['loadavg_1m']} |")
    lines.append(f"| all | {r.requests:,} | {r.achieved_rps:,.1f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                 f"{r.max_ms:.1f} | {r.failed} | {r.rss_first_mib:,.1f} → {r.rss_last_mib:,.1f} "
                 f"({r.rss_growth:+.2%}) | |")
    if r.failure_reasons:
        lines += ["", "Failure reasons (count): " + "; ".join(f"{k} ({v})" for k, v in r.failure_reasons.items())]
    if r.process_changes:
        lines += ["", f"The server's process set changed {len(r.process_changes)} times (a worker restarted): "
                      + "; ".join(f"at {c['t_s']} s" for c in r.process_changes[:10])]
    lines += ["", f"Reproduce: `{meta['command']}`", ""]
    return "\n".join(lines)


def main(argv=None):
    from . import stacks as S
    from .harness import REPO, RESULTS, TMP, log, wait_ready
    from .models import MODELS, write_bodies
    from .run import machine_info

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=None, help="server workers (default: the server's own rule)")
    ap.add_argument("--fraction", type=float, default=0.8, help="paced rate as a fraction of measured capacity")
    ap.add_argument("--threads", type=int, default=16, help="load threads (one connection each)")
    ap.add_argument("--capacity-seconds", type=float, default=15.0)
    ap.add_argument("--model", choices=("mlp", "cifar_cnn"), default="mlp")
    ap.add_argument("--timeout", type=float, default=float(os.environ.get("SAGEMAKER_MODEL_SERVER_TIMEOUT", 60)),
                    help="client timeout per request, s (default: the server's SAGEMAKER_MODEL_SERVER_TIMEOUT)")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    meta = {**machine_info(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "model": a.model,
            "model_description": MODELS[a.model].description, "rss_interval_s": 5.0,
            "command": " ".join([".venv/bin/python -m bench.soak", *(argv if argv is not None else sys.argv[1:])])}
    TMP.mkdir(parents=True, exist_ok=True)
    # the model is exported in a child process: keep TensorFlow out of this one
    subprocess.run([sys.executable, "-c", "from bench.models import *; from bench.harness import TMP; "
                    f"ensure_models(TMP, {[a.model]!r})"], cwd=REPO, check=True)
    body = write_bodies(TMP, [a.model])[a.model]["json"].read_bytes()
    meta["body_bytes"] = len(body)
    env = {"SAGEMAKER_MODEL_SERVER_TIMEOUT": str(int(a.timeout))}
    if a.workers:
        env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(a.workers)
    meta["server_workers"] = S.ours_default_workers(env)
    meta["server_env"] = env

    server, path, _ = S.start_ours(f"soak-{a.model}", TMP / "models" / a.model, a.workers, env)
    try:
        startup, _ = wait_ready(server, path, body, timeout=600, check=S.check_json)
        log(f"[soak] server ready in {startup:.1f} s at {server.url} (pid {server.proc.pid}); log {server.logpath}")
        result = soak(server.url, server.proc.pid, body, a.minutes, a.fraction, a.threads,
                      capacity_seconds=a.capacity_seconds, timeout=a.timeout, log=log)
        meta["server_alive_at_end"] = server.alive()
    except BaseException:
        log(f"[soak] failed; server log tail:\n{server.logs(3000)}")
        raise
    finally:
        server.stop()
    meta["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "soak.json"), "w") as f:
        json.dump({"meta": meta, "result": result.to_dict()}, f, indent=1)
    with open(os.path.join(a.out, "soak.md"), "w") as f:
        f.write(markdown(result, meta))
    log(f"[soak] {result.summary()}")
    log(f"[soak] wrote {os.path.join(a.out, 'soak.json')} and soak.md")
    return 0 if result.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
