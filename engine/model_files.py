"""A model directory made by scripts/export_models.py: manifest, integrity check, run-time description.

Layout: model.onnx, tokenizer.json, manifest.json. The manifest holds everything the run time needs (labels,
problem_type, window, pad id, NLI ids) plus the sha256 of every file, checked at load. The graph's bytes are
hashed and scanned, then released, and onnxruntime reads the file from its path: handing onnxruntime the Python
copy instead held both at once and doubled peak memory and load time (measured: 779 MB and 1.9 s vs 389 MB and
0.7 s for a 243 MB graph). The file's identity (inode, size, change times) is taken when it is read and checked
again after the session is built, so a file replaced or written in between is an IntegrityError, not a silently
different model. (Not a memory map: a file truncated while mapped kills the process with SIGBUS.)
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import IntegrityError, ModelLoadError

MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
FORMAT = "engine-model/1"
TASKS = ("text-classification", "zero-shot-classification")
GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a sequence classifier may take


@dataclass(frozen=True)
class ModelInfo:
    """What the run time needs to know about an exported model."""

    path: Path
    task: str
    model_type: str
    labels: tuple[str, ...]
    problem_type: str | None
    max_length: int
    pad_id: int
    precision: str
    entailment_id: int | None = None
    contradiction_id: int | None = None
    source: str = ""
    pooled_token_id: int | None = None  # BART-family heads pool the last of this token: batch rows by its count

    @property
    def num_labels(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ModelFiles:
    """A verified directory: the description, the graph's path and identity when checked, the tokenizer text."""

    info: ModelInfo
    onnx_path: Path
    onnx_identity: tuple[int, ...]
    tokenizer_json: str
    manifest: dict[str, Any]

    def check_unchanged(self) -> None:
        """Raise IntegrityError if model.onnx was replaced or written since it was verified (call after loading it)."""
        try:
            now = _identity(os.stat(self.onnx_path))
        except OSError:
            now = ()
        if now != self.onnx_identity:
            raise IntegrityError(
                f"{self.onnx_path} changed while it was being loaded; load again once nothing writes to the model "
                "directory."
            )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _cannot_read(path: Path, exc: OSError) -> ModelLoadError:
    if isinstance(exc, FileNotFoundError):
        return ModelLoadError(
            f"{path.name} is missing from {path.parent}; re-export the model with scripts/export_models.py"
        )
    return ModelLoadError(f"cannot read {path}: {exc}; check its permissions or re-export the model")


def _read(path: Path) -> tuple[bytes, tuple[int, ...]]:
    """The file's bytes and its identity when read. Refuses anything but a regular file: a FIFO would block and
    /dev/zero never ends (opened non-blocking, so even a FIFO raced in after the check cannot hang the load)."""
    if path.exists() and not path.is_file():
        raise ModelLoadError(f"{path} is not a regular file; re-export the model")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ModelLoadError(f"{path} is not a regular file; re-export the model")
            return f.read(), _identity(st)
    except OSError as exc:
        raise _cannot_read(path, exc) from exc


def _field(manifest: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    value = manifest.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ModelLoadError(f"{where}: field {key!r} is missing or of the wrong type; re-export the model")
    return value


def _labels(id2label: object, where: Path) -> tuple[str, ...]:
    if not isinstance(id2label, dict) or not id2label:
        raise ModelLoadError(f"{where}: id2label is missing or empty; re-export the model")
    try:
        by_id = {int(k): v for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise ModelLoadError(f"{where}: id2label keys must be integers 0..n-1; re-export the model") from None
    n = max(by_id) + 1
    missing = sorted(set(range(n)) - set(by_id))
    if min(by_id) < 0 or missing or not all(isinstance(v, str) for v in by_id.values()):
        raise ModelLoadError(
            f"{where}: id2label must map every id 0..{n - 1}, and no other, to a string label "
            f"(missing ids: {missing}); re-export the model"
        )
    labels = tuple(by_id[i] for i in range(n))
    if len(set(labels)) != n:
        dupes = sorted({label for label in labels if labels.count(label) > 1})
        raise ModelLoadError(
            f"{where}: id2label names {dupes} more than once, so outputs would be ambiguous; re-export the model"
        )
    return labels


def parse_manifest(path: Path, manifest: dict[str, Any]) -> ModelInfo:
    where = path / MANIFEST
    if manifest.get("format") != FORMAT:
        raise ModelLoadError(
            f"{where}: unknown format {manifest.get('format')!r}, expected {FORMAT!r}; re-export the model"
        )
    task = _field(manifest, "task", str, where)
    if task not in TASKS:
        raise ModelLoadError(f"{where}: unknown task {task!r}; expected one of {TASKS}; re-export the model")
    labels = _labels(manifest.get("id2label"), where)
    problem_type = manifest.get("problem_type")
    if problem_type is not None and not isinstance(problem_type, str):
        raise ModelLoadError(f"{where}: problem_type must be a string or null; re-export the model")
    max_length = _field(manifest, "max_length", int, where)
    if not 2 < max_length <= 1_000_000:
        raise ModelLoadError(f"{where}: max_length {max_length} is not a usable window; re-export the model")
    pad_id = _field(manifest, "pad_token_id", int, where)
    if pad_id < 0:
        raise ModelLoadError(f"{where}: pad_token_id {pad_id} is negative; re-export the model")
    ids: dict[str, int | None] = {}
    for key in ("entailment_id", "contradiction_id"):
        value = manifest.get(key)
        if value is not None and (not isinstance(value, int) or not 0 <= value < len(labels)):
            raise ModelLoadError(f"{where}: {key} {value!r} is not a label id of this model; re-export the model")
        ids[key] = value
    pooled = manifest.get("pooled_token_id")
    if pooled is not None and (isinstance(pooled, bool) or not isinstance(pooled, int) or pooled < 0):
        raise ModelLoadError(f"{where}: pooled_token_id {pooled!r} is not a token id; re-export the model")
    return ModelInfo(
        path=path,
        task=task,
        model_type=_field(manifest, "model_type", str, where),
        labels=labels,
        problem_type=problem_type,
        max_length=max_length,
        pad_id=pad_id,
        precision=_field(manifest, "precision", str, where),
        entailment_id=ids["entailment_id"],
        contradiction_id=ids["contradiction_id"],
        source=str(manifest.get("source", "")),
        pooled_token_id=pooled,
    )


# ONNX graph check ------------------------------------------------------------------------------------------------
# A small reader of the protobuf wire format, so that a graph is checked before onnxruntime parses it and without
# the onnx package at run time. Field numbers are those of onnx/onnx.proto.


class _Corrupt(Exception):
    """The bytes are not a well-formed protobuf message."""


_INT_ELEMS = {6: "int32", 7: "int64"}
_FLOAT_ELEMS = {1: "float", 10: "float16", 11: "double", 16: "bfloat16"}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
# message kind -> {field number: kind of sub-message}, for every path from ModelProto down to a TensorProto
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(buf) and shift < 70:
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos
    raise _Corrupt


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) of one message: an int for a varint, a view of the bytes for a length-delimited field."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: int | memoryview = 0
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (1, 5):  # fixed 64 / 32 bits
            pos += 8 if wire == 1 else 4
        else:  # groups (3, 4) are not used by ONNX; 6 and 7 do not exist
            raise _Corrupt
        if number == 0 or pos > len(buf):
            raise _Corrupt
        yield number, value


def _message(value: int | memoryview) -> memoryview:
    if not isinstance(value, memoryview):
        raise _Corrupt
    return value


def _text(value: int | memoryview) -> str:
    return bytes(_message(value)).decode("utf-8", "replace")


@dataclass(frozen=True)
class GraphValue:
    """A graph input or output: name, ONNX element type, shape (a dim is its size or its symbolic name)."""

    name: str
    elem_type: int
    shape: tuple[int | str, ...] | None  # None: the graph gives no shape


@dataclass(frozen=True)
class GraphSummary:
    inputs: tuple[GraphValue, ...]
    outputs: tuple[GraphValue, ...]
    external_tensors: tuple[str, ...] = field(default=())


def _dim(buf: memoryview) -> int | str:
    for number, value in _fields(buf):
        if number == 1 and isinstance(value, int):
            return value
        if number == 2:
            return _text(value)
    return ""


def _graph_value(buf: memoryview) -> GraphValue:
    """ValueInfoProto: name = 1, type = 2 -> TypeProto.tensor_type = 1 -> elem_type = 1, shape = 2 -> dim = 1."""
    name, elem_type, shape = "", 0, None
    for number, value in _fields(buf):
        if number == 1:
            name = _text(value)
        elif number == 2:
            for t_number, t_value in _fields(_message(value)):
                if t_number != 1:
                    continue
                for e_number, e_value in _fields(_message(t_value)):
                    if e_number == 1 and isinstance(e_value, int):
                        elem_type = e_value
                    elif e_number == 2:
                        shape = tuple(_dim(_message(d)) for n, d in _fields(_message(e_value)) if n == 1)
    return GraphValue(name, elem_type, shape)


def _external_tensors(model: memoryview) -> list[str]:
    """Names of every TensorProto that keeps its data outside the file: initializers, constants and sparse tensors,
    in the main graph, in nested subgraphs (If, Loop, Scan), in functions and in training graphs."""
    found: list[str] = []
    stack: list[tuple[str, memoryview]] = [("model", model)]
    while stack:  # no recursion: a hostile file may nest subgraphs deeper than Python's stack
        kind, buf = stack.pop()
        if kind == "tensor":  # TensorProto: name = 8, external_data = 13, data_location = 14
            fields = list(_fields(buf))
            if any(n == 13 or (n == 14 and v == _EXTERNAL) for n, v in fields):
                found.append(next((_text(v) for n, v in fields if n == 8), "?"))
            continue
        children = _CHILDREN[kind]
        for number, value in _fields(buf):
            if number in children:
                stack.append((children[number], _message(value)))
    return found


def scan_onnx(data: bytes) -> GraphSummary:
    """Inputs, outputs and external-data tensors of a serialized ModelProto. Raises _Corrupt on malformed bytes."""
    model = memoryview(data)
    graphs = [value for number, value in _fields(model) if number == 7]
    if len(graphs) != 1:
        raise _Corrupt
    inputs: list[GraphValue] = []
    outputs: list[GraphValue] = []
    initializers: set[str] = set()
    for number, value in _fields(_message(graphs[0])):  # GraphProto: initializer = 5, input = 11, output = 12
        if number == 11:
            inputs.append(_graph_value(_message(value)))
        elif number == 12:
            outputs.append(_graph_value(_message(value)))
        elif number == 5:
            initializers.update(_text(v) for n, v in _fields(_message(value)) if n == 8)
    # graphs of IR version < 4 also list their initializers as inputs
    feeds = tuple(i for i in inputs if i.name not in initializers)
    return GraphSummary(feeds, tuple(outputs), tuple(_external_tensors(model)))


def _describe(value: GraphValue) -> str:
    kind = _INT_ELEMS.get(value.elem_type) or _FLOAT_ELEMS.get(value.elem_type) or f"element type {value.elem_type}"
    return f"{kind} {list(value.shape) if value.shape is not None else '(no shape)'}"


def check_graph(data: bytes, num_labels: int, where: Path) -> GraphSummary:
    """Refuse a graph that is corrupt, reads external data, or does not look like a sequence classifier with
    `num_labels` outputs, before onnxruntime parses it."""
    try:
        graph = scan_onnx(data)
    except _Corrupt:
        raise ModelLoadError(f"{where} is not a valid ONNX model (truncated or corrupt); re-export the model") from None
    if graph.external_tensors:
        raise ModelLoadError(
            f"{where} keeps tensor(s) {list(graph.external_tensors[:3])} in external data files; the engine loads only "
            "self-contained graphs (external data paths can point anywhere on disk). Re-export the model."
        )
    expected = f"a sequence classifier takes only {', '.join(GRAPH_INPUTS)} as [batch, sequence] integer tensors"
    for value in graph.inputs:
        if (
            value.name not in GRAPH_INPUTS
            or value.elem_type not in _INT_ELEMS
            or (value.shape is not None and len(value.shape) != 2)
        ):
            raise ModelLoadError(
                f"{where} has input {value.name!r} ({_describe(value)}); {expected}. Re-export the model."
            )
    if "input_ids" not in {value.name for value in graph.inputs}:
        raise ModelLoadError(f"{where} has no input_ids input; {expected}. Re-export the model.")
    if not graph.outputs:
        raise ModelLoadError(f"{where} has no output; re-export the model")
    out = next((o for o in graph.outputs if o.name == "logits"), graph.outputs[0])
    if (
        out.elem_type not in _FLOAT_ELEMS
        or out.shape is None
        or len(out.shape) != 2
        or (isinstance(out.shape[1], int) and out.shape[1] != num_labels)
    ):
        raise ModelLoadError(
            f"{where} output {out.name!r} is {_describe(out)}, expected float logits of shape [batch, {num_labels}] "
            f"to match the manifest's {num_labels} labels. Re-export the model."
        )
    return graph


def load(path: str | Path, verify: bool = True) -> ModelFiles:
    """Read and check a model directory. verify=False skips the sha256 check (not recommended)."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(
            f"{path} is not a model directory; make one with `python scripts/export_models.py SOURCE --output {path}`"
        )
    try:
        manifest = json.loads(_read(path / MANIFEST)[0])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path / MANIFEST} is not valid JSON ({exc}); re-export the model") from exc
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"{path / MANIFEST} must be a JSON object; re-export the model")
    info = parse_manifest(path, manifest)
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != {MODEL_FILE, TOKENIZER_FILE}:
        raise ModelLoadError(
            f"{path / MANIFEST}: 'files' must list exactly {MODEL_FILE} and {TOKENIZER_FILE}; re-export the model"
        )
    graph, identity = _read(path / MODEL_FILE)  # released when this returns, before onnxruntime reads the file
    tokenizer, _ = _read(path / TOKENIZER_FILE)
    if verify:
        for name, data in ((MODEL_FILE, graph), (TOKENIZER_FILE, tokenizer)):
            if sha256_bytes(data) != files[name]:
                raise IntegrityError(
                    f"{path / name} does not match the sha256 in its manifest: the file was changed or corrupted "
                    "after export. Re-export the model."
                )
    try:
        tokenizer_json = tokenizer.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{path / TOKENIZER_FILE} is not UTF-8 text; re-export the model") from exc
    check_graph(graph, info.num_labels, path / MODEL_FILE)
    return ModelFiles(info, path / MODEL_FILE, identity, tokenizer_json, manifest)
