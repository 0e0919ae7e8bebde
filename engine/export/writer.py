"""Writing a model directory: model.onnx + model.onnx.data (its large tensors, page-aligned and memory-mapped at
load) + tokenizer.json + manifest.json (the sha256 of every file), swapped in whole or not at all."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.model.fileio import fsync_dir, sha256_hex, write_atomic
from engine.model.manifest import (
    DATA_FILE,
    FP32_REFERENCE_DATA_FILE,
    FP32_REFERENCE_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
)


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from engine import __version__

    out = {"offline-textclf-engine": __version__}
    tools = ("torch", "transformers", "optimum", "optimum-onnx", "onnxscript", "onnx", "onnxruntime", "tokenizers")
    for pkg in (*tools, "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


WEIGHTS_MIN_BYTES = 64 * 1024  # initializers this large go to the weights file
PAGE = 4096  # each large tensor starts on a page of its own, as onnxruntime aligns its own external data


def split_weights(onnx_bytes: bytes, location: str = DATA_FILE) -> tuple[bytes, bytes]:
    """(graph, weights): the graph with its large initializers moved to `location` (a file beside the graph), each
    at a page-aligned offset. onnxruntime memory-maps that file: the weights it pre-packs are not also kept as
    read, and embedding rows no text uses are never paged in (`python -m benchmarks.profile_memory` shows the
    difference)."""
    if importlib.util.find_spec("onnx") is None:  # the bare wheel adopting a self-contained graph: kept as it is
        return onnx_bytes, b""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    data = bytearray()
    for tensor in model.graph.initializer:
        raw = tensor.raw_data
        if len(raw) < WEIGHTS_MIN_BYTES:
            continue
        data += bytes(-len(data) % PAGE)
        entries = (("location", location), ("offset", str(len(data))), ("length", str(len(raw))))
        data += raw
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in entries:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return model.SerializeToString(), bytes(data)


def reference_parts(extra_files: Mapping[str, bytes]) -> dict[str, bytes]:
    """`extra_files` with the fp32 reference (a whole graph) split into its graph and weights files."""
    out = dict(extra_files)
    if FP32_REFERENCE_FILE in out:
        graph, weights = split_weights(out[FP32_REFERENCE_FILE], Path(FP32_REFERENCE_DATA_FILE).name)
        out[FP32_REFERENCE_FILE] = graph
        if weights:
            out[FP32_REFERENCE_DATA_FILE] = weights
    return out


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_directory(
    output: Path,
    onnx_bytes: bytes,
    tokenizer_json: str,
    manifest: dict[str, Any],
    extra_files: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """Write into a sibling temp dir, then swap it in: DIR is never left half-written. The graph's large tensors
    go to the weights file (split_weights). `extra_files` (relative path -> bytes; the fp32 reference) are
    written too, their sha256 under the manifest's `extra_files` (`files` lists only what the run time loads);
    the fp32 reference's large tensors go to FP32_REFERENCE_DATA_FILE, as the graph's go to DATA_FILE."""
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        staging.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would keep a service account from serving it
        tok_bytes = tokenizer_json.encode("utf-8")
        graph_bytes, weights = split_weights(onnx_bytes)
        write_atomic(staging / MODEL_FILE, graph_bytes)
        write_atomic(staging / TOKENIZER_FILE, tok_bytes)
        files = {MODEL_FILE: sha256_hex(graph_bytes), TOKENIZER_FILE: sha256_hex(tok_bytes)}
        if weights:
            write_atomic(staging / DATA_FILE, weights)
            files[DATA_FILE] = sha256_hex(weights)
        extras = {}
        for rel, content in reference_parts(extra_files or {}).items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(staging / rel, content)
            extras[rel] = sha256_hex(content)
        manifest = {**manifest, "files": files, **({"extra_files": extras} if extras else {})}
        write_atomic(staging / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
        if output.exists():
            old = output.with_name(f".{output.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            output.rename(old)
            staging.rename(output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(output)
        fsync_dir(output.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest
