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


def needs_arm64_image(item) -> bool:
    return item.get_closest_marker("arm64") is not None or bool(
        ARM64_IMAGE_FIXTURES & set(getattr(item, "fixturenames", ())))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Every test that needs the arm64 image runs last, in collected order. A cold arm64 image
    build is mostly Debian's python3 installed under qemu (about half an hour on 2 cores): .ci/run
    starts it in the background at once, and the rest of the suite runs meanwhile, before the
    first test waits for it (tests/fixtures/docker.py). Nothing is deselected, only moved."""
    items[:] = [i for i in items if not needs_arm64_image(i)] + [i for i in items if needs_arm64_image(i)]
