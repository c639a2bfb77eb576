"""The SageMaker model archive: what goes in (package) and how it comes out (safe unpack, model_archive.archives).

Layout, as the server reads it from /opt/ml/model:
    1/saved_model.pb, 1/variables/...       a SavedModel under a numeric version (TF Serving layout)
    NAME/1/saved_model.pb                   the same under a model name
    model.keras | model.h5                  a Keras file at the root
    code/inference.py, code/requirements.txt, code/lib/   optional user code
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from model_archive import archives as _archives
from model_archive.layout import ModelLocation, ModelNotFound, find_model as _find_model
from .errors import DeployError, UsageError

_SKIP = {"__pycache__", ".DS_Store", ".ipynb_checkpoints"}


def find_model(model_dir: Path) -> ModelLocation:
    """The model the server would load from MODEL_DIR, or DeployError saying what is expected."""
    try:
        return _find_model(model_dir)
    except ModelNotFound as exc:
        raise DeployError(str(exc)) from None


def _want(path: Path) -> bool:
    return path.name not in _SKIP and path.suffix != ".pyc"


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = int(info.mtime)
    info.mode = 0o755 if info.isdir() else (0o755 if info.mode & 0o111 else 0o644)
    return info


def _add_tree(tar: tarfile.TarFile, src: Path, arcname: str, skip_top: set[str] = frozenset()) -> None:
    tar.addfile(_normalized(tar.gettarinfo(str(src), arcname)))
    for child in sorted(src.iterdir()):
        if not _want(child) or child.name in skip_top:
            continue
        name = f"{arcname}/{child.name}" if arcname else child.name
        if child.is_dir():
            _add_tree(tar, child, name)
        elif child.is_file():   # follows symlinks to files: the archive holds content, never links
            info = _normalized(tar.gettarinfo(str(child.resolve()), name))
            with open(child, "rb") as fh:
                tar.addfile(info, fh)


def package(model_dir: Path, out: Path, code_dir: Path | None = None) -> list[str]:
    """Write a SageMaker model.tar.gz from MODEL_DIR (and CODE_DIR as code/). Returns member names.

    A SavedModel at the root of MODEL_DIR goes under 1/ (the server wants a numeric version);
    other layouts are kept as they are. CODE_DIR, when given, replaces MODEL_DIR/code.
    """
    model_dir = Path(model_dir)
    try:
        layout = _find_model(model_dir)
    except ModelNotFound as exc:
        raise UsageError(str(exc)) from None
    if code_dir is not None:
        code_dir = Path(code_dir)
        if not code_dir.is_dir():
            raise UsageError(f"--code {code_dir} is not a folder")
    elif (model_dir / "code").is_dir():
        code_dir = model_dir / "code"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            if layout.at_root:
                _add_tree(tar, model_dir, "1", skip_top={"code"})
            else:
                for child in sorted(model_dir.iterdir()):
                    if child.name == "code" or not _want(child):
                        continue
                    if child.is_dir():
                        _add_tree(tar, child, child.name)
                    elif child.is_file():
                        info = _normalized(tar.gettarinfo(str(child.resolve()), child.name))
                        with open(child, "rb") as fh:
                            tar.addfile(info, fh)
            if code_dir is not None:
                _add_tree(tar, code_dir, "code")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    with tarfile.open(out, "r:gz") as tar:
        return tar.getnames()


def has_user_code(model_data: Path) -> bool:
    """True when a model folder or archive carries code/inference.py."""
    model_data = Path(model_data)
    if model_data.is_dir():
        return (model_data / "code" / "inference.py").is_file()
    with tarfile.open(model_data, "r:*") as tar:
        return any(_clean(m.name) == "code/inference.py" for m in tar)


def stream_has_user_code(fileobj) -> bool:
    """Same as has_user_code for a non-seekable stream (an S3 body); stops at the first match."""
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            if _clean(member.name) == "code/inference.py":
                return True
    return False


def _clean(name: str) -> str:
    return posixpath.normpath(name).lstrip("/") if name not in ("", ".") else ""


def check_member(member: tarfile.TarInfo) -> None:
    """model_archive.archives.check_member, raising DeployError (same message)."""
    try:
        _archives.check_member(member)
    except _archives.ArchiveError as exc:
        raise DeployError(str(exc)) from exc


def safe_extract(archive: Path, dest: Path) -> list[str]:
    """model_archive.archives.safe_extract, raising DeployError (same message) for an unsafe or unreadable archive."""
    try:
        return _archives.safe_extract(archive, dest)
    except _archives.ArchiveError as exc:
        raise DeployError(str(exc)) from exc


@dataclass(frozen=True)
class CheckedModel:
    """A local model folder or archive that passed the checks: what the server would load from it."""

    source: Path            # what the user gave
    kind: str               # "folder" or "archive"
    model: str              # e.g. "savedmodel 'model' version 1 at 1" (relative to the archive root)
    has_code: bool


def check_local_model(model_data: str | Path, scratch: Path | None = None) -> CheckedModel:
    """Check a local model folder or model.tar.gz the way the server will read it, with no network.

    The archive is unpacked into SCRATCH (a temporary folder by default, removed afterwards) with
    model_archive.archives.safe_extract, and the model is looked up with model_archive.layout.find_model, the code
    the server runs at start-up. Raises UsageError naming the user's path (never the scratch one).
    """
    path = Path(model_data)
    if not path.exists():
        raise UsageError(f"model data {model_data} does not exist (give a model folder, a model.tar.gz "
                         "or an s3:// URI)")
    if path.is_dir():
        try:
            found = _find_model(path)
        except ModelNotFound as exc:
            raise UsageError(str(exc)) from None
        return CheckedModel(path, "folder", _relative(found, path), has_user_code(path))
    if not path.is_file():
        raise UsageError(f"model data {model_data} is neither a folder nor a file")
    if not tarfile.is_tarfile(path):
        raise UsageError(f"model data {model_data} is not a tar archive (SageMaker wants a gzip-compressed "
                         "tar, model.tar.gz): make one with `deploy package MODEL_DIR -o model.tar.gz`")
    with tempfile.TemporaryDirectory(prefix="deploy-check-", dir=scratch) as tmp:
        root = Path(tmp) / "model"
        try:
            names = _archives.safe_extract(path, root)
        except _archives.UnsafeArchive as exc:
            raise UsageError(f"model data {model_data}: {exc}") from None
        except _archives.ArchiveError:
            raise UsageError(f"model data {model_data} is a damaged or truncated tar archive: make it again "
                             "with `deploy package MODEL_DIR -o model.tar.gz`") from None
        try:
            found = _find_model(root)
        except ModelNotFound:
            top = sorted({n.strip("./").split("/")[0] for n in names if n.strip("./")})
            raise UsageError(
                f"no loadable model in archive {model_data} (it holds: {', '.join(top) or 'nothing'}): "
                "expected <version>/saved_model.pb (TF Serving layout), <name>/<version>/saved_model.pb, "
                "saved_model.pb at the root, or a .keras/.h5 file") from None
        return CheckedModel(path, "archive", _relative(found, root), has_user_code(path))


def _relative(found: ModelLocation, root: Path) -> str:
    try:
        rel = found.path.relative_to(root)
    except ValueError:
        rel = found.path
    v = f" version {found.version}" if found.version else ""
    return f"{found.kind} '{found.name}'{v} at {rel if str(rel) != '.' else 'the root'}"
