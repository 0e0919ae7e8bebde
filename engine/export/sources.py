"""Where `engine adopt` reads a ready-made ONNX export from: a local directory, or a Hugging Face Hub repository at
one commit (the `hub` extra; only the files needed are downloaded, into huggingface_hub's cache). Which graph is
adopted, and its bytes made self-contained."""

from __future__ import annotations

import contextlib
import importlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from engine.errors import ExportError
from engine.model.fileio import read_regular
from engine.model.onnx_scan import CorruptGraph, scan_onnx

FP32_GRAPH = "model.onnx"
GRAPH_DIRS = ("", "onnx")  # optimum puts graphs at the root, transformers.js under onnx/
# file name -> precision, as optimum and transformers.js name their variants
VARIANTS = {
    "model.onnx": "fp32",
    "model_quantized.onnx": "int8",
    "model_int8.onnx": "int8",
    "model_uint8.onnx": "int8",
    "model_fp16.onnx": "fp16",
    "model_q4.onnx": "q4",
    "model_q4f16.onnx": "q4f16",
    "model_bnb4.onnx": "bnb4",
}
PUBLISHED_INT8 = ("model_quantized.onnx", "model_int8.onnx", "model_uint8.onnx")  # the first present is compared
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
CONFIG_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class Source:
    """Where the files come from: a local directory, or a Hub repository at one commit, fetched on demand."""

    name: str  # the manifest's `source`: the Hub id, or the directory
    files: tuple[str, ...]  # paths relative to the root, '/'-separated
    fetch: Callable[[str], Path]
    revision: str | None = None  # the Hub commit


def local_source(directory: Path) -> Source:
    root = directory.resolve()
    found = [p for d in GRAPH_DIRS if (root / d).is_dir() for p in (root / d).iterdir() if p.is_file()]
    files = tuple(sorted(p.relative_to(root).as_posix() for p in found))

    def fetch(rel: str) -> Path:
        return root / rel

    return Source(str(root), files, fetch)


def hub_errors() -> tuple[type[Exception], ...]:
    """What huggingface_hub's calls raise when the Hub or the cache cannot answer: OSError and ValueError (its own
    errors derive from these, and so did 0.x's requests errors), and, from 1.x on, the transport errors of its HTTP
    library (httpx; httpx2 in 2.x), which derive from neither: a refused connection or a timeout without
    HF_HUB_OFFLINE=1."""
    errors: list[type[Exception]] = [OSError, ValueError]
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            errors.append(importlib.import_module(name).HTTPError)
    return tuple(errors)


def hub_source(repo: str, revision: str | None) -> Source:
    """The repository's file list and a fetcher; offline (HF_HUB_OFFLINE=1) both come from the local cache."""
    try:
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    except ImportError:
        raise ExportError(
            f"{repo!r} is not a local directory; to adopt from the Hugging Face Hub install the hub extra: "
            "pip install 'offline-textclf-engine[hub]'"
        ) from None
    unreachable = hub_errors()
    try:  # config.json only: the snapshot folder's name is the commit
        folder = Path(snapshot_download(repo, revision=revision, allow_patterns=["config.json"]))
    except unreachable as exc:
        raise ExportError(
            f"cannot get {repo!r} (revision {revision or 'main'}) from the Hugging Face Hub or its local cache: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    commit = folder.name
    try:
        files = tuple(HfApi().list_repo_files(repo, revision=commit))
    except unreachable:  # offline, or no network: what the cache holds
        files = tuple(sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()))

    def fetch(rel: str) -> Path:
        try:
            return Path(hf_hub_download(repo, rel, revision=commit))
        except unreachable as exc:
            raise ExportError(f"cannot download {rel} of {repo}@{commit}: {type(exc).__name__}: {exc}") from exc

    return Source(repo, files, fetch, commit)


def open_source(source: str, revision: str | None) -> Source:
    path = Path(source)
    if path.is_dir():
        return local_source(path)
    if path.exists():
        raise ExportError(f"{source} is a file; SOURCE is an export's directory or a Hugging Face Hub id")
    if not HUB_ID.match(source):
        raise ExportError(f"{source} is neither a directory nor a Hugging Face Hub id (org/name)")
    return hub_source(source, revision)


def graphs(files: Sequence[str]) -> list[str]:
    return [f for f in files if f.endswith(".onnx") and PurePosixPath(f).parent.as_posix() in (".", "onnx")]


def choose(files: Sequence[str], wanted: str | None) -> str:
    """The graph to adopt: --file, else the one fp32 model.onnx, else the only graph; anything else is refused."""
    candidates = graphs(files)
    if wanted:
        rel = PurePosixPath(wanted.replace("\\", "/")).as_posix()
        if rel.startswith(("/", "../")) or "/../" in rel or rel not in files:
            raise ExportError(f"--file {wanted}: no such file in the source; its graphs: {candidates}")
        return rel
    if not candidates:
        raise ExportError("no ONNX graph found: expected model.onnx (optimum) or onnx/model.onnx (transformers.js)")
    fp32 = [g for g in candidates if PurePosixPath(g).name == FP32_GRAPH]
    if len(fp32) == 1:
        return fp32[0]
    if len(candidates) == 1:
        return candidates[0]
    raise ExportError(f"several graphs and no single fp32 model.onnx: choose one with --file from {candidates}")


def sibling(files: Sequence[str], graph: str, names: Sequence[str]) -> str | None:
    """The first of `names` present in the same folder as `graph`."""
    folder = PurePosixPath(graph).parent
    return next((rel for n in names if (rel := (folder / n).as_posix()) in files), None)


def read_json(source: Source, name: str, required: bool) -> dict[str, Any]:
    if name not in source.files:
        if required:
            raise ExportError(
                f"{source.name} has no {name}; an ONNX export needs config.json and tokenizer.json at its root"
            )
        return {}
    path = source.fetch(name)
    try:
        data = json.loads(read_regular(path)[0])
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {name} of {source.name}: {exc}") from exc
    if not isinstance(data, dict):
        raise ExportError(f"{name} of {source.name} is not a JSON object")
    return data


def read_graph(source: Source, rel: str) -> bytes:
    """The graph's bytes, self-contained: external data inside the source is inlined (needs onnx), outside refused."""
    data = read_regular(source.fetch(rel))[0]
    try:
        external = scan_onnx(data).external_tensors
    except CorruptGraph:
        return data  # check_graph says it clearly
    return inline_external_data(source, rel, data) if external else data


def inline_external_data(source: Source, rel: str, data: bytes) -> bytes:
    try:
        import onnx
        from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data
    except ImportError:
        raise ExportError(
            f"{rel} keeps its weights in external data files; inlining them needs onnx: "
            "pip install 'offline-textclf-engine[adopt]'"
        ) from None
    model = onnx.ModelProto.FromString(data)
    folder = PurePosixPath(rel).parent
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        info = ExternalDataInfo(tensor)
        location = PurePosixPath(str(info.location).replace("\\", "/"))
        if location.is_absolute() or ".." in location.parts or not str(location).strip("./"):
            raise ExportError(
                f"{rel}: tensor {tensor.name!r} reads external data from {info.location!r}, outside the export's "
                "directory; refused (external data paths can point anywhere on disk)"
            )
        data_rel = (folder / location).as_posix()
        if data_rel not in source.files:
            raise ExportError(f"{rel}: external data file {data_rel} of tensor {tensor.name!r} is missing")
        with source.fetch(data_rel).open("rb") as f:
            f.seek(info.offset or 0)
            raw = f.read(info.length) if info.length else f.read()
        tensor.raw_data = raw
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    try:
        return bytes(model.SerializeToString())
    except ValueError as exc:  # protobuf's 2 GB limit
        raise ExportError(f"{rel} is over 2 GB with its external data inlined; the engine loads one file") from exc
