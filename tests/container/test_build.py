"""./build.sh: its refusals (before any work), the layers a serve/ change rebuilds, and the
multi-arch push to a registry.

The push goes to a local registry (Debian's docker-registry on 127.0.0.1, stand-in for ECR);
the per-platform builds reuse the layer cache of the session's image builds, so they measure
the warm build time. The ECR path is exercised against moto up to the docker login, which the
(fake) ECR host must refuse with a clear message.
"""
from __future__ import annotations

import json
import os
import platform as host_platform
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.fixtures.docker import IMAGE_REPO, IMAGE_TAG, MEASUREMENTS, REPO, base_image, docker, run_build_sh

# The first test to need an image builds it (arm64 under qemu: up to ~30 min cold).
pytestmark = [pytest.mark.container, pytest.mark.timeout(3600)]

NATIVE = "arm64" if host_platform.machine() in ("aarch64", "arm64") else "amd64"
FOREIGN = "amd64" if NATIVE == "arm64" else "arm64"


def shim_docker(tmp_path: Path, script: str) -> dict[str, str]:
    """A PATH whose `docker` runs SCRIPT (bash) before falling through to the real docker."""
    real = shutil.which("docker")
    shim = tmp_path / "bin" / "docker"
    shim.parent.mkdir()
    shim.write_text(f"#!/usr/bin/env bash\nREAL={real}\n{script}\nexec \"$REAL\" \"$@\"\n")
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{shim.parent}:{os.environ['PATH']}"}


def refused(*args: str, env: dict[str, str] | None = None, name: str) -> str:
    proc, seconds, log = run_build_sh(*args, log_name=f"refusal-{name}", env=env, timeout=120)
    out = log.read_text()
    assert proc.returncode != 0, f"build.sh {args} should have failed:\n{out}"
    assert "build.sh: error:" in out
    assert "building" not in out and "#1 " not in out, f"work started before the error:\n{out}"
    assert seconds < 60
    return out


def test_no_docker_engine(docker_engine, tmp_path):
    out = refused("--load", env={"DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"}, name="engine")
    assert "no Docker engine answers" in out


def test_no_buildx(docker_engine, tmp_path):
    env = shim_docker(tmp_path, '[ "${1:-}" = buildx ] && { echo "docker: unknown command: docker buildx" >&2; exit 1; }')
    out = refused("--load", env=env, name="buildx")
    assert "buildx plugin is missing" in out


def test_no_emulation_for_a_foreign_platform(docker_engine, tmp_path):
    # The builder as it looks before qemu is registered: only the native platform.
    env = shim_docker(tmp_path, (
        'if [ "${1:-}" = buildx ] && [ "${2:-}" = inspect ]; then\n'
        f'  "$REAL" "$@" | sed -E "s#^(Platforms:).*#\\1 linux/{NATIVE}#"; exit ${{PIPESTATUS[0]}}\n'
        'fi'))
    out = refused("--platform", f"linux/{FOREIGN}", "--load", env=env, name="binfmt")
    assert f"cannot run linux/{FOREIGN}" in out
    assert f"tonistiigi/binfmt --install {FOREIGN}" in out
    assert "update-binfmts --enable qemu-" in out


def test_argument_errors(docker_engine):
    out = refused("--platform", "linux/arm64,linux/amd64", "--load", name="multiload")
    assert "--load takes one platform" in out
    out = refused("--platform", "linux/s390x", name="platform")
    assert "unsupported platform" in out
    out = refused("--ecr", "not-a-registry.example.com", name="ecrname")
    assert "is not an ECR registry" in out


@pytest.mark.deploy
def test_ecr_creates_the_repository_then_reports_a_refused_login(docker_engine, aws_env):
    import boto3

    registry = f"{aws_env['account']}.dkr.ecr.{aws_env['region']}.amazonaws.com"
    out = refused("--platform", f"linux/{NATIVE}", "--tag", "sm-tf-ecr-test:1", "--ecr", registry,
                  name="ecrlogin")
    assert f"the registry {registry} refused the login" in out
    assert "testing-secret-not-real" not in out
    token = boto3.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    assert token not in out, "the ECR token must never be printed"
    repos = boto3.client("ecr").describe_repositories()["repositories"]
    assert "sm-tf-ecr-test" in [r["repositoryName"] for r in repos]


@pytest.fixture(scope="module")
def pushed(image_amd64, image_arm64, local_registry) -> dict:
    """./build.sh --platform linux/arm64,linux/amd64 --push to the local registry (warm cache)."""
    ref = f"{local_registry}/{IMAGE_REPO}:{IMAGE_TAG}"
    proc, seconds, log = run_build_sh("--platform", "linux/arm64,linux/amd64", "--tag", ref, "--push",
                                      log_name="push")
    out = log.read_text(errors="replace")
    assert proc.returncode == 0, f"push failed; log {log}:\n{out[-6000:]}"
    MEASUREMENTS["push"] = {"seconds": round(seconds, 1),
                            "per_platform_build_s": re.findall(r"built \S+ for (\S+) in (\d+) s", out)}
    digests = dict(re.findall(r"^(linux/(?:arm64|amd64)): (sha256:[0-9a-f]{64})$", out, re.M))
    return {"ref": ref, "out": out, "digests": digests}


def test_push_publishes_one_manifest_list_for_both_platforms(pushed, local_registry):
    assert f"image: {pushed['ref']}" in pushed["out"]
    assert set(pushed["digests"]) == {"linux/arm64", "linux/amd64"}
    raw = json.loads(docker("buildx", "imagetools", "inspect", "--raw", pushed["ref"]).stdout)
    assert raw["mediaType"] in ("application/vnd.docker.distribution.manifest.list.v2+json",
                                "application/vnd.oci.image.index.v1+json")
    listed = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in raw["manifests"]
              if m["platform"]["os"] != "unknown"}
    assert listed == pushed["digests"]
    # The per-platform tags it was joined from are there too (docker driver: one build each).
    for arch in ("arm64", "amd64"):
        assert docker("buildx", "imagetools", "inspect", f"{pushed['ref']}-{arch}", check=False).returncode == 0
    catalog = requests.get(f"http://{local_registry}/v2/_catalog", timeout=10).json()
    assert IMAGE_REPO in catalog["repositories"]


@pytest.mark.arm64
def test_arm64_image_pulled_by_digest_serves(pushed, image_arm64, arm64_mlp_container, mlp_model_dir):
    """What a user pulls by digest is, by its content-addressed ID (config, hence every layer), the
    image built and tested in this session; the shared arm64 container runs that image and must
    answer (one start under qemu instead of two)."""
    ref = f"{pushed['ref'].rsplit(':', 1)[0]}@{pushed['digests']['linux/arm64']}"
    docker("pull", ref, timeout=600)
    meta = json.loads(docker("image", "inspect", ref).stdout)[0]
    assert meta["Architecture"] == "arm64"
    built = json.loads(docker("image", "inspect", image_arm64).stdout)[0]
    assert meta["Id"] == built["Id"], f"{ref} is {meta['Id']}, not the session's {image_arm64} ({built['Id']})"
    c = arm64_mlp_container
    assert c.image == image_arm64 and c.platform == "linux/arm64" and c.alive()
    assert requests.get(f"{c.url}/ping", timeout=5).status_code == 200
    sample = mlp_model_dir.inputs["features"]
    r = requests.post(f"{c.url}/invocations", json={"instances": sample.tolist()}, timeout=60)
    assert r.status_code == 200, r.text
    # bf16 fast math is in effect under qemu (its arm64 CPU reports bf16): compare loosely (as tests/fixtures/targets.py does).
    np.testing.assert_allclose(r.json()["predictions"], mlp_model_dir.expected["output_0"],
                               rtol=1e-3, atol=2e-3)


# What build.sh and the Dockerfiles read (.dockerignore lets in only the installed parts).
BUILD_INPUTS = ("build.sh", "Dockerfile", "Dockerfile.x86", ".dockerignore", "pyproject.toml", "README.md",
                "container", "serve", "deploy/model_archive")
# Issue 27: after a change to serve/, the arm64 image (under qemu) rebuilds in under 2 minutes.
SERVE_CHANGE_REBUILD_S = 120


def layers(image: str) -> list[str]:
    return json.loads(docker("image", "inspect", "-f", "{{json .RootFS.Layers}}", image).stdout)


@pytest.mark.parametrize("arch", ["amd64", pytest.param("arm64", marks=pytest.mark.arm64)])
def test_a_serve_change_rebuilds_only_the_last_layer(arch, request, tmp_path):
    """A copy of the build context with one serve/ module edited: every layer but the project's
    (the last) is reused from the session's image, byte for byte, and the rebuild is quick."""
    image = request.getfixturevalue(f"image_{arch}")
    context = tmp_path / "context"
    for name in BUILD_INPUTS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, context / name)
    with open(context / "serve" / "__init__.py", "a") as module:
        module.write(f"# edited by {request.node.name}\n")
    tag = f"{IMAGE_REPO}:{IMAGE_TAG}-{arch}-serve-change"
    env = {**os.environ, "BUILD_PROGRESS": "plain"}
    base = base_image()
    if base:
        env["BASE_IMAGE"] = base
    log = tmp_path / "build.log"
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.run([str(context / "build.sh"), "--platform", f"linux/{arch}", "--tag", tag, "--load"],
                              cwd=context, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=1800)
    seconds = time.monotonic() - start
    try:
        text = log.read_text(errors="replace")
        assert proc.returncode == 0, f"rebuild failed:\n{text[-6000:]}"
        before, after = layers(image), layers(tag)
        MEASUREMENTS.setdefault("serve_change", {})[f"linux/{arch}"] = {
            "seconds": round(seconds, 1), "layers": len(after),
            "rebuilt": sum(a != b for a, b in zip(before, after)) + abs(len(after) - len(before))}
        assert len(after) == len(before), f"{len(before)} layers before, {len(after)} after"
        assert after[:-1] == before[:-1], "a serve/ change rebuilt more than the project's layer"
        assert after[-1] != before[-1], "the project's layer did not change: is serve/ in the last layer?"
        probe = docker("run", "--rm", "--platform", f"linux/{arch}", tag, "python", "-c",
                       "import serve, inspect; print(inspect.getsource(serve).splitlines()[-1])", timeout=300)
        assert probe.stdout.strip() == f"# edited by {request.node.name}"
        assert seconds < SERVE_CHANGE_REBUILD_S, f"rebuild after a serve/ change took {seconds:.0f} s"
    finally:
        docker("rmi", "-f", tag, check=False)
