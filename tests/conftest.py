"""Shared fixtures live in tests/fixtures/, one module per thing they start or build."""
import pytest

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.tfs_models",
    "tests.fixtures.server",
    "tests.fixtures.targets",
    "tests.fixtures.docker",
    "tests.fixtures.strict_aws",
    "tests.fixtures.moto",
    "tests.fixtures.moto_transform",
    "tests.fixtures.moto_migrate",
    "tests.fixtures.moto_mme",
    "tests.fixtures.moto_async",
    "tests.fixtures.report",
    "tests.fixtures.example",
]

# What needs the arm64 image, besides the tests marked arm64 (e.g. the multi-arch push).
ARM64_IMAGE_FIXTURES = {"image_arm64", "arm64_mlp_container"}
IMAGE_FIXTURES = ARM64_IMAGE_FIXTURES | {"image_amd64"}


def needs_arm64_image(item) -> bool:
    return item.get_closest_marker("arm64") is not None or bool(
        ARM64_IMAGE_FIXTURES & set(getattr(item, "fixturenames", ())))


def needs_an_image(item) -> bool:
    return item.get_closest_marker("container") is not None or bool(
        IMAGE_FIXTURES & set(getattr(item, "fixturenames", ())))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Run order, so that the images build while other tests run: first the modules in which no
    test needs an image, then the other modules, then every test that needs the arm64 image.
    A cold amd64 image build takes 7-14 min on 2 cores, a cold arm64 one about half an hour (mostly
    Debian's python3 installed under qemu); .ci/run starts both in the background at once, and a
    test waits for its image only when it gets there (tests/fixtures/docker.py). Modules move whole
    (their module fixtures stay set up once); arm64 tests move one by one (their module fixtures
    are only theirs: test_build's pushed, test_kernels' per-CPU logs, test_deploy_compare's
    digits_model). Order within each group is the collected one. Nothing is deselected."""
    with_images = {getattr(item, "module", None) for item in items if needs_an_image(item)}

    def group(item) -> int:
        if needs_arm64_image(item):
            return 2
        return 1 if getattr(item, "module", None) in with_images else 0

    items[:] = sorted(items, key=group)    # stable
