"""pytest plugin: make TensorFlow (and Keras) unimportable for the whole run.

`make test-unit` loads it (`-p tests.unit.without_tensorflow`) so that the unit tests prove what
they claim: the codecs, batching, settings, tuning, layout, archives, the HTTP app and the deploy
command work in a process where `import tensorflow` fails.
"""
from __future__ import annotations

import importlib.abc
import sys

BLOCKED = ("tensorflow", "keras", "tf_keras", "tensorboard")


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED:
            raise ImportError(f"{fullname} is blocked in the unit tests (tests/unit/without_tensorflow.py)")
        return None


if any(name.split(".")[0] in BLOCKED for name in sys.modules):
    raise RuntimeError("TensorFlow was imported before tests.unit.without_tensorflow could block it")
sys.meta_path.insert(0, _NoTensorFlow())
