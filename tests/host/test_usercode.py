"""serve/usercode/source.py: unpacking SAGEMAKER_SUBMIT_DIRECTORY safely, and leaving the model folder as it was."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
import requests

from serve import usercode
from serve.usercode import CodeLocation, UserCodeSetupError, import_script
from tests.fixtures.server import start_host_server
from tests.unit.test_archives import CASES


@pytest.fixture
def private_tmpdir(tmp_path, monkeypatch) -> Path:
    """tempfile.gettempdir() for this test only, so what _extract leaves behind can be seen."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def test_unsafe_submit_directory_is_a_setup_error_naming_the_member(tmp_path, private_tmpdir):
    tgz = CASES["dotdot"].craft(tmp_path / "sourcedir.tar.gz", private_tmpdir)
    with pytest.raises(UserCodeSetupError) as exc:
        usercode.source._extract(tgz)
    assert str(exc.value) == (f"cannot unpack SAGEMAKER_SUBMIT_DIRECTORY {tgz}: "
                              "unsafe archive member '1/../../evil.py': path contains '..'")
    assert sorted(p.name for p in private_tmpdir.iterdir()) == ["victim.txt"]   # no staging folder left


def test_submit_directory_unpacks_into_a_new_private_folder(tmp_path, private_tmpdir):
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    (src / "inference.py").write_text("def input_fn(body, content_type):\n    return body\n")
    (src / "lib" / "helper.py").write_text("X = 1\n")
    tgz = tmp_path / "sourcedir.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(src, arcname=".")
    target = usercode.source._extract(tgz)
    assert target.parent == private_tmpdir
    assert (target / "inference.py").read_text() == (src / "inference.py").read_text()
    assert (target / "lib" / "helper.py").is_file()
    assert not stat.S_IMODE(target.stat().st_mode) & 0o022      # nobody else may write into it
    # a folder planted where a digest-named cache would be is never used: every unpack is new
    again = usercode.source._extract(tgz)
    assert again != target and again.parent == private_tmpdir


def test_submit_directory_unpack_has_a_size_cap(tmp_path, private_tmpdir, monkeypatch):
    monkeypatch.setattr(usercode.source, "MAX_CODE_ARCHIVE_BYTES", 1 << 20)
    src = tmp_path / "src"
    src.mkdir()
    (src / "inference.py").write_text("def input_fn(body, content_type):\n    return body\n")
    (src / "weights.bin").write_bytes(b"\0" * (2 << 20))   # compresses to almost nothing
    tgz = tmp_path / "sourcedir.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(src, arcname=".")
    assert tgz.stat().st_size < 100_000
    with pytest.raises(usercode.UserCodeSetupError) as err:
        usercode.source._extract(tgz)
    assert "unpacks to more than the 1 MiB allowed (member './weights.bin', 2 MiB" in str(err.value)
    assert list(private_tmpdir.iterdir()) == []              # nothing left behind


@pytest.mark.parametrize("before", [False, True])
def test_import_script_writes_no_bytecode(tmp_path, monkeypatch, before):
    code = tmp_path / "code"
    (code / "lib").mkdir(parents=True)
    (code / "inference.py").write_text("import smtest_helper_mod\nVALUE = smtest_helper_mod.X + 1\n")
    (code / "lib" / "smtest_helper_mod.py").write_text("X = 41\n")
    monkeypatch.setattr(sys, "dont_write_bytecode", before)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        module = import_script(CodeLocation(code, "inference.py"))
    finally:
        for name in ("inference", "smtest_helper_mod"):
            sys.modules.pop(name, None)
    assert module.VALUE == 42
    assert sys.dont_write_bytecode is before                 # restored afterwards
    written = [str(p.relative_to(code)) for p in code.rglob("*")]
    assert sorted(written) == ["inference.py", "lib", "lib/smtest_helper_mod.py"]


# --- the model folder is only read --------------------------------------------------------------

SCRIPT = """
import json

import numpy as np

from scaling import SCALE  # from code/lib


def input_fn(body, content_type):
    return np.asarray(json.loads(body)["instances"], dtype=np.float32) * SCALE
"""


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under ROOT: type, size, mtime_ns, mode and (files) sha256."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
            entries[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns,
                                                     stat.S_IMODE(st.st_mode), digest)
    st = root.lstat()
    entries["."] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode), None)
    return entries


def test_serving_leaves_the_model_folder_untouched(mlp_model_dir, tmp_path):
    model_dir = mlp_model_dir.with_code(tmp_path / "model", SCRIPT, requirements="numpy\n",
                                        lib={"scaling.py": "SCALE = 1.0\n"})
    before = snapshot(model_dir)
    assert "code/inference.py" in before and "code/lib/scaling.py" in before
    x, expected = mlp_model_dir.inputs["features"], mlp_model_dir.expected["output_0"]
    # the image sets PYTHONDONTWRITEBYTECODE=1 and so may this shell; the server must not rely on it
    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "PYTHONDONTWRITEBYTECODE": ""}   # empty means unset
    with start_host_server(model_dir, env) as server:
        for _ in range(4):
            r = requests.post(f"{server.url}/invocations", data=json.dumps({"instances": x.tolist()}),
                              headers={"Content-Type": "application/json"}, timeout=60)
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(r.json()["predictions"], expected, rtol=1e-5, atol=1e-6)
        logs = server.logs()
    # the code really was set up and used (requirements.txt is skipped: code/lib exists, as AWS's container does)
    assert "not installing" in logs and "code/inference.py" in logs
    after = snapshot(model_dir)
    assert sorted(set(after) - set(before)) == []                   # nothing new, e.g. __pycache__
    assert sorted(set(before) - set(after)) == []
    assert {k: v for k, v in after.items() if before[k] != v} == {}
