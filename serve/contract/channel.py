"""The channel between an HTTP worker and a model process: arrays by shared memory, a small
descriptor over a Unix socket.

Each request in flight in an HTTP worker holds one connection (a Unix stream socket; each message
is a 4-byte length and a pickle, ``send``/``Reader``) to a model process, and one shared-memory
segment it writes request arrays into; the model process answers into a segment of its own per
connection. Only a descriptor crosses the socket: the operation, the target, and for each array
its name, dtype, shape and offset. Array data is never pickled: the reader makes NumPy views of
the segment in place.

Segments are files in /dev/shm mapped with mmap. ``multiprocessing.shared_memory`` does the
same underneath, but before Python 3.13 it registers every attached segment with a resource
tracker that unlinks it when the attaching process exits, which would pull a live segment from
under the other side. Their space is reserved up front (posix_fallocate), because touching an
mmap of a full tmpfs kills the process with SIGBUS; Docker gives /dev/shm 64 MiB by default, so
when it is full a segment goes to the temporary directory instead (page cache, same speed
while memory lasts).

Strings (tf.string) cross as one int64 array of lengths and one blob of their bytes.
"""
from __future__ import annotations

import mmap
import os
import pickle
import struct
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

SHM_DIR = Path("/dev/shm") if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) \
    else Path(tempfile.gettempdir())
ALIGN = 64
_LENGTH = struct.Struct("<I")


def send(sock, message) -> None:
    """One message: its length, then its pickle, in one write."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LENGTH.pack(len(data)) + data)


def receive(sock):
    """The next message from a blocking socket; EOFError when the other side closed."""
    head = _read_exactly(sock, _LENGTH.size)
    return pickle.loads(_read_exactly(sock, _LENGTH.unpack(head)[0]))


def _read_exactly(sock, n: int) -> bytes:
    data = sock.recv(n)
    if len(data) == n:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        if not data:
            raise EOFError("the other side closed the channel")
        data = sock.recv(n - got)
        parts.append(data)
        got += len(data)
    return b"".join(parts)


class Reader:
    """Messages from a socket that a selector said is readable: ``feed`` reads what is there and
    returns the whole messages in it (a message may arrive in parts)."""

    def __init__(self, sock):
        self.sock = sock
        self._buffer = b""

    def feed(self) -> list:
        data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError("the other side closed the channel")
        buffer = self._buffer + data if self._buffer else data
        messages, at = [], 0
        while len(buffer) - at >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, at)
            end = at + _LENGTH.size + length
            if end > len(buffer):
                break
            messages.append(pickle.loads(buffer[at + _LENGTH.size:end]))
            at = end
        self._buffer = buffer[at:]
        return messages

# Segments are named RUN.KIND-PID-UNIQUE: RUN is the server's run directory's name (set_run, in the
# master before it forks and in each model process), PID the process that made it, so the master
# can remove what a dead process left (serve.supervision) and everything of the run at shutdown.
_run = "serve"


def set_run(run_dir: Path) -> None:
    global _run
    _run = Path(run_dir).name


def run_segments(run_dir: Path, pid: int | None = None) -> list[Path]:
    """The segments of the run in RUN_DIR (only those PID made, when given), wherever they went."""
    pattern = f"{Path(run_dir).name}.*-{pid}-*" if pid is not None else f"{Path(run_dir).name}.*"
    return [p for d in {SHM_DIR, Path(tempfile.gettempdir())} for p in d.glob(pattern)]


def owner(path: Path) -> int | None:
    """The pid that made the segment at PATH."""
    parts = path.name.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


class Segment:
    """A named shared-memory file, mapped; grows (to a new file) when a message needs more room."""

    def __init__(self, path: Path, size: int, create: bool):
        self.path = path
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.posix_fallocate(fd, 0, size)
            else:
                size = os.fstat(fd).st_size
            self.map = mmap.mmap(fd, size)
        except OSError:
            if create:
                path.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        self.size = size

    @classmethod
    def new(cls, prefix: str, size: int) -> "Segment":
        size = max(size, 1 << 16)
        name = f"{_run}.{prefix}-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            return cls(SHM_DIR / name, size, create=True)
        except OSError:  # /dev/shm is full (ENOSPC): the temporary directory instead
            return cls(Path(tempfile.gettempdir()) / name, size, create=True)

    def unlink(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:  # a view still points into it; the mapping goes when the view does
            pass


# A link keeps a segment this large between messages; beyond, only as long as needed. Every HTTP-worker
# thread and model-process connection has a link, so this bounds what a burst leaves held: 64 threads
# x 2 workers x (request + answer) x 256 KiB = 64 MiB at most, where 4 MiB kept up to 1 GiB.
KEEP = 256 << 10


def fitting(segment: "Segment | None", need: int, prefix: str) -> "Segment":
    """SEGMENT when NEED fits it and it is one a link keeps (at most KEEP), else a new one (the old
    one unlinked): small messages reuse one segment with room to grow, and each large one gets its
    own, used once. The reader gives a large request segment's memory back as soon as it has
    answered (``done_with``), so the next message on that link must not write into it."""
    if segment is not None and need <= segment.size <= KEEP:
        return segment
    if segment is not None:
        segment.unlink()
        segment.close()
    return Segment.new(prefix, need * 2 if need * 2 <= KEEP else need)


def done_with(segment: "Segment") -> None:
    """The reader's last use of a large segment: its pages go back to the system now (punched out of
    the file, for the writer's mapping too), even while a stray view still points into it (a batch the
    batcher's thread still holds, say: it reads zeros from then on), and it is unmapped once no view
    is left. The writer never writes into it again (``fitting``)."""
    try:
        segment.map.madvise(mmap.MADV_REMOVE)
    except (AttributeError, OSError, ValueError):  # no MADV_REMOVE here, or a file system without holes
        pass
    segment.close()


@dataclass(frozen=True)
class Placed:
    """Where one array lies in a segment."""
    name: str
    dtype: str          # numpy dtype string, or "bytes" for a string array
    shape: tuple
    offset: int
    nbytes: int
    lengths_offset: int = 0   # for "bytes": the int64 lengths, then the blob at offset


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _parts(array: np.ndarray) -> tuple[str, list[bytes | np.ndarray]]:
    if array.dtype == object:
        items = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.ravel()]
        return "bytes", [np.fromiter((len(v) for v in items), np.int64, len(items)), b"".join(items)]
    return array.dtype.str, [np.ascontiguousarray(array)]


def room(arrays: Mapping[str, np.ndarray]) -> int:
    """Bytes a segment needs to hold ARRAYS."""
    total = 0
    for array in arrays.values():
        _, parts = _parts(array)
        total += sum(_aligned(p.nbytes if isinstance(p, np.ndarray) else len(p)) for p in parts)
    return total


def place(segment: Segment, arrays: Mapping[str, np.ndarray]) -> list[Placed]:
    """Copy ARRAYS into SEGMENT (which must have ``room``); return their descriptors."""
    placed, offset = [], 0
    buf = segment.map
    for name, array in arrays.items():
        kind, parts = _parts(array)
        starts = []
        for part in parts:
            data = part if isinstance(part, bytes) else memoryview(part).cast("B")
            buf[offset:offset + len(data)] = data
            starts.append((offset, len(data)))
            offset += _aligned(len(data))
        if kind == "bytes":
            (lengths_at, _), (blob_at, blob_len) = starts
            placed.append(Placed(name, kind, array.shape, blob_at, blob_len, lengths_at))
        else:
            placed.append(Placed(name, kind, array.shape, starts[0][0], starts[0][1]))
    return placed


def views(segment: Segment, placed: list[Placed]) -> dict[str, np.ndarray]:
    """The arrays of PLACED as NumPy views of SEGMENT (strings are rebuilt as bytes objects)."""
    out = {}
    for p in placed:
        if p.dtype == "bytes":
            count = int(np.prod(p.shape)) if p.shape else 1
            lengths = np.frombuffer(segment.map, np.int64, count, p.lengths_offset)
            blob = segment.map[p.offset:p.offset + p.nbytes]
            ends = np.cumsum(lengths)
            values = np.empty(count, dtype=object)
            values[:] = [blob[e - n:e] for e, n in zip(ends.tolist(), lengths.tolist())] if count else []
            out[p.name] = values.reshape(p.shape)
        else:
            dtype = np.dtype(p.dtype)
            count = p.nbytes // dtype.itemsize if dtype.itemsize else 0
            out[p.name] = np.frombuffer(segment.map, dtype, count, p.offset).reshape(p.shape)
    return out
