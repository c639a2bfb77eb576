#!/usr/bin/env python3
"""Train a small Keras CNN on scikit-learn's handwritten digits (8x8 grey images, shipped with
scikit-learn, no download) and export it the way SageMaker's TensorFlow serving containers expect:

    OUT/model/1/saved_model.pb (+ variables/)     TF Serving layout, signature `serving_default`
    OUT/model.tar.gz                              the same tree at the archive root (for S3)

The signature takes float32 images of shape (None, 8, 8, 1) scaled to [0, 1] and returns the
10 class probabilities. OUT/request.json is one such image, ready for POST /invocations.

    python examples/digits/train.py --out examples/digits
"""
import argparse
import json
import os
import shutil
import tarfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402


def build_model() -> keras.Model:
    inputs = keras.Input(shape=(8, 8, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    keras.utils.set_random_seed(args.seed)
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]  # (1797, 8, 8, 1) in [0, 1]
    y = digits.target.astype("int64")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=args.seed, stratify=y)

    model = build_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0,
              validation_split=0.1)
    _, acc = model.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy: {acc:.3f} on {len(x_test)} held-out digits")

    out = args.out
    model_dir = out / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    model.export(str(model_dir / "1"), format="tf_saved_model", verbose=False)

    tar_path = out / "model.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):  # SageMaker extracts it into /opt/ml/model
            tar.add(path, arcname=str(path.relative_to(model_dir)), recursive=False)

    # One held-out image as a TF Serving row-format request (shipped as request.json).
    request = {"instances": x_test[:1].round(4).tolist()}
    (out / "request.json").write_text(json.dumps(request) + "\n")
    print(f"exported {model_dir / '1'} and {tar_path}; expected class of request.json: {int(y_test[0])}")


if __name__ == "__main__":
    main()
