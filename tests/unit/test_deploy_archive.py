"""`deploy package`, and the safe unpacking used by `create` and `local` (cases: tests/unit/test_archives.py)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from sagemaker_tf_deploy.core import archive
from sagemaker_tf_deploy.core.errors import DeployError
from tests.unit.test_archives import CASES

DEPLOY = str(Path(sys.executable).with_name("deploy"))


def deploy(*args, cwd=None):
    return subprocess.run([DEPLOY, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def savedmodel(path: Path) -> Path:
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"pb")
    (path / "variables" / "variables.index").write_bytes(b"idx")
    return path


def names(tgz: Path) -> list[str]:
    with tarfile.open(tgz) as tar:
        return sorted(tar.getnames())


# --- package -----------------------------------------------------------------------------------

def test_package_puts_a_root_savedmodel_under_a_version_and_adds_code(tmp_path):
    model = savedmodel(tmp_path / "export")
    code = tmp_path / "mycode"
    (code / "lib").mkdir(parents=True)
    (code / "inference.py").write_text("def handler(data, context):\n    return data\n")
    (code / "requirements.txt").write_text("pillow==12.0.0\n")
    (code / "__pycache__").mkdir()
    (code / "__pycache__" / "x.pyc").write_bytes(b"junk")
    out = tmp_path / "model.tar.gz"
    proc = deploy("package", str(model), "--code", str(code), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    assert names(out) == ["1", "1/saved_model.pb", "1/variables", "1/variables/variables.index",
                          "code", "code/inference.py", "code/lib", "code/requirements.txt"]
    with tarfile.open(out) as tar:
        for m in tar.getmembers():
            assert (m.uid, m.gid, m.uname) == (0, 0, "")
    assert archive.has_user_code(out)


def test_package_keeps_tf_serving_layouts_and_keras_files(tmp_path):
    versioned = tmp_path / "versioned"
    savedmodel(versioned / "1")
    savedmodel(versioned / "2")
    (versioned / "code").mkdir()
    (versioned / "code" / "inference.py").write_text("")
    out = tmp_path / "v.tar.gz"
    assert deploy("package", str(versioned), "-o", str(out)).returncode == 0
    assert {n.split("/")[0] for n in names(out)} == {"1", "2", "code"}

    named = tmp_path / "named"
    savedmodel(named / "digits" / "7")
    assert deploy("package", str(named), "-o", str(out)).returncode == 0
    assert "digits/7/saved_model.pb" in names(out)
    assert not archive.has_user_code(out)

    keras = tmp_path / "keras"
    keras.mkdir()
    (keras / "model.keras").write_bytes(b"zip")
    assert deploy("package", str(keras), "-o", str(out)).returncode == 0
    assert names(out) == ["model.keras"]


def test_package_refuses_a_folder_without_a_model(tmp_path):
    empty = tmp_path / "nothing"
    (empty / "1").mkdir(parents=True)
    (empty / "notes.txt").write_text("hi")
    proc = deploy("package", str(empty), "-o", str(tmp_path / "m.tar.gz"))
    assert proc.returncode == 2         # a local input refused: usage
    assert "no loadable model" in proc.stderr
    assert not (tmp_path / "m.tar.gz").exists()


def test_package_roundtrips_through_safe_extract(tmp_path):
    out = tmp_path / "m.tar.gz"
    archive.package(savedmodel(tmp_path / "sm"), out)
    dest = tmp_path / "unpacked"
    archive.safe_extract(out, dest)
    assert archive.find_model(dest).version == "1"
    assert (dest / "1" / "saved_model.pb").read_bytes() == b"pb"


# --- safe unpacking: model_archive.archives (tests/unit/test_archives.py) with deploy's error type ---------------

def test_safe_extract_reports_bad_archives_as_deploy_errors(tmp_path):
    tgz = CASES["symlink-out"].craft(tmp_path / "evil.tar.gz", tmp_path)
    with pytest.raises(DeployError) as exc:
        archive.safe_extract(tgz, tmp_path / "dest")
    assert str(exc.value) == "unsafe archive member 'code/lib': symlink to '../..' points outside the folder"
    with pytest.raises(DeployError) as exc:
        archive.check_member(tarfile.TarInfo("/etc/passwd"))
    assert str(exc.value) == "unsafe archive member '/etc/passwd': absolute path"
    junk = tmp_path / "model.tar.gz"
    junk.write_bytes(b"this is not gzip")
    with pytest.raises(DeployError, match=f"^{junk} is not a readable tar archive: "):
        archive.safe_extract(junk, tmp_path / "dest")


@pytest.mark.deploy
def test_create_refuses_a_malicious_archive_before_uploading(tmp_path, aws_env, ecr_images, capsys, aws_calls):
    import boto3

    from sagemaker_tf_deploy.commands.main import main

    tgz = CASES["dotdot"].craft(tmp_path / "evil.tar.gz", tmp_path)
    code = main(["create", "--image", ecr_images["multi"], "--model-data", str(tgz), "--role", aws_env["role"]])
    err = capsys.readouterr().err
    assert code == 2 and f"model data {tgz}: unsafe archive member" in err and "path contains '..'" in err
    assert aws_calls == []      # refused before any call, the ECR architecture check included
    assert boto3.client("sagemaker").list_models()["Models"] == []
    assert boto3.client("s3").list_buckets()["Buckets"] == []
