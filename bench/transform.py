"""Batch transform targets (issue 15): local transform vs one request per record vs TF in-process;
and the two transform engines against each other (issue 25).

    python -m bench.transform [--image sagemaker-tf-graviton:test-amd64] [--full] [--models mlp,cifar_cnn]
    python -m bench.transform --engines [--full] [--rounds 3]

For each model, in one run on this machine, with one container of the image:
  * transform   `deploy transform --local`'s agent (deploy/sagemaker_tf_deploy/local/transform.py): the
                records split, packed into MultiRecord mini-batches up to MaxPayloadInMB, sent
                MaxConcurrentTransforms at a time, both from the container's /execution-parameters
                (the same code path as the command; the container is started once for all three);
  * one each    the same records, one request per record, 32 connections: wrk (C, one thread:
                the cheapest client there is) with one record as the body, and the agent's own
                Python client with SingleRecord at 32 (what `--strategy SingleRecord
                --max-concurrent 32` does);
  * in-process  TensorFlow in this process (bench/inprocess.py) at its best batch size, no HTTP.
  * engines     `--engine batch --local` against `--engine async --local` on the same input in
                the same container (the async engine stages each request in a folder, queues it
                to the async runtime played here and reads the answer back from a file), after the
                warm-up pass, alternating ROUNDS times; the best of each and their ratio. Target:
                async within 10% of batch. --engines measures only this (and writes
                results/transform-engines.*).
Records: the 64-feature MLP as CSV rows, CIFAR-sized images (32x32x3, integer pixel values)
as JSON Lines. Default (short, about 2 minutes): 20,000 MLP rows and 1,000 images; --full:
the issue's 100,000 and 10,000. Results: bench/results/transform.json and transform.md (--name).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import requests  # noqa: E402

from bench import harness, models  # noqa: E402
from sagemaker_tf_deploy.local import container as local, transform as tl  # noqa: E402

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
TMP = RESULTS / "tmp"


def write_inputs(name: str, count: int, folder: Path) -> tuple[Path, str, bytes]:
    """COUNT records in FOLDER (4 files); returns (folder, content type, one record as a body)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    rng = np.random.default_rng(7)
    per_file = -(-count // 4)
    first = None
    for i in range(4):
        n = min(per_file, count - i * per_file)
        if n <= 0:
            break
        if name == "mlp":
            rows = rng.random((n, 64), dtype=np.float32)
            lines = [",".join(f"{v:.5f}" for v in row) for row in rows]
            (folder / f"part-{i}.csv").write_text("\n".join(lines) + "\n")
            ctype = "text/csv"
        else:
            imgs = rng.integers(0, 256, size=(n, 32, 32, 3))
            lines = [json.dumps(img.tolist(), separators=(",", ":")) for img in imgs]
            (folder / f"part-{i}.jsonl").write_text("\n".join(lines) + "\n")
            ctype = "application/jsonlines"
        first = first or lines[0].encode() + b"\n"
    return folder, ctype, first


def inprocess(name: str, base: Path, duration: float) -> dict:
    bodies = models.write_bodies(TMP, [name])
    proc = subprocess.run([sys.executable, "-m", "bench.inprocess", "--saved-model",
                           str(models.saved_model_dir(TMP, name)), "--body", str(bodies[name]["json"]),
                           "--duration", str(duration), "--batches", "1,32,128,512"],
                          capture_output=True, text=True, cwd=ROOT.parent, timeout=900)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("INPROCJSON ")), None)
    if line is None:
        raise RuntimeError(f"bench.inprocess failed: {proc.stderr[-2000:]}")
    res = json.loads(line[len("INPROCJSON "):])
    return {"best_batch": res["best_batch"], "records_per_s": res["best_items_per_s"]}


def compare_engines(url: str, spec: tl.LocalTransformSpec, params: dict, rounds: int) -> dict:
    """Both engines on the same input against the same container, alternating; best of each."""
    rates: dict[str, list[float]] = {"batch": [], "async": []}
    outputs: dict[str, list[dict[str, bytes]]] = {"batch": [], "async": []}
    for _ in range(rounds):
        for engine in ("batch", "async"):
            out = spec.output.with_name(f"out-{engine}")
            espec = tl.LocalTransformSpec(**{**spec.__dict__, "engine": engine, "output": out})
            run = tl.transform_files(url, espec, params, quiet=True, info=lambda m: None)
            assert run.failed == 0, run.failures[:3]
            rates[engine].append(round(run.records_per_second, 1))
            outputs[engine].append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    best = {engine: max(values) for engine, values in rates.items()}
    # The server's adaptive batcher stacks rows of concurrent requests into one model call, and
    # a matrix product's last bits can depend on the batch it ran in: whether two runs of the
    # SAME engine agree byte for byte is the control for whether the engines do.
    return {"batch_records_per_s": best["batch"], "async_records_per_s": best["async"],
            "async_vs_batch": round(best["async"] / best["batch"], 3), "rounds": rates,
            "identical_outputs": outputs["batch"][-1] == outputs["async"][-1],
            "batch_runs_identical": all(o == outputs["batch"][0] for o in outputs["batch"]),
            "max_abs_diff": _max_abs_diff(outputs["batch"][-1], outputs["async"][-1])}


def _max_abs_diff(a: dict[str, bytes], b: dict[str, bytes]) -> float | None:
    """Largest difference between two runs' CSV or JSON Lines outputs (None if shapes differ)."""
    worst = 0.0
    for name in a:
        xs = [float(v) for v in a[name].replace(b"[", b"").replace(b"]", b"").replace(b"\n", b",").split(b",") if v]
        ys = [float(v) for v in b.get(name, b"").replace(b"[", b"").replace(b"]", b"").replace(b"\n", b",").split(b",") if v]
        if len(xs) != len(ys):
            return None
        worst = max([worst] + [abs(x - y) for x, y in zip(xs, ys)])
    return worst


def measure(name: str, image: str, count: int, wrk_seconds: float, env: dict, rounds: int = 3,
            engines_only: bool = False) -> dict:
    base = models.ensure_models(TMP, [name], log=harness.log)[name]
    folder, ctype, one = write_inputs(name, count, TMP / "transform" / name / "in")
    out_dir = TMP / "transform" / name / "out"
    accept = "text/csv" if name == "mlp" else "application/jsonlines"
    spec = tl.LocalTransformSpec(image=image, model_data=str(base / "model"), input=folder, output=out_dir,
                                 content_type=ctype, accept=accept, port=harness.free_port(),
                                 env=env)
    result: dict = {"model": name, "records": count, "content_type": ctype, "image": image,
                    "env": env}

    def on_ready(url: str) -> None:
        answered = requests.get(f"{url}/execution-parameters", timeout=30).json()
        params, _ = tl.effective_parameters(spec, answered)
        result["execution_parameters"] = answered
        tl.transform_files(url, spec, params, quiet=True)          # warm-up pass (oneDNN primitives)
        run = tl.transform_files(url, spec, params, quiet=True)
        assert run.failed == 0, run.failures[:3]
        result["transform"] = {"records_per_s": round(run.records_per_second, 1), "seconds": round(run.seconds, 2),
                               "requests": run.requests, **params}
        harness.log(f"[transform] {name}: {result['transform']}")
        result["engines"] = compare_engines(url, spec, params, rounds)
        harness.log(f"[engines] {name}: {result['engines']}")
        if engines_only:
            raise tl.TransformDone
        single = {**params, "BatchStrategy": "SingleRecord", "MaxConcurrentTransforms": 32}
        n_single = min(count, 5000)
        sub = TMP / "transform" / name / "in-single"
        write_inputs(name, n_single, sub)
        sspec = tl.LocalTransformSpec(**{**spec.__dict__, "input": sub, "output": out_dir.with_name("out-single")})
        run1 = tl.transform_files(url, sspec, single, quiet=True)
        assert run1.failed == 0, run1.failures[:3]
        result["single_python_32"] = {"records_per_s": round(run1.records_per_second, 1), "records": n_single}
        harness.log(f"[one each, python client, 32] {name}: {result['single_python_32']}")
        body = TMP / "transform" / name / "one-record"
        body.write_bytes(one)
        script = harness.wrk_script(body, ctype)
        w = harness.wrk(f"{url}/invocations", script, 32, wrk_seconds)
        result["single_wrk_32"] = {"records_per_s": w["rps"], "non_2xx": w["non_2xx"],
                                   "p99_ms": w["p99_ms"], "seconds": w["duration_s"]}
        harness.log(f"[one each, wrk, 32] {name}: {result['single_wrk_32']}")
        raise tl.TransformDone

    lspec = local.LocalSpec(image=image, model_data=spec.model_data, port=spec.port,
                            env=tl.container_env(spec), stream_logs=False)
    try:
        local.run(lspec, harness.log, None, on_ready=on_ready)
    except tl.TransformDone:
        pass
    if engines_only:
        return result
    result["inprocess_best"] = inprocess(name, base, duration=3.0)
    harness.log(f"[in-process] {name}: {result['inprocess_best']}")
    t, one_py, one_wrk = (result["transform"]["records_per_s"], result["single_python_32"]["records_per_s"],
                          result["single_wrk_32"]["records_per_s"])
    result["ratios"] = {"transform_vs_one_each_wrk": round(t / one_wrk, 2) if one_wrk else None,
                        "transform_vs_one_each_python": round(t / one_py, 2) if one_py else None,
                        "transform_vs_inprocess_best": round(t / result["inprocess_best"]["records_per_s"], 3)}
    return result


def markdown(results: list[dict], machine: str) -> str:
    lines = ["# Batch transform (bench/transform.py)", "", machine, "",
             "| model | records | transform records/s | one request each, 32 conn. (wrk) | (python client) "
             "| TF in-process best batch | transform / one each (wrk) | transform / in-process |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(
            f"| {r['model']} ({r['content_type']}) | {r['records']:,} | {r['transform']['records_per_s']:,.0f} "
            f"| {r['single_wrk_32']['records_per_s']:,.0f} | {r['single_python_32']['records_per_s']:,.0f} "
            f"| {r['inprocess_best']['records_per_s']:,.0f} (batch {r['inprocess_best']['best_batch']}) "
            f"| {r['ratios']['transform_vs_one_each_wrk']}x | {r['ratios']['transform_vs_inprocess_best']:.2f} |")
    lines += ["", "Transform parameters (from the container's /execution-parameters unless given): "
              + "; ".join(f"{r['model']}: {r['transform']['BatchStrategy']}, {r['transform']['MaxPayloadInMB']} MB, "
                          f"{r['transform']['MaxConcurrentTransforms']} at once, {r['transform']['requests']} requests"
                          for r in results), ""]
    lines += ["Engines (best of the rounds, same container): " + "; ".join(
        f"{r['model']}: batch {r['engines']['batch_records_per_s']:,.0f}, async {r['engines']['async_records_per_s']:,.0f} "
        f"records/s, async/batch {r['engines']['async_vs_batch']:.3f}" for r in results if "engines" in r), ""]
    return "\n".join(lines)


def engines_markdown(results: list[dict], machine: str) -> str:
    lines = ["# Transform engines (bench/transform.py --engines)", "", machine, "",
             "| model | records | batch records/s | async records/s | async / batch | rounds (records/s) |",
             "|---|---:|---:|---:|---:|---|"]
    for r in results:
        e = r["engines"]
        lines.append(f"| {r['model']} ({r['content_type']}) | {r['records']:,} | {e['batch_records_per_s']:,.0f} "
                     f"| {e['async_records_per_s']:,.0f} | {e['async_vs_batch']:.3f} "
                     f"| batch {e['rounds']['batch']}, async {e['rounds']['async']} |")
    lines += ["", "Same container, same input, after one warm-up pass. Outputs: "
              + "; ".join(f"{r['model']}: engines {'byte-identical' if r['engines']['identical_outputs'] else 'differ'}, "
                          f"max abs diff {r['engines']['max_abs_diff']}, two batch runs "
                          f"{'identical' if r['engines']['batch_runs_identical'] else 'differ'}" for r in results), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default="sagemaker-tf-graviton:test-amd64")
    ap.add_argument("--models", default="mlp,cifar_cnn")
    ap.add_argument("--full", action="store_true", help="the issue's sizes: 100,000 MLP rows, 10,000 images")
    ap.add_argument("--mlp-records", type=int)
    ap.add_argument("--cifar-records", type=int)
    ap.add_argument("--wrk-seconds", type=float, default=10.0)
    ap.add_argument("--env", action="append", default=[], metavar="K=V", help="container environment")
    ap.add_argument("--name", help="results/NAME.json and NAME.md (default transform, or transform-engines)")
    ap.add_argument("--engines", action="store_true", help="only the batch vs async engine comparison")
    ap.add_argument("--rounds", type=int, default=3, help="engine comparison rounds (default 3)")
    a = ap.parse_args(argv)
    a.name = a.name or ("transform-engines" if a.engines else "transform")
    if not harness.have_docker() or not harness.image_exists(a.image):
        print(f"bench.transform needs Docker and the image {a.image} (./build.sh --platform linux/amd64 "
              f"--tag {a.image} --load)", file=sys.stderr)
        return 2
    env = dict(kv.split("=", 1) for kv in a.env)
    counts = {"mlp": a.mlp_records or (100_000 if a.full else 20_000),
              "cifar_cnn": a.cifar_records or (10_000 if a.full else 1_000)}
    results = []
    start = time.monotonic()
    load_before = os.getloadavg()[0]
    for name in a.models.split(","):
        results.append(measure(name, a.image, counts[name], a.wrk_seconds, env, a.rounds, a.engines))
    machine = (f"{os.cpu_count()} vCPUs, image {a.image}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
               f"run took {time.monotonic() - start:.0f} s, load average {load_before:.1f} before, "
               f"{os.getloadavg()[0]:.1f} after (the machine is shared: compare ratios within a run)"
               + (f", env {env}" if env else ""))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.name}.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    text = engines_markdown(results, machine) if a.engines else markdown(results, machine)
    (RESULTS / f"{a.name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
