"""Models without TensorFlow for the unit tests: serve.model_process.model.Model objects whose signatures are
NumPy functions, with the names, shapes and dtypes the real test models have (tests/fixtures/models.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from model_archive.layout import ModelLocation
from serve.contract.errors import BadRequest
from serve.contract.signature import Model, Repository, Signature, TensorInfo

F32 = np.dtype(np.float32)


def _signature(name: str, inputs: dict[str, tuple], outputs: dict[str, tuple], fn, method: str = "predict") -> Signature:
    return Signature(name, {n: TensorInfo(n, s, F32) for n, s in inputs.items()},
                     {n: TensorInfo(n, s, F32) for n, s in outputs.items()}, fn, method)


def _checked(feed):
    if not np.isfinite(feed["x"]).all():
        raise BadRequest("the model refused the input of signature 'checked': x holds NaN or Inf")
    return {"s": feed["x"].sum(axis=1)}


def multi_io(path: Path = Path("/nonexistent/pair/3")) -> Model:
    """multi_io_model_dir's signatures: serving_default (a, b -> total, scaled), sum_only, checked, any_width."""
    scale = np.array([2.0, -1.0], np.float32)
    signatures = {
        "serving_default": _signature("serving_default", {"a": (None, 2), "b": (None, 3)},
                                      {"total": (None,), "scaled": (None, 2)},
                                      lambda f: {"total": f["a"].sum(1) + f["b"].sum(1), "scaled": f["a"] * scale}),
        "sum_only": _signature("sum_only", {"x": (None, 3)}, {"s": (None,)}, lambda f: {"s": f["x"].sum(axis=1)}),
        "checked": _signature("checked", {"x": (None, 3)}, {"s": (None,)}, _checked),
        "any_width": _signature("any_width", {"x": (None, None)}, {"s": (None,)}, lambda f: {"s": f["x"].sum(axis=1)}),
    }
    return Model(ModelLocation(path, "savedmodel", "pair", "3"), signatures, keep_alive=None)


def affine(name: str = "stub", version: str | None = "1") -> Model:
    """One signature, 'x' float32 (None, 3) -> 'y' float32 (None, 3) = 2x + 1."""
    sig = _signature("serving_default", {"x": (None, 3)}, {"y": (None, 3)}, lambda f: {"y": 2 * f["x"] + 1})
    return Model(ModelLocation(Path(f"/nonexistent/{name}"), "savedmodel", name, version),
                 {"serving_default": sig}, keep_alive=None)


def repository(*models: Model) -> Repository[Model]:
    entries: dict = {}
    for m in models:
        entries.setdefault(m.name, {})[m.version] = m
    return Repository(entries, models[0].name)
