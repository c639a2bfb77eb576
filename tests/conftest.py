"""Shared fixtures live in tests/fixtures/, one module per thing they start or build."""
import importlib.util

_PLUGINS = ["models", "server", "targets", "docker", "moto"]
pytest_plugins = [f"tests.fixtures.{name}" for name in _PLUGINS
                  if importlib.util.find_spec(f"tests.fixtures.{name}") is not None]
