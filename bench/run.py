"""`make bench`: every stack against the same SavedModels, in one session on this machine.

    .venv/bin/python -m bench.run [--quick] [--warmup S] [--duration S] [--stacks a,b] [--models a,b]

Writes bench/results/results.json, results.md and chart.png. Durations can also be set by env
(BENCH_WARMUP, BENCH_DURATION, BENCH_HEAVY_DURATION, BENCH_WORKERS, BENCH_IMAGE, BENCH_IMAGE_ARM64).
Load: wrk with one thread, one example per request, warm-up run discarded. Peers run in their
own venvs under bench/.venvs/ (created on first use). Only 127.0.0.1 is ever targeted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback

from . import stacks as S
from .harness import (BENCH, REPO, RESULTS, TMP, cpu_per_request, cpu_snapshot, ensure_venv, have_docker,
                      image_exists, log, wait_ready, wrk, wrk_script)
from .models import MODELS, saved_model_dir, write_bodies


def _env(name, default, cast=float):
    v = os.environ.get(name)
    return cast(v) if v not in (None, "") else default


def _check_names(flag, given, known):
    """Exit 2 with one line when `given` (comma-separated) names something not in `known`."""
    unknown = [n for n in given.split(",") if n and n not in known]
    if unknown:
        print(f"bench.run: {flag}: unknown {', '.join(map(repr, unknown))}; "
              f"known: {', '.join(known)}", file=sys.stderr)
        sys.exit(2)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 s warm-up, 3 s per level, ResNet50 at c1 only")
    ap.add_argument("--warmup", type=float, default=_env("BENCH_WARMUP", 5.0))
    ap.add_argument("--duration", type=float, default=_env("BENCH_DURATION", 15.0))
    ap.add_argument("--heavy-duration", type=float, default=_env("BENCH_HEAVY_DURATION", 10.0),
                    help="seconds per level for ResNet50")
    ap.add_argument("--inproc-duration", type=float, default=_env("BENCH_INPROC_DURATION", 4.0),
                    help="seconds per batch size in the in-process run")
    ap.add_argument("--concurrency", default=os.environ.get("BENCH_CONCURRENCY", "1,8,32"))
    ap.add_argument("--heavy-concurrency", default=os.environ.get("BENCH_HEAVY_CONCURRENCY", "1,8"))
    ap.add_argument("--workers", type=int, default=_env("BENCH_WORKERS", os.cpu_count() or 2, int),
                    help="workers for the peers (default: vCPUs)")
    ap.add_argument("--stacks", default=",".join(("tf",) + S.HTTP_STACKS))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--image", default=os.environ.get("BENCH_IMAGE", "sagemaker-tf-graviton:latest"))
    ap.add_argument("--image-arm64", default=os.environ.get("BENCH_IMAGE_ARM64", ""),
                    help="arm64 image for the functional smoke run (default: BENCH_IMAGE if it is arm64, "
                         "else sagemaker-tf-graviton:arm64)")
    ap.add_argument("--ours-env", action="append", default=[], metavar="K=V",
                    help="extra env for this project's server (host and container)")
    ap.add_argument("--skip-arm64", action="store_true")
    ap.add_argument("--merge", action="store_true",
                    help="re-run only the given stacks/models and replace their rows in the existing results.json "
                         "(the rest of the table keeps its earlier numbers: say so when you publish it)")
    ap.add_argument("--rounds", type=int, default=_env("BENCH_ROUNDS", 1, int),
                    help="with more than 1, the HTTP stacks of a model run side by side and are measured in turn, "
                         "level by level, this many rounds (order rotated each round); each figure is the median "
                         "of its rounds: ratios between stacks then hold on a machine whose load drifts")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    _check_names("--models", a.models, MODELS)
    _check_names("--stacks", a.stacks, ("tf",) + S.HTTP_STACKS)
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    if a.quick:
        a.warmup, a.duration, a.heavy_duration, a.inproc_duration = 1.0, 3.0, 3.0, 1.0
        a.heavy_concurrency = "1"
    return a


def image_arch(image):
    r = subprocess.run(["docker", "image", "inspect", "-f", "{{.Architecture}}", image], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def run_inprocess(model, a):
    heavy = MODELS[model].heavy
    batches = "1,4,8,16,32" if heavy else "1,8,32,64,128,256"
    cmd = [sys.executable, "-m", "bench.inprocess", "--saved-model", str(saved_model_dir(TMP, model)),
           "--body", str(TMP / "bodies" / f"{model}.json"), "--duration", str(a.inproc_duration),
           "--batches", batches]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1800)
    line = next((l for l in r.stdout.splitlines() if l.startswith("INPROCJSON ")), None)
    if not line:
        return {"status": "failed", "reason": (r.stderr or r.stdout)[-800:]}
    return {"status": "ok", **json.loads(line[len("INPROCJSON "):])}


def _levels(model, a):
    heavy = MODELS[model].heavy
    levels = [int(c) for c in (a.heavy_concurrency if heavy else a.concurrency).split(",")]
    return levels, (a.heavy_duration if heavy else a.duration), heavy


def _start_stack(stack, model, base, a, bodies):
    """Start one stack on one model, validate a response, measure idle memory.
    Returns (record, server, url, wrk script); server is None when the stack is skipped or failed."""
    ours_env = dict(kv.split("=", 1) for kv in a.ours_env)
    rec = {"stack": stack, "model": model, "levels": [], "loadavg_1m_before": round(os.getloadavg()[0], 2)}
    if stack == "ours-container":
        if not have_docker():
            return {**rec, "status": "skipped", "reason": "no Docker engine answering"}, None, None, None
        if not image_exists(a.image):
            return ({**rec, "status": "skipped", "reason": f"image {a.image} not found (build it with `make build`)"},
                    None, None, None)
        arch = image_arch(a.image)
        if arch != "amd64":
            return {**rec, "status": "skipped", "reason": f"image {a.image} is {arch}, not amd64"}, None, None, None
        rec["image"] = a.image
    if stack == "mms" and not shutil.which("java"):
        return ({**rec, "status": "skipped", "reason": "no Java runtime for MMS (apt-get install openjdk-17-jre-headless)"},
                None, None, None)
    if stack == "ours" and not (REPO / ".venv" / "bin" / "serve").exists():
        return {**rec, "status": "skipped", "reason": ".venv/bin/serve not installed"}, None, None, None

    ours_workers = S.ours_default_workers(ours_env)
    starter = {"byoc": S.start_byoc,
               "byoc-same": lambda m, b, w: S.start_byoc(m, b, ours_workers, tag="byoc-same"),
               "mms": S.start_mms, "mlserver": S.start_mlserver,
               "ours": lambda m, b, w: S.start_ours(m, b, w, ours_env),
               "ours-container": lambda m, b, w: S.start_ours_container(m, b, w, a.image, ours_env)}[stack]
    server = None
    try:
        t0 = time.time()
        server, path, kind = starter(model, base, a.workers)
        body_path = bodies[model][kind]
        body = body_path.read_bytes()
        check = S.check_v2 if kind == "v2" else S.check_json
        wait_ready(server, path, body, timeout=600 if stack.startswith("ours") else 300, check=check)
        rec["startup_s"] = round(time.time() - t0, 1)
        rec["body"] = kind
        rec["body_bytes"] = len(body)
        time.sleep(2.0)
        rec["memory_idle"] = server.memory()
        rec["workers"] = {"byoc-same": ours_workers}.get(stack, a.workers if stack in S.PEER_STACKS else None)
        if stack.startswith("ours"):
            import re
            mw = re.search(r"workers=(\d+)", server.logs(200000))
            rec["workers"] = int(mw.group(1)) if mw else None
            mt = re.search(r"intra_op_threads=(\d+)", server.logs(200000))
            rec["intra_op_threads"] = int(mt.group(1)) if mt else None
        return rec, server, server.url + path, wrk_script(body_path)
    except Exception as e:  # record and go on: one broken stack must not lose the others
        _failed(rec, server, e)
        return rec, None, None, None


def _measure(rec, server, url, script, c, duration, heavy, a) -> dict:
    if a.warmup > 0:
        wrk(url, script, c, a.warmup, timeout=30 if heavy else 10)
    pids, root = server.pids(), server.root
    before = cpu_snapshot(pids, root)
    m = wrk(url, script, c, duration, timeout=30 if heavy else 10)
    m["cpu_ms_per_request"] = cpu_per_request(before, cpu_snapshot(pids, root), m["requests"])
    log(f"  {rec['stack']:15s} {rec['model']:10s} c{c:<3d} {m['rps']:8.1f} req/s  p50 {m['p50_ms']:8.2f} ms  "
        f"p99 {m['p99_ms']:8.2f} ms  non2xx {m['non_2xx']} err {m['socket_errors']}  "
        f"CPU ms/req {m['cpu_ms_per_request']['total']} {m['cpu_ms_per_request']['roles']}")
    return m


def _failed(rec, server, e):
    rec["status"] = "failed"
    rec["reason"] = f"{type(e).__name__}: {e}"[:1500]
    log(f"  {rec['stack']} {rec['model']} FAILED: {rec['reason'][:600]}")
    traceback.print_exc()
    if server is not None:
        rec["log_tail"] = server.logs(1500)


def _finish(rec, server):
    try:
        time.sleep(1.0)
        rec["memory_after"] = server.memory()
        rec.setdefault("status", "ok")
    finally:
        server.stop()


def run_http(stack, model, base, a, bodies):
    """One stack on one model: start it, run the levels, stop it."""
    levels, duration, heavy = _levels(model, a)
    rec, server, url, script = _start_stack(stack, model, base, a, bodies)
    if server is None:
        return rec
    try:
        for c in levels:
            rec["levels"].append(_measure(rec, server, url, script, c, duration, heavy, a))
    except Exception as e:
        _failed(rec, server, e)
    finally:
        _finish(rec, server)
    return rec


def median_level(rounds: list[dict]) -> dict:
    """One level's figures as the median over rounds (req/s, latencies, CPU per request by role),
    the rounds themselves kept under "rounds"."""
    def med(values):
        values = sorted(values)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    first = rounds[0]
    out = {k: (med([r[k] for r in rounds]) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
           for k, v in first.items() if k != "cpu_ms_per_request"}
    out["connections"] = first["connections"]
    for count in ("requests", "non_2xx", "socket_errors", "duration_s"):   # every failure counts, never a median
        if count in first:
            out[count] = sum(r[count] for r in rounds)
    cpus = [r["cpu_ms_per_request"] for r in rounds]
    roles = sorted({role for c in cpus for role in c["roles"]})
    out["cpu_ms_per_request"] = {
        "total": round(med([c["total"] for c in cpus]), 3),
        "roles": {role: round(med([c["roles"].get(role, 0.0) for c in cpus]), 3) for role in roles},
        "threads": first["cpu_ms_per_request"].get("threads", {})}
    out["rounds"] = [{k: r[k] for k in ("rps", "p50_ms", "p99_ms")} | {"cpu_ms": r["cpu_ms_per_request"]["total"]}
                     for r in rounds]
    return out


def run_http_interleaved(stacks, model, base, a, bodies) -> list[dict]:
    """Every stack on one model at once, measured in turn, level by level, for a.rounds rounds, the
    stacks' order rotated each round; each level reported as the median of its rounds. On a shared
    machine whose load drifts, this is what makes stacks comparable: each stack's rounds meet the
    same drift, and no stack always goes first."""
    levels, duration, heavy = _levels(model, a)
    started = []
    for stack in stacks:
        log(f"[{stack}] {model} (start)")
        started.append(_start_stack(stack, model, base, a, bodies))
    live = [s for s in started if s[1] is not None]
    per_level: dict[tuple[str, int], list[dict]] = {}
    try:
        for r in range(a.rounds):
            order = live[r % len(live):] + live[:r % len(live)] if live else []
            log(f"[round {r + 1}/{a.rounds}] {model}: {', '.join(rec['stack'] for rec, *_ in order)}")
            for c in levels:
                for rec, server, url, script in order:
                    if rec.get("status") == "failed":
                        continue
                    try:
                        per_level.setdefault((rec["stack"], c), []).append(
                            _measure(rec, server, url, script, c, duration, heavy, a))
                    except Exception as e:
                        _failed(rec, server, e)
    finally:
        for rec, server, *_ in live:
            rec["rounds"] = a.rounds
            rec["levels"] = [median_level(per_level[(rec["stack"], c)]) for c in levels
                             if (rec["stack"], c) in per_level]
            _finish(rec, server)
    return [rec for rec, *_ in started]


def arm64_smoke(a, bases, bodies):
    """Functional run of the arm64 image under qemu: start, /ping, one /invocations. Not timed."""
    from .harness import ContainerServer, free_port
    rec = {"status": "skipped"}
    if not have_docker():
        return {**rec, "reason": "no Docker engine answering"}
    candidates = [a.image_arm64] if a.image_arm64 else [
        a.image, "sagemaker-tf-graviton:arm64", "sagemaker-tf-graviton:test-arm64", "sagemaker-tf-graviton:dev-arm64"]
    image = next((i for i in candidates if i and image_exists(i) and image_arch(i) == "arm64"), None)
    if not image:
        return {**rec, "reason": f"no arm64 image among {candidates} (build with ./build.sh --platform linux/arm64 "
                                 f"--tag sagemaker-tf-graviton:arm64 --load)"}
    rec.update(image=image, model="mlp")
    t0 = time.time()
    srv = None
    try:
        srv = ContainerServer("arm64-smoke", image, bases["mlp"] / "model", free_port(), platform="linux/arm64")
        _, data = wait_ready(srv, "/invocations", bodies["mlp"]["json"].read_bytes(), timeout=900,
                             check=S.check_json)
        rec.update(status="pass", seconds_to_first_answer=round(time.time() - t0, 1),
                   response=data.decode()[:200])
        arch = subprocess.run(["docker", "exec", srv.cid, "uname", "-m"], capture_output=True, text=True)
        rec["uname_m"] = arch.stdout.strip()
    except Exception as e:
        rec.update(status="fail", reason=f"{type(e).__name__}: {e}"[:1500])
    finally:
        if srv is not None:
            srv.stop()
    return rec


def machine_info():
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()
    return {"cpu": cpu, "vcpus": os.cpu_count(), "arch": platform.machine(), "python": platform.python_version(),
            "loadavg_at_start": [round(x, 2) for x in load]}


def main(argv=None):
    a = parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("bench: wrk not found; install Debian's package: apt-get install -y wrk")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    TMP.mkdir(parents=True, exist_ok=True)
    models = [m for m in a.models.split(",") if m]
    stacks = [s for s in a.stacks.split(",") if s]
    t_start = time.time()
    log(f"[bench] models={models} stacks={stacks} warmup={a.warmup}s duration={a.duration}s "
        f"(ResNet50 {a.heavy_duration}s at c{a.heavy_concurrency}) peer workers={a.workers}")

    # 1. models and request bodies (in a child process: keep TensorFlow out of this one)
    subprocess.run([sys.executable, "-c", "from bench.models import *; from bench.harness import TMP; "
                    f"ensure_models(TMP, {models!r})"], cwd=REPO, check=True)
    bases = {m: TMP / "models" / m for m in models}
    bodies = write_bodies(TMP, models)
    # peers' venvs first, so their (one-time) creation is not inside any timing
    for s, req in (("byoc", "byoc"), ("mms", "mms"), ("mlserver", "mlserver")):
        if s in stacks:
            ensure_venv(s, BENCH / "peers" / req / "requirements.txt")

    results = {"meta": {**machine_info(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                        "warmup_s": a.warmup, "duration_s": a.duration, "heavy_duration_s": a.heavy_duration,
                        "concurrency": a.concurrency, "heavy_concurrency": a.heavy_concurrency,
                        "peer_workers": a.workers, "ours_env": a.ours_env, "quick": a.quick,
                        "wrk": "wrk 4.1, 1 thread, Lua POST script, one example per request"},
               "models": {m: {"description": MODELS[m].description, "input_shape": [1, *MODELS[m].input_shape],
                              "json_body_bytes": bodies[m]["bytes"],
                              "v2_body_bytes": bodies[m]["v2"].stat().st_size} for m in models},
               "inprocess": {}, "runs": [], "arm64_smoke": None}

    previous = None
    if a.merge and os.path.exists(os.path.join(out, "results.json")):
        previous = json.load(open(os.path.join(out, "results.json")))

    def save():
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump(results, f, indent=1)

    # 2. in-process ceiling
    if "tf" in stacks:
        for m in models:
            log(f"[tf in-process] {m}")
            results["inprocess"][m] = r = run_inprocess(m, a)
            if r["status"] == "ok":
                log(f"  batch1 {r['batch1']['calls_per_s']}/s p50 {r['batch1']['p50_ms']} ms; best batch "
                    f"{r['best_batch']}: {r['best_items_per_s']} items/s; +stdlib json "
                    f"{r['batch1_stdlib_json']['calls_per_s']}/s")
            save()
    # 3. HTTP stacks: peers first, then this project. BYOC also runs with this project's worker
    # count when that differs from the peers' (the like-for-like memory and latency comparison).
    ours_workers = S.ours_default_workers(dict(kv.split("=", 1) for kv in a.ours_env))
    results["meta"]["ours_workers"] = ours_workers
    http = [s for s in S.HTTP_STACKS if s in stacks]
    if "byoc" in http and ours_workers != a.workers and "byoc-same" not in http:
        http.insert(http.index("byoc") + 1, "byoc-same")
    elif "byoc-same" in http and ours_workers == a.workers:
        http.remove("byoc-same")
    if a.rounds > 1:
        results["meta"]["rounds"] = a.rounds
        for m in models:
            results["runs"].extend(run_http_interleaved(http, m, bases[m], a, bodies))
            save()
        order = {s: i for i, s in enumerate(http)}
        results["runs"].sort(key=lambda r: order.get(r["stack"], 99))
    else:
        for s in http:
            for m in models:
                log(f"[{s}] {m}")
                results["runs"].append(run_http(s, m, bases[m], a, bodies))
                save()
    # 4. arm64 functional smoke run
    if not a.skip_arm64 and "mlp" in models:
        log("[arm64 smoke] under qemu")
        results["arm64_smoke"] = arm64_smoke(a, bases, bodies)
        log(f"  {results['arm64_smoke']}")
    results["meta"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["meta"]["wall_s"] = round(time.time() - t_start, 1)
    if previous is not None:
        fresh = {(r["stack"], r["model"]) for r in results["runs"]}
        for r in results["runs"]:
            r["merged_at"] = results["meta"]["date"]
        previous["runs"] = [r for r in previous["runs"] if (r["stack"], r["model"]) not in fresh] + results["runs"]
        previous["inprocess"].update(results["inprocess"])
        if results["arm64_smoke"] is not None:
            previous["arm64_smoke"] = results["arm64_smoke"]
        if stacks:
          previous["meta"].setdefault("merged_runs", []).append(
              {"date": results["meta"]["date"], "stacks": stacks, "models": models, "argv": sys.argv[1:],
               "loadavg_at_start": results["meta"]["loadavg_at_start"]})
        order = {s: i for i, s in enumerate(("byoc", "byoc-same", "mms", "mlserver", "ours", "ours-container"))}
        previous["runs"].sort(key=lambda r: (list(previous["models"]).index(r["model"])
                                             if r["model"] in previous["models"] else 99, order.get(r["stack"], 99)))
        results = previous
    save()

    from .report import write_markdown
    write_markdown(results, os.path.join(out, "results.md"))
    make_chart(os.path.join(out, "results.json"), os.path.join(out, "chart.png"))
    log(f"[bench] done in {results['meta']['wall_s']:.0f}s -> {out}/results.{{json,md}}, chart.png")


def make_chart(results_json, png):
    try:
        venv = ensure_venv("report", BENCH / "requirements.txt")
        subprocess.run([str(venv / "bin" / "python"), "-m", "bench.chart", results_json, png], cwd=REPO, check=True)
    except Exception as e:
        log(f"[chart] not drawn: {e}")


if __name__ == "__main__":
    main()
