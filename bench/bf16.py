"""Evidence that DNNL_DEFAULT_FPMATH_MODE=BF16 reaches oneDNN: `python -m bench.bf16`.

Runs a small matmul + conv graph with ONEDNN_VERBOSE=1 and TF_ENABLE_ONEDNN_OPTS=1, with and
without DNNL_DEFAULT_FPMATH_MODE=BF16, on this host and (if Docker, qemu and an arm64 image
are there) inside the arm64 image under emulation, and greps oneDNN's verbose lines for
`attr-fpmath:bf16`. Writes bench/results/bf16.txt.

The attribute only allows oneDNN to compute in bf16; whether it does depends on the ISA
line (`isa:`) and the implementation chosen: only CPUs with bf16 matrix units (Graviton3+
with SVE bf16/BFMMLA, Intel AMX) get bf16 kernels. Elsewhere the same primitive runs in fp32,
so this machine cannot time the effect.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from .harness import RESULTS, have_docker, image_exists, log

PROBE = r'''
import tensorflow as tf
w = tf.random.normal((256, 256)); k = tf.random.normal((3, 3, 3, 16))
@tf.function
def f(x, img):
    return tf.nn.relu(tf.matmul(x, w)), tf.nn.relu(tf.nn.conv2d(img, k, 1, "SAME"))
for _ in range(2):
    f(tf.random.normal((64, 256)), tf.random.normal((1, 32, 32, 3)))
print("probe done")
'''

ARM64_IMAGES = ("sagemaker-tf-graviton:arm64", "sagemaker-tf-graviton:test-arm64", "sagemaker-tf-graviton:dev-arm64",
                "sagemaker-tf-graviton:latest")


def _env(bf16: bool) -> dict:
    # The control sets STRICT explicitly: an image may carry DNNL_DEFAULT_FPMATH_MODE in its ENV.
    return {"ONEDNN_VERBOSE": "1", "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
            "DNNL_DEFAULT_FPMATH_MODE": "BF16" if bf16 else "STRICT"}


def _evidence(out: str) -> dict:
    lines = [l for l in out.splitlines() if l.startswith("onednn_verbose")]
    info = [l for l in lines if ",info,cpu," in l or ",info,oneDNN" in l]
    execs = [l for l in lines if ",exec," in l]
    bf16 = [l for l in execs if "attr-fpmath:bf16" in l]
    return {"info": info, "exec": execs, "bf16": bf16, "ok": "probe done" in out}


def run_host(bf16: bool) -> dict:
    env = dict(os.environ)
    env.pop("DNNL_DEFAULT_FPMATH_MODE", None)
    env.update(_env(bf16))
    r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=600)
    return _evidence(r.stdout + r.stderr)


def image_arch(image):
    r = subprocess.run(["docker", "image", "inspect", "-f", "{{.Architecture}}", image], capture_output=True, text=True)
    return r.stdout.strip()


def run_arm64(image: str, bf16: bool) -> dict:
    args = ["docker", "run", "--rm", "--platform", "linux/arm64"]
    for k, v in _env(bf16).items():
        args += ["-e", f"{k}={v}"]
    args += [image, "python", "-c", PROBE]
    r = subprocess.run(args, capture_output=True, text=True, timeout=900)
    return _evidence(r.stdout + r.stderr)


def _section(title, with_bf16, without):
    L = [f"== {title}",
         f"DNNL_DEFAULT_FPMATH_MODE=BF16: {len(with_bf16['bf16'])} of {len(with_bf16['exec'])} executed primitives "
         f"carry attr-fpmath:bf16 (probe finished: {with_bf16['ok']})",
         f"with DNNL_DEFAULT_FPMATH_MODE=STRICT (control): {len(without['bf16'])} of {len(without['exec'])}",
         "-- oneDNN info lines (ISA decides whether bf16 kernels exist):", *with_bf16["info"],
         "-- primitives with attr-fpmath:bf16 (first 6):", *with_bf16["bf16"][:6],
         "-- the same primitives with STRICT (first 3):",
         *[l for l in without["exec"] if "convolution" in l or "matmul" in l][:3], ""]
    return L


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default=os.environ.get("BENCH_IMAGE_ARM64", ""))
    ap.add_argument("--skip-arm64", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "bf16.txt"))
    a = ap.parse_args(argv)
    L = [f"# DNNL_DEFAULT_FPMATH_MODE=BF16 reaching oneDNN ({time.strftime('%Y-%m-%d %H:%M:%S %Z')})",
         "# probe: tf.function with matmul (256x256) + conv2d (3x3x3x16), ONEDNN_VERBOSE=1, TF_ENABLE_ONEDNN_OPTS=1",
         "# attr-fpmath:bf16 = oneDNN was told it may compute in bf16; only CPUs with bf16 matrix units",
         "# (Graviton3+, Intel AMX) have such kernels, elsewhere the primitive still runs fp32.", ""]
    log("[bf16] host")
    w, wo = run_host(True), run_host(False)
    L += _section(f"host ({os.uname().machine})", w, wo)
    verdict = {"host": bool(w["bf16"]) and not wo["bf16"]}
    image = None
    if not a.skip_arm64:
        image = a.image or next((i for i in ARM64_IMAGES if have_docker() and image_exists(i)
                                 and image_arch(i) == "arm64"), None)
        if image:
            log(f"[bf16] arm64 image {image} under qemu (slow)")
            w, wo = run_arm64(image, True), run_arm64(image, False)
            L += _section(f"arm64 image {image} under qemu (emulated CPU: its ISA line says what oneDNN saw)", w, wo)
            verdict["arm64"] = bool(w["bf16"]) and not wo["bf16"]
        else:
            L += ["== arm64: skipped (no Docker engine or no arm64 image loaded)", ""]
    L.insert(4, "# result: " + ", ".join(f"{k}: {'attr-fpmath:bf16 seen' if v else 'NOT seen'}" for k, v in verdict.items()))
    if not a.skip_arm64 and image:
        r = subprocess.run(["docker", "image", "inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", image],
                           capture_output=True, text=True)
        baked = [e for e in r.stdout.splitlines() if e.startswith(("DNNL_", "ONEDNN_", "TF_ENABLE_ONEDNN"))]
        L.append(f"# note: {image} sets in its ENV: {' '.join(baked) or 'nothing oneDNN-related'}")
    with open(a.out, "w") as f:
        f.write("\n".join(L) + "\n")
    log(f"[bf16] {verdict} -> {a.out}")
    return 0 if all(verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
