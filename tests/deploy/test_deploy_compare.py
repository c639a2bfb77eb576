"""`deploy compare` and `deploy local --fpmath-check`.

- two small HTTP servers in this process with answers the test controls: the figures (max abs /
  rel diff, top-1 agreement, latency rows, errors) and the CI thresholds;
- an endpoint in moto after `deploy migrate --mode canary --weight 0`: requests reach each variant
  through TargetVariant (tests/fixtures/moto_migrate.py answers per variant);
- the real images with the example digits model: the amd64 image against the arm64 image (BF16
  fast math in effect under qemu), and `--fpmath-check` with the arm64 image (BF16 vs STRICT).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import numpy as np
import pytest

from tests.fixtures import moto_migrate
from tests.fixtures.moto import run_deploy as run

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = str(Path(sys.executable).with_name("deploy"))
REQUESTS = ROOT / "examples" / "digits" / "requests.jsonl"


def probs(x: float) -> list[float]:
    """A 'classifier' answer: 3 scores with the largest at index int(x) % 3."""
    row = [0.1, 0.2, 0.3]
    row[int(x) % 3], row[2] = row[2], row[int(x) % 3]
    return row


class Server:
    """POST /invocations -> answer(doc, content_type) in a thread; records content types seen."""

    def __init__(self, answer):
        self.seen = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ctype = self.headers.get("Content-Type", "")
                outer.seen.append((self.path, ctype))
                status, out, out_type = answer(body, ctype)
                self.send_response(status)
                self.send_header("Content-Type", out_type)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def json_answer(shift=0.0, flip_at=None, fail_at=None):
    def answer(body, ctype):
        if ctype == "application/x-npy":
            arr = np.load(io.BytesIO(body)) + shift
            buf = io.BytesIO()
            np.save(buf, arr)
            return 200, buf.getvalue(), "application/x-npy"
        x = json.loads(body)["instances"][0][0]
        if fail_at is not None and x == fail_at:
            return 500, b'{"error": "boom"}', "application/json"
        row = probs(x + (1 if flip_at is not None and x == flip_at else 0))
        return 200, json.dumps({"predictions": [[v + shift for v in row]]}).encode(), "application/json"
    return answer


@pytest.fixture
def requests_file(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps({"instances": [[float(i)]]}) + "\n" for i in range(10)) + "\n")
    return path


@pytest.fixture
def servers():
    made = []

    def make(answer):
        s = Server(answer)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def test_figures_and_thresholds(capsys, servers, requests_file):
    a = servers(json_answer())
    b = servers(json_answer(shift=0.004, flip_at=3.0))
    code, out, err = run(capsys, "compare", "--requests", str(requests_file), "--url", a.url, "--url", b.url,
                         "--output", "json")
    assert code == 0, err
    r = json.loads(out)
    assert r["requests"] == 10
    assert [(t["target"], t["ok"], t["errors"]) for t in r["targets"]] == [(a.url, 10, 0), (b.url, 10, 0)]
    assert all(t["p50_ms"] > 0 and t["p99_ms"] >= t["p50_ms"] for t in r["targets"])
    (pair,) = r["agreement"]
    (o,) = pair["outputs"]
    assert o["name"] == "predictions" and o["compared"] == 30 and o["requests"] == 10
    # request 3: [0.3, 0.2, 0.1] against [0.1, 0.3, 0.2] + 0.004; everywhere else the shift alone
    assert o["max_abs_diff"] == pytest.approx(0.196, abs=1e-9)
    assert o["max_rel_diff"] == pytest.approx(0.196 / 0.3, rel=1e-6)
    assert (o["top1_agree"], o["top1_rows"], o["top1_agreement"]) == (9, 10, 0.9)
    # 11 POSTs each (1 warm-up), all to /invocations with the JSON Lines content type
    assert len(a.seen) == 11 and set(a.seen) == {("/invocations", "application/json")}

    code, out, err = run(capsys, "compare", "--requests", str(requests_file), "--url", a.url, "--url", b.url,
                         "--max-abs-diff", "0.2", "--min-top1-agreement", "90%")
    assert code == 0, err
    assert "ok    max abs diff <= 0.2: 1.96e-01" in out and "ok    top-1 agreement >= 90.00%: 90.00%" in out
    assert "90.0% (9/10 rows)" in out
    code, out, err = run(capsys, "compare", "--requests", str(requests_file), "--url", a.url, "--url", b.url,
                         "--max-abs-diff", "1e-3")
    assert code == 1 and "FAIL  max abs diff <= 0.001" in out and "1 check failed" in err
    code, out, err = run(capsys, "compare", "--requests", str(requests_file), "--url", a.url, "--url", b.url,
                         "--min-top1-agreement", "0.95")
    assert code == 1 and "FAIL  top-1 agreement >= 95.00%: 90.00%" in out


def test_identical_servers_agree_exactly_and_errors_fail_the_check(capsys, servers, requests_file):
    a, b = servers(json_answer()), servers(json_answer())
    code, out, err = run(capsys, "compare", "--requests", str(requests_file), "--url", a.url, "--url", b.url,
                         "--max-abs-diff", "0", "--min-top1-agreement", "1", "--output", "json")
    assert code == 0, err
    (o,) = json.loads(out)["agreement"][0]["outputs"]
    assert (o["max_abs_diff"], o["max_rel_diff"], o["top1_agreement"]) == (0.0, 0.0, 1.0)

    c = servers(json_answer(fail_at=4.0))
    code, out, err = run(capsys, "compare", "--requests", str(requests_file), "--url", a.url, "--url", c.url,
                         "--max-abs-diff", "0")
    assert code == 1
    assert "error: line 5: HTTP 500" in out
    assert "1 requests failed on one target only" in out and "FAIL  no request fails on one target only: 1" in out


def test_folder_of_files_keeps_their_content_types(capsys, servers, tmp_path):
    folder = tmp_path / "reqs"
    folder.mkdir()
    for i in range(3):
        buf = io.BytesIO()
        np.save(buf, np.full((2, 4), float(i), np.float32))
        (folder / f"{i}.npy").write_bytes(buf.getvalue())
    (folder / "x.json").write_text(json.dumps({"instances": [[1.0]]}))
    a, b = servers(json_answer()), servers(json_answer(shift=0.5))
    code, out, err = run(capsys, "compare", "--requests", str(folder), "--url", a.url, "--url", b.url,
                         "--output", "json", "--warmup", "0")
    assert code == 0, err
    assert sorted(a.seen) == sorted([("/invocations", "application/x-npy")] * 3 + [("/invocations", "application/json")])
    outs = {o["name"]: o for o in json.loads(out)["agreement"][0]["outputs"]}
    assert outs["output"]["compared"] == 24 and outs["output"]["max_abs_diff"] == pytest.approx(0.5)
    assert outs["predictions"]["compared"] == 3


def test_bad_arguments_exit_2(capsys, servers, requests_file, tmp_path):
    a = servers(json_answer())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instances": [[1]]}\n{"instances": \n')
    assert run(capsys, "compare", "--requests", str(bad), "--url", a.url, "--url", a.url)[0] == 2
    code, out, err = run(capsys, "compare", "--requests", str(requests_file), "--url", a.url)
    assert code == 2 and "two servers" in err
    code, out, err = run(capsys, "compare", "--requests", str(requests_file))
    assert code == 2 and "--endpoint NAME" in err
    assert run(capsys, "compare", "--requests", str(tmp_path / "missing"), "--url", a.url, "--url", a.url)[0] == 2


# --- an endpoint's variants, through TargetVariant -----------------------------------------------

@pytest.mark.deploy
def test_endpoint_variants_after_a_canary_migration(capsys, migrate_aws, ecr_images, requests_file):
    sm = boto3.client("sagemaker")
    sm.create_model(ModelName="x86", ExecutionRoleArn=migrate_aws["role"],
                    PrimaryContainer={"Image": "763104351884.dkr.ecr.eu-west-1.amazonaws.com/tensorflow-inference:2.16-cpu",
                                      "ModelDataUrl": "s3://b/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName="x86", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "x86", "InstanceType": "ml.c6i.xlarge", "InitialInstanceCount": 1}])
    sm.create_endpoint(EndpointName="digits", EndpointConfigName="x86")
    code, out, err = run(capsys, "migrate", "digits", "--image", ecr_images["multi"], "--mode", "canary",
                         "--weight", "0", "--poll", "0.05")
    assert code == 0, err

    def answer(shift):
        def fn(body, ctype):
            row = probs(json.loads(body)["instances"][0][0])
            return json.dumps({"predictions": [[v + shift for v in row]]}).encode(), "application/json"
        return fn
    moto_migrate.variant_handler("digits", "AllTraffic", answer(0.0))
    moto_migrate.variant_handler("digits", "Graviton", answer(0.0005))
    # weight 0: without TargetVariant every request would reach AllTraffic; compare reaches both
    code, out, err = run(capsys, "compare", "--requests", str(requests_file), "--endpoint", "digits",
                         "--max-abs-diff", "1e-3", "--output", "json")
    assert code == 0, err
    r = json.loads(out)
    assert [t["target"] for t in r["targets"]] == ["digits/AllTraffic", "digits/Graviton"]
    assert [t["ok"] for t in r["targets"]] == [10, 10]
    (o,) = r["agreement"][0]["outputs"]
    assert o["max_abs_diff"] == pytest.approx(0.0005) and o["top1_agreement"] == 1.0
    seen = [v for ep, v in moto_migrate.INVOCATIONS]
    assert seen.count("AllTraffic") == 11 and seen.count("Graviton") == 11

    code, out, err = run(capsys, "compare", "--requests", str(requests_file), "--endpoint", "digits",
                         "--variants", "AllTraffic,Nope")
    assert code == 2 and "no production variant Nope" in err


# --- the real images -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_model(tmp_path_factory) -> Path:
    """The example digits model folder (examples/digits/model when `make example` ran, else trained)."""
    if (ROOT / "examples" / "digits" / "model" / "1" / "saved_model.pb").is_file():
        return ROOT / "examples" / "digits" / "model"
    out = tmp_path_factory.mktemp("digits")
    subprocess.run([sys.executable, str(ROOT / "examples" / "digits" / "train.py"), "--out", str(out)],
                   check=True, capture_output=True, timeout=900)
    return out / "model"


def leftover_containers() -> list[str]:
    out = subprocess.run(["docker", "ps", "-a", "--filter", "name=deploy-local-", "--format", "{{.Names}}"],
                         capture_output=True, text=True, timeout=60).stdout
    return out.split()


def check_bf16_drift(o: dict) -> None:
    # BF16 fast math really ran (the drift is not zero), and it stays small: same labels
    assert o["compared"] == 64 * 10
    assert 0 < o["max_abs_diff"] < 1e-2, o
    assert o["top1_agreement"] >= 0.95, o


@pytest.mark.container
@pytest.mark.arm64
def test_compare_amd64_image_with_arm64_image(capsys, image_amd64, image_arm64, digits_model):
    """docs/migration.md's step 2 as written there: the two servers its `deploy local ... &` lines
    start (the amd64 one with the environment that line gives) and its two `deploy compare` lines,
    with the exit codes it shows (the 1e-2 gate passes, the 1e-3 one fails)."""
    import shlex

    from tests.deploy import test_docs_walkthrough as walkthrough
    from tests.fixtures.docker import start_container

    servers = walkthrough.documented("migration.md", walkthrough.SIDE_BY_SIDE_SERVERS)
    x86_argv = shlex.split(next(e.command for e in servers if "test-amd64" in e.command))
    x86_env = dict(x86_argv[i + 1].split("=", 1) for i, a in enumerate(x86_argv) if a == "--env")
    assert x86_env == {"DNNL_DEFAULT_FPMATH_MODE": "STRICT"}   # the x86 side as on an ml.c6i endpoint: fp32
    compares = walkthrough.documented("migration.md", walkthrough.SIDE_BY_SIDE_COMPARE)
    assert [e.code for e in compares] == [0, 1], compares
    with start_container(image_amd64, digits_model, env=x86_env) as x86, start_container(image_arm64, digits_model) as arm:
        results = []
        for entry in compares:
            argv = shlex.split(entry.command)[1:]
            argv = [{"http://127.0.0.1:18081": x86.url, "http://127.0.0.1:18082": arm.url}.get(a, a) for a in argv]
            argv[argv.index("--requests") + 1] = str(REQUESTS)
            results.append(run(capsys, *argv, "--output", "json"))
        logs = arm.logs()[-3000:] if results[0][0] else ""
    code, out, err = results[0]
    assert code == 0, err + out + logs
    assert results[1][0] == compares[1].code, results[1]
    failed = [c["check"] for c in json.loads(results[1][1])["checks"] if not c["ok"]]
    assert failed == ["max abs diff <= 0.001"], failed
    r = json.loads(out)
    print(json.dumps(r, indent=1))
    assert [t["ok"] for t in r["targets"]] == [64, 64]
    (o,) = r["agreement"][0]["outputs"]
    check_bf16_drift(o)


@pytest.mark.container
@pytest.mark.arm64
def test_local_fpmath_check_with_the_arm64_image(image_arm64, digits_model):
    """docs/migration.md's step 1 line, as written there (the image and model are the session's)."""
    import shlex

    from tests.deploy import test_docs_walkthrough as walkthrough

    (entry,) = walkthrough.documented("migration.md", walkthrough.FPMATH_LINE)
    argv = shlex.split(entry.command)[1:]
    argv[argv.index("--image") + 1] = image_arm64
    argv[argv.index("--model-data") + 1] = str(digits_model)
    argv[argv.index("--requests") + 1] = str(REQUESTS)
    proc = subprocess.run([DEPLOY, *argv, "--env", "SAGEMAKER_MODEL_SERVER_WORKERS=1", "--output", "json"],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout)
    print(json.dumps(r, indent=1))
    assert [t["target"] for t in r["targets"]] == ["BF16", "STRICT (fp32)"]
    assert [t["ok"] for t in r["targets"]] == [64, 64]
    (o,) = r["agreement"][0]["outputs"]
    check_bf16_drift(o)
    assert r["platform"] == "linux/arm64"
    if os.uname().machine == "x86_64":     # container.run picked the image's platform (deploy local, transform --local)
        assert "--platform linux/arm64" in proc.stderr
    if r["emulated"]:
        assert "the latencies are not" in r["note"]
    # both containers got the mode they were meant to have, and both are gone
    assert "-e DNNL_DEFAULT_FPMATH_MODE=BF16" in proc.stderr and "-e DNNL_DEFAULT_FPMATH_MODE=STRICT" in proc.stderr
    assert proc.stderr.count("stopped (exit code 0)") == 2
    assert leftover_containers() == []
