"""engine/fileio.py: hashing without OpenSSL for small inputs, the same digests either way."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from engine.model import fileio


@pytest.mark.parametrize("size", [0, 1, fileio.LARGE_HASH - 1, fileio.LARGE_HASH, 3 * fileio.LARGE_HASH])
def test_sha256_is_hashlibs_digest_below_and_above_the_large_size(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    hasher = fileio.sha256(size)
    hasher.update(data)
    assert hasher.hexdigest() == fileio.sha256_hex(data) == hashlib.sha256(data).hexdigest()
    if any(importlib.util.find_spec(name) for name in ("_sha2", "_sha256")):  # CPython's builtin sha2 exists
        assert (type(hasher) is type(hashlib.sha256())) == (size >= fileio.LARGE_HASH)  # OpenSSL only for large


def test_hash_regular_matches_hashlib_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "weights"
    data = b"0123456789abcdef" * (fileio.HASH_CHUNK // 8 + 3)  # two chunks and a part
    path.write_bytes(data)
    digest, ident = fileio.hash_regular(path)
    assert digest == hashlib.sha256(data).hexdigest()
    assert ident == fileio.identity(path.stat())
