"""`deploy transform --engine async`: against the real amd64 image (--local): the same input gives
byte-identical outputs on both engines, for the MLP (100,000 CSV rows) and the digits CNN (JSON
Lines). One run per engine per model (the container starts once per run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.server import free_port

pytestmark = pytest.mark.container

DEPLOY = str(Path(sys.executable).with_name("deploy"))


def run_local(img, model, tmp_path, engine, *extra, timeout=900):
    out = tmp_path / f"out-{engine}"
    proc = subprocess.run([DEPLOY, "transform", "--local", "--engine", engine, "--image", img,
                           "--model-data", str(model), "--input", str(tmp_path / "in"), "--output", str(out),
                           "--port", str(free_port()), "--format", "json", *extra],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout), proc.stderr, out


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_mlp_100k_csv_rows_byte_identical_on_both_engines(image_amd64, tmp_path, mlp_model_dir):
    rng = np.random.default_rng(25)
    for i, n in enumerate((60_000, 40_000)):
        rows = rng.normal(size=(n, 4)).astype(np.float32)
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"part-{i}.csv").write_text("".join(",".join(f"{v:.6f}" for v in r) + "\n" for r in rows))
    batch, _, out_b = run_local(image_amd64, mlp_model_dir.model_dir, tmp_path, "batch")
    async_, err, out_a = run_local(image_amd64, mlp_model_dir.model_dir, tmp_path, "async")
    assert batch["records"] == async_["records"] == 100_000
    a, b = outputs(out_a), outputs(out_b)
    assert sorted(a) == ["part-0.csv.out", "part-1.csv.out"]
    assert a == b
    assert len(a["part-0.csv.out"].splitlines()) == 60_000
    assert async_["engine"] == "async" and batch["engine"] == "batch"
    assert "staging requests in" in err and "removed" in err


def test_digits_jsonlines_byte_identical_on_both_engines(image_amd64, tmp_path, example_root):
    from sklearn.datasets import load_digits
    images = (load_digits().images / 16.0).reshape(-1, 8, 8, 1)
    (tmp_path / "in").mkdir()
    for i, part in enumerate((images[:1000], images[1000:])):
        (tmp_path / "in" / f"part-{i}.jsonl").write_text(
            "".join(json.dumps(img.tolist(), separators=(",", ":")) + "\n" for img in part))
    model = example_root / "examples" / "digits" / "model.tar.gz"
    extra = ("--content-type", "application/jsonlines", "--join-source", "Input")
    batch, _, out_b = run_local(image_amd64, model, tmp_path, "batch", *extra)
    async_, _, out_a = run_local(image_amd64, model, tmp_path, "async", *extra)
    a, b = outputs(out_a), outputs(out_b)
    assert a == b and sorted(a) == ["part-0.jsonl.out", "part-1.jsonl.out"]
    first = json.loads(a["part-0.jsonl.out"].splitlines()[0])
    assert len(first["SageMakerOutput"]) == 10 and first["SageMakerInput"] == images[0].tolist()
