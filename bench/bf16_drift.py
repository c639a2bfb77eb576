"""How far BF16 fast math moves a model's outputs: `python -m bench.bf16_drift`.

bench/bf16.py shows that DNNL_DEFAULT_FPMATH_MODE=BF16 reaches oneDNN; this measures what it does
to the numbers, for two models:
  * digits:   the example CNN (examples/digits/model, `make example`), the 64 held-out images of
              examples/digits/requests.jsonl;
  * resnet50: keras.applications.ResNet50 (25.6 M parameters, seeded random weights: no download
              here), logits of N seeded random 224x224x3 images (--resnet-images, default 2: under qemu one
              ResNet50 image takes minutes).
Each model runs in a fresh process per mode (oneDNN reads the mode once; the two run at once), with
DNNL_DEFAULT_FPMATH_MODE=BF16 and =STRICT (fp32), TF_ENABLE_ONEDNN_OPTS=1:
  * in the arm64 image under qemu (the emulated CPU has bf16, so these are Graviton3-like numbers),
  * on this host, when TensorFlow is installed here (its own CPU's bf16 support decides).
Reported with the figures `deploy compare` uses (deploy/sagemaker_tf_deploy/core/comparison.py): max abs / rel diff
and top-1 agreement. Writes bench/results/bf16_drift.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .bf16 import ARM64_IMAGES, _env, image_arch
from .harness import RESULTS, have_docker, image_exists, log

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits"

SCRIPT = r'''
import json, os, sys, time
import numpy as np
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
which, out, model_dir, requests, n = sys.argv[1:6]
t0 = time.perf_counter()
if which == "digits":
    fn = tf.saved_model.load(model_dir).signatures["serving_default"]
    rows = [json.loads(l)["instances"][0] for l in open(requests) if l.strip()]
    x = tf.constant(np.asarray(rows, np.float32))
    y = list(fn(x).values())[0].numpy()
else:
    import keras
    keras.utils.set_random_seed(0)
    m = keras.applications.ResNet50(weights=None, classifier_activation=None)
    x = np.random.default_rng(0).uniform(0, 255, (int(n), 224, 224, 3)).astype(np.float32)
    x = keras.applications.resnet50.preprocess_input(x)
    y = m(x, training=False).numpy()
np.save(out, y)
print(json.dumps({"seconds": time.perf_counter() - t0, "shape": list(y.shape)}))
'''


def _run_arm64(image: str, which: str, mode: str, work: Path, n: int) -> dict:
    env = {**_env(mode == "BF16"), "ONEDNN_VERBOSE": "0"}
    args = ["docker", "run", "--rm", "--platform", "linux/arm64", "-v", f"{work}:/work",
            "-v", f"{DIGITS / 'model' / '1'}:/model:ro", "-v", f"{DIGITS / 'requests.jsonl'}:/requests.jsonl:ro"]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    args += [image, "python", "-c", SCRIPT, which, f"/work/{which}-{mode}.npy", "/model", "/requests.jsonl", str(n)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"{which} {mode} in {image} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _run_host(which: str, mode: str, work: Path, n: int) -> dict:
    env = dict(os.environ)
    env.update({**_env(mode == "BF16"), "ONEDNN_VERBOSE": "0"})
    r = subprocess.run([sys.executable, "-c", SCRIPT, which, str(work / f"{which}-{mode}.npy"),
                        str(DIGITS / "model" / "1"), str(DIGITS / "requests.jsonl"), str(n)],
                       env=env, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"{which} {mode} on the host failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def drift(work: Path, which: str) -> dict:
    from sagemaker_tf_deploy.core.comparison import OutputAgreement

    a, b = np.load(work / f"{which}-STRICT.npy"), np.load(work / f"{which}-BF16.npy")
    agg = OutputAgreement(which)
    for ra, rb in zip(a, b):            # one request per row, as deploy compare counts them
        agg.add(ra.astype(np.float64), rb.astype(np.float64))
    d = agg.as_dict()
    d["max_abs_value"] = float(np.abs(a).max())
    return d


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default=os.environ.get("BENCH_IMAGE_ARM64", ""))
    ap.add_argument("--models", default="digits,resnet50")
    ap.add_argument("--skip-arm64", action="store_true")
    ap.add_argument("--skip-host", action="store_true")
    ap.add_argument("--resnet-images", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "bf16_drift.md"))
    a = ap.parse_args(argv)
    models = [m for m in a.models.split(",") if m]
    if "digits" in models and not (DIGITS / "model" / "1" / "saved_model.pb").is_file():
        sys.exit("bench.bf16_drift: the digits model is missing: run `make example` first")
    where = []
    if not a.skip_arm64:
        image = a.image or next((i for i in ARM64_IMAGES if have_docker() and image_exists(i)
                                 and image_arch(i) == "arm64"), None)
        if image:
            where.append((f"arm64 image {image} under qemu",
                          lambda w, m, mode, i=image: _run_arm64(i, w, mode, m, a.resnet_images)))
    if not a.skip_host:
        try:
            import tensorflow  # noqa: F401
            where.append((f"host ({os.uname().machine}, this CPU)",
                          lambda w, m, mode: _run_host(w, mode, m, a.resnet_images)))
        except ImportError:
            pass
    lines = [f"# BF16 fast math drift ({time.strftime('%Y-%m-%d %H:%M:%S %Z')})", "",
             "`python -m bench.bf16_drift`: outputs with DNNL_DEFAULT_FPMATH_MODE=BF16 against STRICT (fp32), "
             "same model, same inputs, one fresh process per mode.", "",
             "| where | model | values | max abs diff | max rel diff | top-1 agreement | max abs output | s (BF16 / STRICT) |",
             "|---|---|---|---|---|---|---|---|"]
    for label, runner in where:
        for which in models:
            with tempfile.TemporaryDirectory(prefix="bf16-drift-") as tmp:
                work = Path(tmp)
                os.chmod(work, 0o777)
                log(f"[bf16_drift] {which} on {label}")
                with ThreadPoolExecutor(2) as pool:
                    futures = {mode: pool.submit(runner, which, work, mode) for mode in ("BF16", "STRICT")}
                    t = {mode: f.result() for mode, f in futures.items()}
                d = drift(work, which)
            top1 = f"{d['top1_agreement']:.1%} ({d['top1_agree']}/{d['top1_rows']})" if d["top1_rows"] else "-"
            lines.append(f"| {label} | {which} | {d['compared']} | {d['max_abs_diff']:.2e} | {d['max_rel_diff']:.2e} "
                         f"| {top1} | {d['max_abs_value']:.3g} | {t['BF16']['seconds']:.1f} / {t['STRICT']['seconds']:.1f} |")
            log(f"[bf16_drift] {lines[-1]}")
    lines += ["", "Relative difference: |a - b| / max(|a|, |b|) where max(|a|, |b|) >= 1e-6. Timings under qemu "
              "are emulation's, not Graviton's. ResNet50 has random weights (no download here): its top-1 is a "
              "sensitivity figure, not an accuracy one."]
    Path(a.out).write_text("\n".join(lines) + "\n")
    log(f"[bf16_drift] -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
