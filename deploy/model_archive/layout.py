"""Where the models are in a model dir: the archive layout the server and the deploy command share.

Layouts, as AWS's TensorFlow serving container accepts them:
  <version>/saved_model.pb (model name "model"), <name>/<version>/saved_model.pb for one or more
  names, saved_model.pb at the root, or a Keras .keras / .h5 file; user code lives in code/.
Every version folder is servable (as that container lists them all for TF Serving). A version is
its folder's name read as TF Serving reads it, an integer with leading zeros allowed (00000123 is
version "123"); other folders are not versions. The highest is a name's default, and the first
name (sorted) the default model.
File system only (no TensorFlow, no NumPy), so the `serve` master and `deploy` stay light.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KERAS_SUFFIXES = (".keras", ".h5")
CODE_DIR = "code"


class ModelNotFound(Exception):
    pass


@dataclass(frozen=True)
class ModelLocation:
    path: Path
    kind: str            # "savedmodel" or "keras"
    name: str            # TF Serving's model name ("model" when the layout has none)
    version: str | None

    @property
    def at_root(self) -> bool:
        """A SavedModel directly in the model dir, with no version folder."""
        return self.kind == "savedmodel" and self.version is None

    def __str__(self) -> str:
        v = f" version {self.version}" if self.version else ""
        return f"{self.kind} '{self.name}'{v} at {self.path}"


def version_number(name: str) -> str | None:
    """A version folder's name as TF Serving numbers it ("00000123" -> "123"); None if it is none."""
    return str(int(name)) if name.isascii() and name.isdigit() else None


def _versions(folder: Path) -> list[tuple[str, Path]]:
    found = {}
    for path in sorted(folder.iterdir()):
        number = version_number(path.name)
        if number is None or not path.is_dir() or not (path / "saved_model.pb").is_file():
            continue
        if number in found:
            raise ModelNotFound(f"{found[number]} and {path} are both version {number} of {folder} "
                                f"(a version is its folder's name as an integer); keep one")
        found[number] = path
    return sorted(((v, p) for v, p in found.items()), key=lambda vp: int(vp[0]))


def find_models(model_dir: Path) -> dict[str, list[ModelLocation]]:
    """Every servable in MODEL_DIR: model name -> its versions, lowest first (so [-1] is the default).

    Names are in sorted order, so the first is the default model when none is configured.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelNotFound(f"model directory {model_dir} does not exist")
    if (model_dir / "saved_model.pb").is_file():
        return {"model": [ModelLocation(model_dir, "savedmodel", "model", None)]}
    versions = _versions(model_dir)
    if versions:
        return {"model": [ModelLocation(p, "savedmodel", "model", v) for v, p in versions]}
    found = {}
    for sub in sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name != CODE_DIR):
        versions = _versions(sub)
        if versions:
            found[sub.name] = [ModelLocation(p, "savedmodel", sub.name, v) for v, p in versions]
    if found:
        return found
    location = _keras_file(model_dir)
    return {location.name: [location]}


def find_model(model_dir: Path) -> ModelLocation:
    """The default servable: the first model name's highest version."""
    return next(iter(find_models(model_dir).values()))[-1]


def _keras_file(model_dir: Path) -> ModelLocation:
    keras_files = sorted(p for p in model_dir.rglob("*") if p.suffix in KERAS_SUFFIXES and p.is_file()
                         and p.relative_to(model_dir).parts[0] != CODE_DIR)
    if keras_files:
        return ModelLocation(keras_files[0], "keras", keras_files[0].stem, None)
    raise ModelNotFound(
        f"no loadable model in {model_dir}: expected <version>/saved_model.pb (TF Serving layout), "
        f"<name>/<version>/saved_model.pb, saved_model.pb at the root, or a .keras/.h5 file")
