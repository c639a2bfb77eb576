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


def test_a_submit_directory_with_a_1_gib_member_fails_naming_the_limit(mlp_model_dir, tmp_path):
    """Issue 23, point 19: refused at the member that passes the cap, before anything starts."""
    import gzip
    import tarfile

    from serve.usercode import MAX_CODE_ARCHIVE_BYTES

    tgz = tmp_path / "sourcedir.tar.gz"
    with gzip.open(tgz, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        script = b"def input_fn(body, content_type):\n    return body\n"
        info = tarfile.TarInfo("inference.py")
        info.size = len(script)
        tar.addfile(info, __import__("io").BytesIO(script))
        big = tarfile.TarInfo("weights.bin")
        big.size = 1 << 30

        class Zeros:
            left = 1 << 30

            def read(self, n=-1):
                n = min(self.left, 1 << 20 if n is None or n < 0 else n)
                self.left -= n
                return bytes(n)

        tar.addfile(big, Zeros())
    assert tgz.stat().st_size < 20 << 20
    outside = tmp_path / "tmp"
    outside.mkdir()
    started = time.monotonic()
    server = launch(mlp_model_dir.model_dir, {"SAGEMAKER_SUBMIT_DIRECTORY": str(tgz), "TMPDIR": str(outside)})
    try:
        code = server.process.wait(120)
    finally:
        server.stop()
    logs = server.logs()
    assert code == 1, logs[-2000:]
    line = next(line for line in logs.splitlines() if "startup failed:" in line)
    assert (f"more than the {MAX_CODE_ARCHIVE_BYTES >> 20} MiB allowed (member 'weights.bin', 1024 MiB" in line
            and "the limit on what a code archive may unpack to" in line), line
    assert list(outside.iterdir()) == []          # nothing unpacked, nothing left
    print(f"1 GiB member refused after {time.monotonic() - started:.1f} s")
