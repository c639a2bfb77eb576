"""The three benchmark models, exported as TF Serving-layout SavedModels (<dir>/model/1/).

Each model lives in its own base dir so that every stack can be pointed at it the way it
expects: SAGEMAKER_BASE_DIR=<dir> (this project, sagemaker-inference), MODEL_DIR=<dir>/model/1
(the Flask BYOC peer), a model URI (MLServer), or a bind mount of <dir>/model (the container).
Random weights with a fixed seed: the benchmark measures serving, not accuracy.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_shape: tuple  # one example, without the batch dimension
    description: str
    # ResNet50 is ~4 GFLOP per image: keep its load modest on 2 cores.
    heavy: bool = False

    def example(self, seed: int = 0) -> np.ndarray:
        """One request's example, shape (1, *input_shape), float32."""
        rng = np.random.default_rng(seed)
        if self.heavy:
            # image-like pixel values 0..255 (as a client would send a decoded JPEG): ~0.9 MB of JSON
            return rng.integers(0, 256, size=(1, *self.input_shape)).astype(np.float32)
        return rng.random((1, *self.input_shape), dtype=np.float32)


MODELS = {
    "cifar_cnn": ModelSpec("cifar_cnn", (32, 32, 3), "Keras CIFAR-10 example CNN (1.25 M params)"),
    "mlp": ModelSpec("mlp", (64,), "tabular MLP 64->256->256->1"),
    "resnet50": ModelSpec("resnet50", (224, 224, 3), "keras.applications.ResNet50, weights=None", heavy=True),
}


def _build(name: str):
    import keras
    from keras import layers

    keras.utils.set_random_seed(42)
    if name == "cifar_cnn":
        # keras/examples cifar10_cnn.py
        inp = keras.Input((32, 32, 3), name="input")
        x = layers.Conv2D(32, (3, 3), padding="same", activation="relu")(inp)
        x = layers.Conv2D(32, (3, 3), activation="relu")(x)
        x = layers.MaxPooling2D((2, 2))(x)
        x = layers.Dropout(0.25)(x)
        x = layers.Conv2D(64, (3, 3), padding="same", activation="relu")(x)
        x = layers.Conv2D(64, (3, 3), activation="relu")(x)
        x = layers.MaxPooling2D((2, 2))(x)
        x = layers.Dropout(0.25)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(512, activation="relu")(x)
        x = layers.Dropout(0.5)(x)
        out = layers.Dense(10, activation="softmax")(x)
        return keras.Model(inp, out, name="cifar10_cnn")
    if name == "mlp":
        inp = keras.Input((64,), name="input")
        x = layers.Dense(256, activation="relu")(inp)
        x = layers.Dense(256, activation="relu")(x)
        out = layers.Dense(1)(x)
        return keras.Model(inp, out, name="tabular_mlp")
    if name == "resnet50":
        return keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    raise KeyError(name)


def base_dir(root: Path, name: str) -> Path:
    return Path(root) / "models" / name


def saved_model_dir(root: Path, name: str) -> Path:
    return base_dir(root, name) / "model" / "1"


def ensure_models(root: Path, names=None, log=print) -> dict:
    """Create the SavedModels that are missing; return {name: base_dir}."""
    out = {}
    for name in names or MODELS:
        sm = saved_model_dir(root, name)
        if not (sm / "saved_model.pb").exists():
            log(f"[models] exporting {name} -> {sm}")
            model = _build(name)
            sm.parent.mkdir(parents=True, exist_ok=True)
            model.export(str(sm), verbose=False)
        out[name] = base_dir(root, name)
    return out


def write_bodies(root: Path, names=None) -> dict:
    """Request bodies, identical for every stack that takes a JSON nested list.

    Returns {name: {"json": path, "v2": path}}; the V2 body is MLServer's own protocol.
    """
    bodies = {}
    d = Path(root) / "bodies"
    d.mkdir(parents=True, exist_ok=True)
    for name in names or MODELS:
        x = MODELS[name].example()
        p_json = d / f"{name}.json"
        p_json.write_text(json.dumps(x.tolist()))
        p_v2 = d / f"{name}.v2.json"
        p_v2.write_text(json.dumps({"inputs": [{"name": "input", "shape": list(x.shape),
                                                "datatype": "FP32", "data": x.ravel().tolist()}]}))
        bodies[name] = {"json": p_json, "v2": p_v2, "bytes": p_json.stat().st_size}
    return bodies


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = Path(__file__).resolve().parent / "results" / "tmp"
    print(ensure_models(root))
    print(write_bodies(root))
