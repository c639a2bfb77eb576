"""The two distributions ship every package they are made of (an explicit list in each
pyproject.toml, because the server's includes model_archive from deploy/)."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def packages_under(base: Path, top: str) -> set[str]:
    return {".".join(p.parent.relative_to(base).parts) for p in (base / top).rglob("__init__.py")
            if "__pycache__" not in p.parts}


def test_the_server_distribution_lists_every_serve_package_and_model_archive():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == packages_under(ROOT, "serve") | {"model_archive"}


def test_the_deploy_distribution_lists_its_packages_and_no_server_code():
    listed = set(tomllib.loads((ROOT / "deploy" / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == packages_under(ROOT / "deploy", "sagemaker_tf_deploy") | {"model_archive"}
