"""Unpacking archives we did not write: SAGEMAKER_SUBMIT_DIRECTORY tarballs and model.tar.gz files.

One implementation for every archive the project unpacks. A member that is an absolute path,
holds '..', is a link leaving the destination, or is a device file / FIFO is refused with an
error naming it. Standard library only: the server imports this before TensorFlow.
"""
from __future__ import annotations

import os
import posixpath
import re
import stat
import tarfile
from pathlib import Path, PurePosixPath

__all__ = ["ArchiveError", "ArchiveTooLarge", "UnsafeArchive", "UnreadableArchive", "check_member", "safe_extract"]

_FILTER_ERROR = getattr(tarfile, "FilterError", None)   # with the 'data' filter (Python >= 3.10.12 / 3.11.4)


class ArchiveError(ValueError):
    """An archive that cannot be unpacked."""


class UnsafeArchive(ArchiveError):
    """A member that could write outside the destination or create a device node."""


class ArchiveTooLarge(UnsafeArchive):
    """The members add up to more than the caller allows."""


class UnreadableArchive(ArchiveError):
    """The file is not a tar archive we can read."""


def check_member(member: tarfile.TarInfo) -> None:
    """Refuse a member that could write outside the destination or create a device node.

    Lexical checks, so the error names the member; the stdlib 'data' filter runs afterwards as a
    second line (it resolves real paths, catching chains of links).
    """
    name = member.name
    path = PurePosixPath(name)
    if name.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", name) or name.startswith("\\"):
        raise UnsafeArchive(f"unsafe archive member {name!r}: absolute path")
    if ".." in path.parts or ".." in name.split("\\"):
        raise UnsafeArchive(f"unsafe archive member {name!r}: path contains '..'")
    if member.ischr() or member.isblk():
        raise UnsafeArchive(f"unsafe archive member {name!r}: device file")
    if member.isfifo():
        raise UnsafeArchive(f"unsafe archive member {name!r}: FIFO")
    if member.issym() or member.islnk():
        kind = "symlink" if member.issym() else "hard link"
        target = member.linkname
        if target.startswith("/"):
            raise UnsafeArchive(f"unsafe archive member {name!r}: {kind} to absolute path {target!r}")
        # symlinks resolve against the member's folder, hard links against the archive root
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            raise UnsafeArchive(f"unsafe archive member {name!r}: {kind} to {target!r} points outside the folder")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchive(f"unsafe archive member {name!r}: unsupported type {member.type!r}")


def safe_extract(archive: Path, dest: Path, max_bytes: int | None = None) -> list[str]:
    """Unpack ARCHIVE into DEST after checking every member; returns the member names.

    MAX_BYTES caps what the members add up to (a tar member's size is what it writes), checked
    before anything is written.

    Raises UnsafeArchive naming the first bad member (nothing is written when the lexical checks
    catch it; a link chain caught by the 'data' filter may leave earlier members in DEST, never
    anything outside it), or UnreadableArchive when ARCHIVE is not a tar archive.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise UnreadableArchive(f"{archive} is not a readable tar archive: {exc}") from exc
    with tar:
        members, total = [], 0
        try:
            # member by member, so an archive over the cap is refused at the member that passes it,
            # without expanding the rest of a compressed stream first
            while (member := tar.next()) is not None:
                members.append(member)
                total += member.size if member.isfile() else 0
                if max_bytes is not None and total > max_bytes:
                    raise ArchiveTooLarge(
                        f"{archive.name} unpacks to more than the {max_bytes >> 20} MiB allowed (member "
                        f"{member.name!r}, {member.size >> 20} MiB, takes it to {total >> 20} MiB)")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise UnreadableArchive(f"{archive} is not a readable tar archive: {exc}") from exc
        has_filter = hasattr(tarfile, "data_filter")   # Python >= 3.10.12 / 3.11.4
        for member in members:
            check_member(member)
            if not has_filter and (member.issym() or member.islnk()) and ".." in member.linkname.split("/"):
                # without the stdlib filter nothing resolves link chains: refuse '..' in any link
                raise UnsafeArchive(f"unsafe archive member {member.name!r}: link target {member.linkname!r} "
                                    "contains '..' (this Python has no tarfile 'data' filter)")
        try:
            if not has_filter:
                tar.extractall(dest)
            else:
                tar.extractall(dest, filter="data")
        except (tarfile.TarError, EOFError) as exc:
            if _FILTER_ERROR is not None and isinstance(exc, _FILTER_ERROR):
                bad = getattr(exc, "tarinfo", None)
                label = bad.name if bad is not None else "?"
                raise UnsafeArchive(f"unsafe archive member {label!r}: {exc}") from exc
            raise UnreadableArchive(f"{archive} is not a readable tar archive: {exc}") from exc
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
