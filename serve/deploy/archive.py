"""The SageMaker model archive: what goes in (package) and how it comes out (safe unpack).

Layout, as the server reads it from /opt/ml/model:
    1/saved_model.pb, 1/variables/...       a SavedModel under a numeric version (TF Serving layout)
    NAME/1/saved_model.pb                   the same under a model name
    model.keras | model.h5                  a Keras file at the root
    code/inference.py, code/requirements.txt, code/lib/   optional user code
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import tarfile
from pathlib import Path, PurePosixPath

from ..layout import ModelLocation, ModelNotFound, find_model as _find_model
from .errors import DeployError

_FILTER_ERROR = getattr(tarfile, "FilterError", tarfile.TarError)
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
    layout = find_model(model_dir)
    if code_dir is not None:
        code_dir = Path(code_dir)
        if not code_dir.is_dir():
            raise DeployError(f"--code {code_dir} is not a folder")
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
    """Refuse a member that could write outside the destination or create a device node.

    Lexical checks, so the error names the member; the stdlib 'data' filter runs afterwards as a
    second line (it resolves real paths, catching chains of links).
    """
    name = member.name
    path = PurePosixPath(name)
    if name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name) or name.startswith("\\"):
        raise DeployError(f"unsafe archive member {name!r}: absolute path")
    if ".." in path.parts or ".." in name.split("\\"):
        raise DeployError(f"unsafe archive member {name!r}: path contains '..'")
    if member.ischr() or member.isblk():
        raise DeployError(f"unsafe archive member {name!r}: device file")
    if member.isfifo():
        raise DeployError(f"unsafe archive member {name!r}: FIFO")
    if member.issym() or member.islnk():
        kind = "symlink" if member.issym() else "hard link"
        target = member.linkname
        if target.startswith("/"):
            raise DeployError(f"unsafe archive member {name!r}: {kind} to absolute path {target!r}")
        # symlinks resolve against the member's folder, hard links against the archive root
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            raise DeployError(f"unsafe archive member {name!r}: {kind} to {target!r} points outside the folder")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise DeployError(f"unsafe archive member {name!r}: unsupported type {member.type!r}")


def safe_extract(archive: Path, dest: Path) -> list[str]:
    """Unpack ARCHIVE into DEST after checking every member; returns the member names."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise DeployError(f"{archive} is not a readable tar archive: {exc}") from exc
    with tar:
        members = tar.getmembers()
        has_filter = hasattr(tarfile, "data_filter")   # Python >= 3.10.12 / 3.11.4
        for member in members:
            check_member(member)
            if not has_filter and (member.issym() or member.islnk()) and ".." in member.linkname.split("/"):
                # without the stdlib filter nothing resolves link chains: refuse '..' in any link
                raise DeployError(f"unsafe archive member {member.name!r}: link target {member.linkname!r} "
                                  "contains '..' (this Python has no tarfile 'data' filter)")
        try:
            if not has_filter:
                tar.extractall(dest)
            else:
                tar.extractall(dest, filter="data")
        except _FILTER_ERROR as exc:
            bad = getattr(exc, "tarinfo", None)
            label = bad.name if bad is not None else "?"
            raise DeployError(f"unsafe archive member {label!r}: {exc}") from exc
    # the container reads the folder as whatever user it runs as
    for root, dirs, files in os.walk(dest):
        for d in dirs:
            p = os.path.join(root, d)
            os.chmod(p, stat.S_IMODE(os.lstat(p).st_mode) | 0o555)
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                os.chmod(p, stat.S_IMODE(os.lstat(p).st_mode) | 0o444)
    os.chmod(dest, 0o755)
    return [m.name for m in members]
