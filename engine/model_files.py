"""Loading a model directory made by scripts/export_models.py: manifest, integrity check, graph check.

Layout: model.onnx, tokenizer.json, manifest.json (schema: engine.manifest). The graph's bytes are hashed and
scanned (engine.onnx_scan), then released, and onnxruntime reads the file from its path: handing onnxruntime the
Python copy instead held both at once and doubled peak memory and load time (`python -m benchmarks.profile_memory
MODEL_DIR` shows the steps). The file's identity (inode, size, change times) is taken when it is read and checked
again after the session is built, so a file replaced or written in between is an IntegrityError, not a silently
different model. (Not a memory map: a file truncated while mapped kills the process with SIGBUS.)
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import manifest, verify_cache
from .errors import IntegrityError, ModelLoadError
from .fileio import FileIdentity, identity, read_regular
from .manifest import MODEL_FILE, TOKENIZER_FILE, ModelInfo
from .onnx_scan import check_graph


@dataclass(frozen=True)
class ModelFiles:
    """A verified directory: the description, the graph's path and identity when checked, the tokenizer text,
    and the manifest's own sha256 (what identifies this export)."""

    info: ModelInfo
    onnx_path: Path
    onnx_identity: FileIdentity
    tokenizer_json: str
    manifest_sha256: str

    def check_unchanged(self) -> None:
        """Raise IntegrityError if model.onnx was replaced or written since it was verified (call after loading it)."""
        try:
            now: FileIdentity | None = identity(os.stat(self.onnx_path))
        except OSError:
            now = None
        if now != self.onnx_identity:
            raise IntegrityError(
                f"{self.onnx_path} changed while it was being loaded; load again once nothing writes to the model "
                "directory."
            )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path) -> tuple[bytes, FileIdentity]:
    try:
        return read_regular(path)
    except OSError as exc:
        raise manifest.cannot_read(path, exc) from exc


def load(path: str | Path, verify: bool = True) -> ModelFiles:
    """Read and check a model directory. verify=False skips the sha256 check (not recommended).

    A graph already verified unchanged (engine.verify_cache) is not read again: onnxruntime reads it from its path,
    and its identity is still checked after the session is built.
    """
    found = manifest.read(path)
    info = found.info
    graph_path = info.path / MODEL_FILE
    tokenizer, _ = _read(info.path / TOKENIZER_FILE)
    if verify and sha256_bytes(tokenizer) != found.files[TOKENIZER_FILE]:
        raise _mismatch(info.path / TOKENIZER_FILE)
    try:
        tokenizer_json = tokenizer.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{info.path / TOKENIZER_FILE} is not UTF-8 text; re-export the model") from exc
    onnx_identity = verify_cache.lookup(graph_path, found.files[MODEL_FILE], found.sha256) if verify else None
    if onnx_identity is None:
        onnx_identity = _check_graph_file(graph_path, found, verify)
    return ModelFiles(info, graph_path, onnx_identity, tokenizer_json, found.sha256)


def _check_graph_file(graph_path: Path, found: manifest.Manifest, verify: bool) -> FileIdentity:
    """Read, hash and scan the graph; its bytes are released when this returns, before onnxruntime reads it."""
    read_start = time.time_ns()
    graph, onnx_identity = _read(graph_path)
    if verify and sha256_bytes(graph) != found.files[MODEL_FILE]:
        raise _mismatch(graph_path)
    check_graph(graph, found.info.num_labels, graph_path)
    if verify:
        verify_cache.remember(graph_path, onnx_identity, found.files[MODEL_FILE], found.sha256, read_start)
    return onnx_identity


def _mismatch(path: Path) -> IntegrityError:
    return IntegrityError(
        f"{path} does not match the sha256 in its manifest: the file was changed or corrupted after export. "
        "Re-export the model."
    )
