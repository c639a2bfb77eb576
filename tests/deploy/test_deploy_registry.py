"""Architectures of an image, read from a real registry (127.0.0.1:5000) and from ECR (moto).

The test images are assembled in the local registry over its HTTP API from the multi-arch base
image that .ci/setup-host.sh pushes (127.0.0.1:5000/debian:trixie-slim and its -arm64 / -amd64
tags): layers are cross-repository mounts, so nothing is built or copied and no Docker engine is
needed. They are the three cases the check must tell apart: arm64 only, amd64 only, multi-arch
(as a Docker manifest list and as an OCI index).
"""

from __future__ import annotations

import hashlib
import json

import pytest
import requests

from sagemaker_tf_deploy.core import registry
from sagemaker_tf_deploy.core.errors import DeployError

BASE_REPO = "debian"
TEST_REPO = "deploy-test/arch"
LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture(scope="session")
def registry_host(request):
    """The container engineer's `local_registry` when it is there; the same address otherwise."""
    try:
        host = request.getfixturevalue("local_registry")
    except pytest.FixtureLookupError:
        host = "127.0.0.1:5000"
    try:
        requests.get(f"http://{host}/v2/", timeout=5).raise_for_status()
    except requests.RequestException:
        pytest.skip(f"no registry at {host} (run .ci/setup-host.sh)")
    return host


def _manifest(host, repo, ref, accept):
    resp = requests.get(f"http://{host}/v2/{repo}/manifests/{ref}", headers={"Accept": accept}, timeout=30)
    if resp.status_code == 404:
        pytest.skip(f"{host}/{repo}:{ref} is missing (run .ci/setup-host.sh)")
    resp.raise_for_status()
    return resp.content, resp.headers["Content-Type"]


def _put_manifest(host, repo, ref, body: bytes, media_type: str) -> str:
    resp = requests.put(f"http://{host}/v2/{repo}/manifests/{ref}", data=body,
                        headers={"Content-Type": media_type}, timeout=30)
    assert resp.status_code == 201, resp.text
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _copy_image(host, src_ref) -> tuple[bytes, str]:
    """Mount the blobs of debian:SRC_REF into TEST_REPO and store its manifest there by digest."""
    body, media_type = _manifest(host, BASE_REPO, src_ref, V2)
    doc = json.loads(body)
    for blob in [doc["config"], *doc["layers"]]:
        resp = requests.post(f"http://{host}/v2/{TEST_REPO}/blobs/uploads/",
                             params={"mount": blob["digest"], "from": BASE_REPO}, timeout=30)
        assert resp.status_code == 201, resp.text
    digest = _put_manifest(host, TEST_REPO, "sha256:" + hashlib.sha256(body).hexdigest(), body, media_type)
    return body, digest


@pytest.fixture(scope="session")
def arch_images(registry_host):
    host = registry_host
    arm_body, arm_digest = _copy_image(host, "trixie-slim-arm64")
    amd_body, amd_digest = _copy_image(host, "trixie-slim-amd64")
    _put_manifest(host, TEST_REPO, "arm64-only", arm_body, V2)
    _put_manifest(host, TEST_REPO, "amd64-only", amd_body, V2)
    entries = [{"mediaType": V2, "digest": d, "size": len(b), "platform": {"architecture": a, "os": "linux"}}
               for a, b, d in (("arm64", arm_body, arm_digest), ("amd64", amd_body, amd_digest))]
    _put_manifest(host, TEST_REPO, "multi", json.dumps(
        {"schemaVersion": 2, "mediaType": LIST, "manifests": entries}).encode(), LIST)
    _put_manifest(host, TEST_REPO, "multi-oci", json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode(), OCI_INDEX)
    return {"arm64": f"{host}/{TEST_REPO}:arm64-only", "amd64": f"{host}/{TEST_REPO}:amd64-only",
            "multi": f"{host}/{TEST_REPO}:multi", "multi-oci": f"{host}/{TEST_REPO}:multi-oci",
            "arm64-digest": f"{host}/{TEST_REPO}@{arm_digest}", "host": host,
            "arm64-manifest": arm_body}


# --- reference parsing (no network) ------------------------------------------------------------

@pytest.mark.parametrize("image,expected", [
    ("127.0.0.1:5000/deploy-test/arch:multi", ("127.0.0.1:5000", "deploy-test/arch", "multi")),
    ("localhost/x", ("localhost", "x", "latest")),
    ("debian:trixie-slim", ("docker.io", "library/debian", "trixie-slim")),
    ("me/app", ("docker.io", "me/app", "latest")),
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-tf-graviton:1.0",
     ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "sagemaker-tf-graviton", "1.0")),
    ("ghcr.io/o/r@sha256:" + "a" * 64, ("ghcr.io", "o/r", "sha256:" + "a" * 64)),
])
def test_parse(image, expected):
    ref = registry.parse(image)
    assert (ref.registry, ref.repository, ref.reference) == expected


def test_ecr_hosts_are_recognised():
    assert registry.parse("123456789012.dkr.ecr.us-east-1.amazonaws.com/a:b").ecr.group("region") == "us-east-1"
    assert registry.parse("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/a:b").ecr
    assert registry.parse("127.0.0.1:5000/a:b").ecr is None


@pytest.mark.parametrize("bad", ["", "a b", "UPPER/case:tag"])
def test_bad_references(bad):
    with pytest.raises(DeployError):
        registry.parse(bad)


def test_attestation_and_unknown_platforms_are_ignored():
    doc = {"manifests": [
        {"platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        {"platform": {"architecture": "unknown", "os": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
        {"platform": {"architecture": "amd64", "os": "windows"}},
    ]}
    assert registry.archs_of_index(doc) == {"arm64"}


# --- the local registry ------------------------------------------------------------------------

@pytest.mark.parametrize("key,expected", [("arm64", {"arm64"}), ("amd64", {"amd64"}),
                                          ("multi", {"arm64", "amd64"}), ("multi-oci", {"arm64", "amd64"}),
                                          ("arm64-digest", {"arm64"})])
def test_architectures_from_the_local_registry(arch_images, key, expected):
    assert registry.image_architectures(arch_images[key]) == expected


def test_base_image_as_setup_host_pushed_it(arch_images):
    assert registry.image_architectures(f"{arch_images['host']}/debian:trixie-slim") == {"arm64", "amd64"}


def test_missing_tag_and_unreachable_registry(arch_images):
    with pytest.raises(DeployError, match="not found in registry"):
        registry.image_architectures(f"{arch_images['host']}/{TEST_REPO}:no-such-tag")
    with pytest.raises(DeployError, match="cannot reach registry 127.0.0.1:9"):
        registry.image_architectures("127.0.0.1:9/nothing:here")


@pytest.mark.deploy
@pytest.mark.parametrize("key", ["arm64", "multi"])
def test_create_refuses_a_non_ecr_image_before_any_call(arch_images, aws_calls, capsys, tmp_path, key):
    """SageMaker pulls only from ECR in the endpoint's region: a local-registry image (which the
    architecture reader could read) is refused from its name alone, before any AWS call."""
    from sagemaker_tf_deploy.commands.main import main
    from tests.fixtures.moto import ROLE

    model = tmp_path / "m" / "1"
    model.mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"pb")
    code = main(["create", "--image", arch_images[key], "--model-data", str(model.parent),
                 "--role", ROLE, "--poll", "0.05"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"in registry {arch_images['host']}, not in Amazon ECR" in err
    assert "--push --ecr ACCOUNT.dkr.ecr.eu-west-1.amazonaws.com" in err
    assert aws_calls == []


@pytest.mark.deploy
def test_ecr_single_manifest_reads_the_config_blob(arch_images, aws_env):
    """ECR path for a one-platform image: batch_get_image returns the manifest, the config blob
    comes from get_download_url_for_layer (moto's fixture points it at the local registry's blob)."""
    import boto3

    from sagemaker_tf_deploy.core.aws import Aws
    from tests.fixtures.moto import ACCOUNT, LAYER_URLS, REGION

    ecr = boto3.client("ecr")
    ecr.create_repository(repositoryName="single")
    ecr.put_image(repositoryName="single", imageManifest=arch_images["arm64-manifest"].decode(),
                  imageTag="v1", imageManifestMediaType=V2)
    config_digest = json.loads(arch_images["arm64-manifest"])["config"]["digest"]
    LAYER_URLS[config_digest] = f"http://{arch_images['host']}/v2/{TEST_REPO}/blobs/{config_digest}"
    image = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/single:v1"
    assert registry.image_architectures(image, Aws()) == {"arm64"}
    with pytest.raises(DeployError, match="not found in ECR"):
        registry.image_architectures(image.replace(":v1", ":v2"), Aws())
