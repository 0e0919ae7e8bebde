"""Loading a model directory made by scripts/export_models.py: manifest, integrity check, graph check.

Layout: model.onnx, tokenizer.json, manifest.json (schema: engine.model.manifest), and model.onnx.data when the graph
keeps its large tensors outside (every export since the weights file was introduced). The graph's bytes are hashed
and scanned (engine.model.onnx_scan), then released, and onnxruntime reads the file from its path: handing onnxruntime
the Python copy instead held both at once and doubled peak memory and load time (`python -m benchmarks.profile_memory
MODEL_DIR` shows the steps). The weights file is hashed in chunks and never held: onnxruntime memory-maps it, so
weights it pre-packs are not kept twice and the embedding rows no text uses are never read (a third of the
resident memory of a single-file graph). Every file's identity (inode, size, change times) is taken when it is
read and checked again after the session is built, so a file replaced or written in between is an IntegrityError,
not a silently different model. A mapped file must not be truncated or rewritten in place while a process uses
it (the process would die of SIGBUS): replace a model by writing a new directory, as the export does.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import IntegrityError, ModelLoadError
from engine.model import manifest, verify_cache
from engine.model.fileio import FileIdentity, NotRegularFileError, hash_regular, identity, read_regular, sha256_hex
from engine.model.manifest import (
    DATA_FILE,
    FP32_REFERENCE_DATA_FILE,
    FP32_REFERENCE_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    ModelInfo,
)
from engine.model.onnx_scan import check_graph


@dataclass(frozen=True)
class ModelFiles:
    """A verified directory: the description, the graph's path and identity when checked, the tokenizer text,
    and the manifest's own sha256 (what identifies this export)."""

    info: ModelInfo
    onnx_path: Path
    onnx_identity: FileIdentity
    tokenizer_json: str
    manifest_sha256: str
    data_path: Path | None = None  # model.onnx.data, when the manifest lists it
    data_identity: FileIdentity | None = None
    reference_path: Path | None = None  # the fp32 graph that re-scores near-ties, when the manifest sets a margin
    reference_identity: FileIdentity | None = None
    reference_data_path: Path | None = None  # its weights file, in exports that keep one
    reference_data_identity: FileIdentity | None = None

    def check_unchanged(self, reference: bool = False) -> None:
        """Raise IntegrityError if model.onnx or its weights file (`reference`: the fp32 reference) was replaced or
        written since it was verified (call after loading it)."""
        checked: list[tuple[Path, FileIdentity | None]] = [(self.onnx_path, self.onnx_identity)]
        if self.data_path is not None:
            checked.append((self.data_path, self.data_identity))
        if reference:
            assert self.reference_path is not None, "no fp32 reference to check"
            checked = [(self.reference_path, self.reference_identity)]
            if self.reference_data_path is not None:
                checked.append((self.reference_data_path, self.reference_data_identity))
        for path, was in checked:
            try:
                now: FileIdentity | None = identity(os.stat(path))
            except OSError:
                now = None
            if now != was:
                raise IntegrityError(
                    f"{path} changed while it was being loaded; load again once nothing writes to the model directory."
                )


def _read(path: Path) -> tuple[bytes, FileIdentity]:
    try:
        return read_regular(path)
    except OSError as exc:
        raise manifest.cannot_read(path, exc) from exc


def load(path: str | Path, verify: bool = True) -> ModelFiles:
    """Read and check a model directory. verify=False skips the sha256 check (not recommended).

    A graph already verified unchanged (engine.model.verify_cache) is not read again: onnxruntime reads it from its
    path, and its identity is still checked after the session is built.
    """
    found = manifest.read(path)
    info = found.info
    graph_path = info.path / MODEL_FILE
    tokenizer, _ = _read(info.path / TOKENIZER_FILE)
    if verify and sha256_hex(tokenizer) != found.files[TOKENIZER_FILE]:
        raise _mismatch(info.path / TOKENIZER_FILE)
    try:
        tokenizer_json = tokenizer.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{info.path / TOKENIZER_FILE} is not UTF-8 text; re-export the model") from exc
    data_path = info.path / DATA_FILE if DATA_FILE in found.files else None
    data_identity = None if data_path is None else _check_hashed(data_path, found.files[DATA_FILE], found, verify)
    onnx_identity = verify_cache.lookup(graph_path, found.files[MODEL_FILE], found.sha256) if verify else None
    if onnx_identity is None:
        onnx_identity = _check_graph_file(graph_path, found, verify, data_identity)
    reference_path = reference_identity = reference_data_path = reference_data_identity = None
    if info.rescore_margin is not None:  # hashed now, loaded by the first near-tie (engine.runtime.loaded)
        reference_path = info.path / FP32_REFERENCE_FILE
        reference_identity = _check_hashed(reference_path, found.extra_files[FP32_REFERENCE_FILE], found, verify)
        if FP32_REFERENCE_DATA_FILE in found.extra_files:
            reference_data_path = info.path / FP32_REFERENCE_DATA_FILE
            sha = found.extra_files[FP32_REFERENCE_DATA_FILE]
            reference_data_identity = _check_hashed(reference_data_path, sha, found, verify)
    return ModelFiles(
        info,
        graph_path,
        onnx_identity,
        tokenizer_json,
        found.sha256,
        data_path,
        data_identity,
        reference_path,
        reference_identity,
        reference_data_path,
        reference_data_identity,
    )


def _check_hashed(data_path: Path, sha: str, found: manifest.Manifest, verify: bool) -> FileIdentity:
    """Hash a large file (the weights, the fp32 reference) in chunks, or only take its identity when verify=False
    or it is already verified."""
    try:
        if not verify:
            st = os.stat(data_path)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegularFileError(f"{data_path} is not a regular file")
            return identity(st)
        cached = verify_cache.lookup(data_path, sha, found.sha256)
        if cached is not None:
            return cached
        read_start = time.time_ns()
        digest, data_identity = hash_regular(data_path)
    except OSError as exc:
        raise manifest.cannot_read(data_path, exc) from exc
    if digest != sha:
        raise _mismatch(data_path)
    verify_cache.remember(data_path, data_identity, sha, found.sha256, read_start)
    return data_identity


def _check_graph_file(
    graph_path: Path, found: manifest.Manifest, verify: bool, data_identity: FileIdentity | None
) -> FileIdentity:
    """Read, hash and scan the graph; its bytes are released when this returns, before onnxruntime reads it."""
    read_start = time.time_ns()
    graph, onnx_identity = _read(graph_path)
    if verify and sha256_hex(graph) != found.files[MODEL_FILE]:
        raise _mismatch(graph_path)
    data_size = 0 if data_identity is None else data_identity[2]
    check_graph(graph, found.info.num_labels, graph_path, None if data_identity is None else DATA_FILE, data_size)
    if verify:
        verify_cache.remember(graph_path, onnx_identity, found.files[MODEL_FILE], found.sha256, read_start)
    return onnx_identity


def _mismatch(path: Path) -> IntegrityError:
    return IntegrityError(
        f"{path} does not match the sha256 in its manifest: the file was changed or corrupted after export. "
        "Re-export the model."
    )
