"""Safe file reading and durable writing, shared by model loading, the export, job state and job output.

Reading refuses anything but a regular file (a FIFO would block, /dev/zero never ends) and returns the file's
identity with its bytes, so that a later change can be detected. Writing goes through one atomic path: a temp
file in the target's directory, fsync, rename, fsync of the directory, so a file holds its old content or all of
the new one whenever the process dies.
"""

from __future__ import annotations

import functools
import importlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

FileIdentity = tuple[int, int, int, int, int]  # (dev, inode, size, mtime_ns, ctime_ns)
HASH_CHUNK = 1 << 20
LARGE_HASH = 8 << 20  # bytes from which hashing goes through hashlib (OpenSSL)


@functools.cache
def _builtin_sha256() -> Any:
    """CPython's own sha256 constructor (module _sha2 from Python 3.12, _sha256 before), or None in a build
    without it; looked up once."""
    for name in ("_sha2", "_sha256"):
        try:
            return importlib.import_module(name).sha256
        except ImportError:
            continue
    return None


def sha256(size: int = 0) -> Any:
    """A sha256 hasher for `size` bytes. Below LARGE_HASH, CPython's builtin sha2 module: hashlib's OpenSSL
    library adds 3.6 MB of resident memory to every process that imports it, and a model load hashes only its
    small files (the large weights file only when the verify cache misses). From LARGE_HASH up, hashlib, whose
    OpenSSL code is ~5x faster on CPUs with SHA extensions. Both give the same digest."""
    builtin = _builtin_sha256()
    if size < LARGE_HASH and builtin is not None:
        return builtin()
    import hashlib

    return hashlib.sha256()


def sha256_hex(data: bytes) -> str:
    hasher = sha256(len(data))
    hasher.update(data)
    return str(hasher.hexdigest())


def identity(st: os.stat_result) -> FileIdentity:
    """What changes when a file is replaced or written: ctime cannot be set back by a user."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class NotRegularFileError(OSError):
    """The path exists but is not a regular file."""


@contextmanager
def _open_regular(path: Path) -> Iterator[tuple[IO[bytes], os.stat_result]]:
    """The open file and its stat, refusing anything but a regular file. Opened non-blocking, so even a FIFO raced
    in after the check cannot hang the reader."""
    if path.exists() and not path.is_file():
        raise NotRegularFileError(f"{path} is not a regular file")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(f"{path} is not a regular file")
        yield f, st


def read_regular(path: Path) -> tuple[bytes, FileIdentity]:
    """The file's bytes and its identity when read. Raises OSError (NotRegularFileError for a special file)."""
    with _open_regular(path) as (f, st):
        return f.read(), identity(st)


def hash_regular(path: Path) -> tuple[str, FileIdentity]:
    """The sha256 of a regular file's bytes, read in chunks (a large weights file is never held in memory), and
    its identity when read. Same opening rules and errors as read_regular."""
    with _open_regular(path) as (f, st):
        digest = sha256(st.st_size)
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
        return digest.hexdigest(), identity(st)


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, temp_dir: Path | None = None) -> Iterator[IO[bytes]]:
    """Write `path` through a temp file (in `temp_dir`, same file system, default its own directory): flushed,
    fsynced and renamed onto `path` when the block ends, then the directory is fsynced. On an exception the temp
    file is removed (even when closing it fails too, as it does on a full disk) and `path` keeps its old content."""
    tmp = (temp_dir or path.parent) / f".{path.name}.tmp"
    f = tmp.open("wb")
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException:
        try:
            f.close()  # flushes what is buffered: on a full disk this raises again
        except OSError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """`path` holds either its old content or all of `data`, whenever the process dies."""
    with atomic_file(path) as f:
        f.write(data)
