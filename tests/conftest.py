"""Shared fixtures live in tests/fixtures/, one module per thing they start or build."""
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
