"""deploy/model_archive/archives.py: every archive the project unpacks refuses members that leave the folder.

Each crafted archive goes through the three real ways in: model_archive.archives.safe_extract itself,
the `serve` command with SAGEMAKER_SUBMIT_DIRECTORY naming it, and `deploy local --model-data`.
"""
from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from model_archive import archives
from model_archive.archives import UnreadableArchive, UnsafeArchive

DEPLOY = str(Path(sys.executable).with_name("deploy"))
VICTIM = b"untouched\n"


def member(name: str, type_: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    return info


@dataclass(frozen=True)
class Case:
    """A bad archive. OUTSIDE is the folder holding the destination, DEPTH how far below it the
    destination sits; a successful escape writes OUTSIDE/evil.py or overwrites OUTSIDE/victim.txt."""
    members: Callable[[Path, int], list[tuple[tarfile.TarInfo, bytes | None]]]
    message: Callable[[Path, int], str]     # what follows "unsafe archive member "
    lexical: bool = True                    # caught before anything is written

    def craft(self, path: Path, outside: Path, depth: int = 1) -> Path:
        """Write the archive (a harmless 1/saved_model.pb first, then the bad members) and a victim file."""
        outside.mkdir(parents=True, exist_ok=True)
        (outside / "victim.txt").write_bytes(VICTIM)
        with tarfile.open(path, "w:gz") as tar:
            ok = tarfile.TarInfo("1/saved_model.pb")
            ok.size = 2
            tar.addfile(ok, io.BytesIO(b"pb"))
            for info, data in self.members(outside, depth):
                if data is not None:
                    info.size = len(data)
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return path


def up(depth: int) -> str:
    return "/".join([".."] * depth)


CASES = {
    "absolute": Case(lambda out, d: [(member(f"{out}/evil.py"), b"x")],
                     lambda out, d: f"'{out}/evil.py': absolute path"),
    "dotdot": Case(lambda out, d: [(member(f"1/{up(d + 1)}/evil.py"), b"x")],
                   lambda out, d: f"'1/{up(d + 1)}/evil.py': path contains '..'"),
    "symlink-out": Case(lambda out, d: [(member("code/lib", tarfile.SYMTYPE, up(d + 1)), None),
                                        (member("code/lib/evil.py"), b"x")],
                        lambda out, d: f"'code/lib': symlink to '{up(d + 1)}' points outside the folder"),
    "symlink-absolute": Case(lambda out, d: [(member("code/lib", tarfile.SYMTYPE, str(out)), None),
                                             (member("code/lib/evil.py"), b"x")],
                             lambda out, d: f"'code/lib': symlink to absolute path '{out}'"),
    "hardlink-out": Case(lambda out, d: [(member("1/passwd", tarfile.LNKTYPE, f"{up(d)}/victim.txt"), None),
                                         (member("1/passwd"), b"overwritten\n")],
                         lambda out, d: f"'1/passwd': hard link to '{up(d)}/victim.txt' points outside the folder"),
    "char-device": Case(lambda out, d: [(member("1/null", tarfile.CHRTYPE), None)],
                        lambda out, d: "'1/null': device file"),
    "block-device": Case(lambda out, d: [(member("1/sda", tarfile.BLKTYPE), None)],
                         lambda out, d: "'1/sda': device file"),
    "fifo": Case(lambda out, d: [(member("1/pipe", tarfile.FIFOTYPE), None)],
                 lambda out, d: "'1/pipe': FIFO"),
    # Each link looks harmless on its own ("up" -> "sub/.." is "." lexically), but "sub" is a link
    # to "." so "up" really points at the parent. The stdlib 'data' filter resolves real paths and
    # is the second line behind the lexical checks; the error still names the member.
    "link-chain": Case(lambda out, d: [(member("sub", tarfile.SYMTYPE, "."), None),
                                       (member("up", tarfile.SYMTYPE, "sub/.."), None),
                                       (member("up/evil.py"), b"x")],
                       lambda out, d: "'up': ", lexical=False),
}


def assert_nothing_escaped(outside: Path) -> None:
    assert not (outside / "evil.py").exists()
    assert (outside / "victim.txt").read_bytes() == VICTIM


# --- (a) model_archive.archives.safe_extract ------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_safe_extract_refuses_and_names_the_bad_member(tmp_path, case):
    bad = CASES[case]
    outside = tmp_path / "outside"
    tgz = bad.craft(tmp_path / f"{case}.tar.gz", outside)
    dest = outside / "dest"
    with pytest.raises(UnsafeArchive) as exc:
        archives.safe_extract(tgz, dest)
    assert str(exc.value).startswith("unsafe archive member " + bad.message(outside, 1))
    assert_nothing_escaped(outside)
    if bad.lexical:      # checked before anything is written
        assert list(dest.iterdir()) == []


def test_safe_extract_allows_links_that_stay_inside(tmp_path):
    ok = Case(lambda out, d: [(member("1/variables", tarfile.DIRTYPE), None),
                              (member("latest", tarfile.SYMTYPE, "1"), None),
                              (member("code/lib", tarfile.SYMTYPE, "../1"), None),
                              (member("1/copy.pb", tarfile.LNKTYPE, "1/saved_model.pb"), None)],
              lambda out, d: "")
    tgz = ok.craft(tmp_path / "ok.tar.gz", tmp_path)
    dest = tmp_path / "dest"
    names = archives.safe_extract(tgz, dest)
    assert names == ["1/saved_model.pb", "1/variables", "latest", "code/lib", "1/copy.pb"]
    assert (dest / "latest" / "saved_model.pb").read_bytes() == b"pb"
    assert (dest / "code" / "lib" / "saved_model.pb").read_bytes() == b"pb"
    assert (dest / "1" / "copy.pb").read_bytes() == b"pb"


def test_safe_extract_makes_the_folder_readable_by_any_user(tmp_path):
    tgz = tmp_path / "private.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        d = member("1", tarfile.DIRTYPE)
        d.mode = 0o700
        tar.addfile(d)
        f = member("1/saved_model.pb")
        f.mode, f.size = 0o600, 2
        tar.addfile(f, io.BytesIO(b"pb"))
    dest = tmp_path / "dest"
    archives.safe_extract(tgz, dest)
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(dest / "1").st_mode) & 0o555 == 0o555
    assert stat.S_IMODE(os.stat(dest / "1" / "saved_model.pb").st_mode) & 0o444 == 0o444


def test_without_the_data_filter_any_dotdot_link_is_refused(tmp_path, monkeypatch):
    """Pythons before 3.10.12 / 3.11.4 have no 'data' filter to resolve link chains."""
    monkeypatch.delattr(tarfile, "data_filter")
    outside = tmp_path / "outside"
    tgz = CASES["link-chain"].craft(tmp_path / "chain.tar.gz", outside)
    with pytest.raises(UnsafeArchive, match=r"^unsafe archive member 'up': link target 'sub/\.\.' contains '\.\.' "
                                             r"\(this Python has no tarfile 'data' filter\)"):
        archives.safe_extract(tgz, outside / "dest")
    assert_nothing_escaped(outside)


def test_not_a_tarball(tmp_path):
    junk = tmp_path / "model.tar.gz"
    junk.write_bytes(b"this is not gzip")
    with pytest.raises(UnreadableArchive, match="not a readable tar archive"):
        archives.safe_extract(junk, tmp_path / "dest")
    assert issubclass(UnsafeArchive, ValueError) and issubclass(UnreadableArchive, ValueError)


# --- (c) deploy local --model-data --------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_deploy_local_refuses_an_unsafe_archive(tmp_path, case):
    """Refused while preparing the model folder, before Docker is asked anything."""
    bad = CASES[case]
    outside = tmp_path / "tmp"      # TMPDIR: deploy local unpacks into TMPDIR/deploy-local-*/model
    tgz = bad.craft(tmp_path / f"{case}.tar.gz", outside, depth=2)
    proc = subprocess.run([DEPLOY, "local", "--image", "never-pulled:latest", "--model-data", str(tgz)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "TMPDIR": str(outside)})
    assert proc.returncode == 1, proc.stderr
    assert "unsafe archive member " + bad.message(outside, 2) in proc.stderr
    assert "Docker" not in proc.stderr and "pulling" not in proc.stdout
    assert_nothing_escaped(outside)
