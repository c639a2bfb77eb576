"""The docs match the code: docs/configuration.md is what docs/generate_configuration.py writes from
serve/contract/settings.py, every setting is in it, and every relative link in README.md and docs/*.md
points at a file (and heading) that exists."""
from __future__ import annotations

import fnmatch
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])


def _generator():
    spec = importlib.util.spec_from_file_location("generate_configuration", REPO / "docs" / "generate_configuration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_md_is_generated_from_the_settings():
    expected = _generator().render()
    actual = (REPO / "docs" / "configuration.md").read_text()
    assert actual == expected, ("docs/configuration.md is stale: regenerate it with `make docs` "
                                "(.venv/bin/python docs/generate_configuration.py) and commit it")


def test_every_setting_is_documented_with_its_variable_and_description():
    from serve.contract.settings import AWS_CONTAINER_ALIASES, Settings, env_name

    text = _generator().render()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `")}
    for field, info in Settings.model_fields.items():
        assert info.description, f"serve/contract/settings.py: field {field} has no description="
        row = next((line for cell, line in rows.items() if cell.startswith(f"`{env_name(field)}`")), None)
        assert row is not None, f"{env_name(field)} missing from docs/configuration.md"
        assert info.description in row
        for alias in AWS_CONTAINER_ALIASES.get(field, ()):
            assert f"`{alias}`" in row


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _links():
    for doc in DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            yield doc, target


@pytest.mark.parametrize("doc, target", list(_links()), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_relative_links_resolve(doc, target):
    file_part, _, anchor = target.partition("#")
    path = (doc.parent / file_part).resolve() if file_part else doc
    assert path.exists(), f"{doc.relative_to(REPO)}: link to {target}: {file_part} does not exist"
    if anchor and path.suffix == ".md":
        assert anchor in _anchors(path), f"{doc.relative_to(REPO)}: link to {target}: no heading #{anchor}"


def test_build_output_is_told_apart():
    assert _ignored("examples/digits/model.tar.gz") and _ignored("examples/digits/model/1/")
    assert _ignored("bench/.venvs/") and _ignored("bench/results/tmp/")
    assert not _ignored("examples/digits/train.py") and not _ignored("serve/http_worker/app.py")


def test_links_are_found():
    """The link check above sees the README's links (a broken regular expression would pass it empty)."""
    readme = [t for d, t in _links() if d.name == "README.md"]
    assert any(t.startswith("docs/") for t in readme)


PATH_IN_TEXT = re.compile(r"`((?:serve|deploy|tests|bench|container|examples|docs|\.ci)/[^`\s]*)`")


def _exists(path: str) -> bool:
    """A module may be a file or a package: `serve/contract/codecs/` and `serve/contract/codecs.py` name the same code."""
    stem = path.rstrip("/").removesuffix(".py")
    return any((REPO / p).exists() for p in (path, stem, stem + ".py"))


def _ignored(path: str) -> bool:
    """Build output the docs may name (examples/digits/model.tar.gz, bench/results/tmp/): what a
    .gitignore of the repository lists, so a clean clone has none of it."""
    for gitignore in (REPO / ".gitignore", REPO / "bench" / ".gitignore"):
        base = gitignore.parent.relative_to(REPO).as_posix()
        rel = path if base == "." else path.removeprefix(base + "/")
        if base != "." and rel == path:
            continue
        for pattern in gitignore.read_text().splitlines():
            pattern = pattern.strip().strip("/")
            if not pattern or pattern.startswith("#"):
                continue
            if "/" in pattern:
                if rel == pattern or rel.startswith(pattern + "/") or rel.startswith(pattern + "."):
                    return True
                if fnmatch.fnmatch(rel.rstrip("/"), pattern):
                    return True
            elif any(fnmatch.fnmatch(part, pattern) for part in rel.rstrip("/").split("/")):
                return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_paths_named_in_the_docs_exist(doc):
    missing = []
    for m in PATH_IN_TEXT.finditer(doc.read_text()):
        path = m.group(1).split("::")[0].rstrip(".,")
        if any(c in path for c in "*{<[") or path.endswith("/tmp"):
            continue
        if not _exists(path) and not _ignored(path):
            missing.append(path)
    assert not missing, f"{doc.relative_to(REPO)} names files that do not exist: {sorted(set(missing))}"


def test_readme_fits_on_a_screen_or_two():
    """Issue 13: a README of at most ~12 KB; the rest belongs in docs/ by topic."""
    size = len((REPO / "README.md").read_bytes())
    assert size <= 12_288, f"README.md is {size} bytes (limit 12,288): move detail into docs/"
