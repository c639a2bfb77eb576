"""The `serve` command refuses an unsafe SAGEMAKER_SUBMIT_DIRECTORY archive before it starts anything
(the crafted archives are tests/unit/test_archives.py's)."""
from __future__ import annotations

import time

import pytest

from tests.fixtures.server import launch
from tests.unit.test_archives import CASES, assert_nothing_escaped


# --- (b) the serve command with SAGEMAKER_SUBMIT_DIRECTORY ---------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_serve_refuses_an_unsafe_submit_directory(mlp_model_dir, tmp_path, case):
    bad = CASES[case]
    outside = tmp_path / "tmp"      # TMPDIR: the tarball unpacks into TMPDIR/sagemaker-code-*
    tgz = bad.craft(tmp_path / f"{case}.tar.gz", outside)
    started = time.monotonic()
    server = launch(mlp_model_dir.model_dir, {"SAGEMAKER_SUBMIT_DIRECTORY": str(tgz), "TMPDIR": str(outside)})
    try:
        code = server.process.wait(60)
    finally:
        server.stop()
    logs = server.logs()
    assert code == 1, logs
    assert time.monotonic() - started < 30, "the master should refuse before loading anything"
    assert (f"cannot unpack SAGEMAKER_SUBMIT_DIRECTORY {tgz}: unsafe archive member "
            + bad.message(outside, 1)) in logs
    assert "Booting worker" not in logs and "Listening at" not in logs   # no worker ever started
    assert_nothing_escaped(outside)
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]   # staging folder removed
