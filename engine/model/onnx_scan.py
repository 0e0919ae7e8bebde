"""The ONNX graph check: a small reader of the protobuf wire format, so that a graph is checked before
onnxruntime parses it, and without the onnx package at run time. Field numbers are those of onnx/onnx.proto.

This is the security-critical parser (a model directory may come from anywhere): every malformed input must end
as ModelLoadError (tests/test_onnx_scan.py feeds it arbitrary bytes), and it never recurses, so a hostile file
cannot exhaust Python's stack with nested subgraphs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import ModelLoadError

GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a sequence classifier may take


class CorruptGraph(Exception):
    """The bytes are not a well-formed protobuf message."""


_INT_ELEMS = {6: "int32", 7: "int64"}
_FLOAT_ELEMS = {1: "float", 10: "float16", 11: "double", 16: "bfloat16"}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
# message kind -> {field number: kind of sub-message}, for every path from ModelProto down to a TensorProto
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "main", 20: "training", 25: "function"},
    "main": {1: "node", 5: "initializer", 15: "sparse"},  # the model's graph: its initializers may be external
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
    raise CorruptGraph


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
            raise CorruptGraph
        if number == 0 or pos > len(buf):
            raise CorruptGraph
        yield number, value


def _message(value: int | memoryview) -> memoryview:
    if not isinstance(value, memoryview):
        raise CorruptGraph
    return value


def _string(value: int | memoryview) -> str:
    return bytes(_message(value)).decode("utf-8", "replace")


@dataclass(frozen=True)
class GraphValue:
    """A graph input or output: name, ONNX element type, shape (a dim is its size or its symbolic name)."""

    name: str
    elem_type: int
    shape: tuple[int | str, ...] | None  # None: the graph gives no shape


@dataclass(frozen=True)
class ExternalTensor:
    """A tensor whose data lives in another file: where it sits in the graph ("initializer" of the model's graph,
    else "other") and its external_data entries (location, offset, length, ...)."""

    name: str
    kind: str
    entries: tuple[tuple[str, str], ...]

    def entry(self, key: str) -> str | None:
        return next((v for k, v in self.entries if k == key), None)


@dataclass(frozen=True)
class GraphSummary:
    inputs: tuple[GraphValue, ...]
    outputs: tuple[GraphValue, ...]
    external_tensors: tuple[ExternalTensor, ...] = field(default=())


def _dim(buf: memoryview) -> int | str:
    for number, value in _fields(buf):
        if number == 1 and isinstance(value, int):
            return value
        if number == 2:
            return _string(value)
    return ""


def _graph_value(buf: memoryview) -> GraphValue:
    """ValueInfoProto: name = 1, type = 2 -> TypeProto.tensor_type = 1 -> elem_type = 1, shape = 2 -> dim = 1."""
    name, elem_type, shape = "", 0, None
    for number, value in _fields(buf):
        if number == 1:
            name = _string(value)
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


def _entry(buf: memoryview) -> tuple[str, str]:
    """StringStringEntryProto: key = 1, value = 2."""
    fields = dict(_fields(buf))
    return _string(fields.get(1, memoryview(b""))), _string(fields.get(2, memoryview(b"")))


def _external_tensors(model: memoryview) -> list[ExternalTensor]:
    """Every TensorProto that keeps its data outside the file: initializers, constants and sparse tensors, in the
    main graph, in nested subgraphs (If, Loop, Scan), in functions and in training graphs."""
    found: list[ExternalTensor] = []
    stack: list[tuple[str, memoryview]] = [("model", model)]
    while stack:  # no recursion: a hostile file may nest subgraphs deeper than Python's stack
        kind, buf = stack.pop()
        if kind in ("tensor", "initializer"):  # TensorProto: name = 8, external_data = 13, data_location = 14
            fields = list(_fields(buf))
            if any(n == 13 or (n == 14 and v == _EXTERNAL) for n, v in fields):
                name = next((_string(v) for n, v in fields if n == 8), "?")
                entries = tuple(_entry(_message(v)) for n, v in fields if n == 13)
                found.append(ExternalTensor(name, "initializer" if kind == "initializer" else "other", entries))
            continue
        children = _CHILDREN[kind]
        for number, value in _fields(buf):
            if number in children:
                stack.append((children[number], _message(value)))
    return found


def scan_onnx(data: bytes) -> GraphSummary:
    """Inputs, outputs and external-data tensors of a serialized ModelProto. Raises CorruptGraph on malformed bytes."""
    model = memoryview(data)
    graphs = [value for number, value in _fields(model) if number == 7]
    if len(graphs) != 1:
        raise CorruptGraph
    inputs: list[GraphValue] = []
    outputs: list[GraphValue] = []
    initializers: set[str] = set()
    for number, value in _fields(_message(graphs[0])):  # GraphProto: initializer = 5, input = 11, output = 12
        if number == 11:
            inputs.append(_graph_value(_message(value)))
        elif number == 12:
            outputs.append(_graph_value(_message(value)))
        elif number == 5:
            initializers.update(_string(v) for n, v in _fields(_message(value)) if n == 8)
    # graphs of IR version < 4 also list their initializers as inputs
    feeds = tuple(i for i in inputs if i.name not in initializers)
    return GraphSummary(feeds, tuple(outputs), tuple(_external_tensors(model)))


def _describe(value: GraphValue) -> str:
    kind = _INT_ELEMS.get(value.elem_type) or _FLOAT_ELEMS.get(value.elem_type) or f"element type {value.elem_type}"
    return f"{kind} {list(value.shape) if value.shape is not None else '(no shape)'}"


def _external_refusal(tensor: ExternalTensor, data_file: str | None, data_size: int) -> str | None:
    """Why an external tensor is refused, or None. Allowed: an initializer of the model's graph whose bytes are a
    range inside the export's own data file (external data paths can point anywhere on disk)."""
    if data_file is None:
        return "the manifest lists no weights file"
    if tensor.kind != "initializer":
        return "only the graph's initializers may be external"
    keys = [k for k, _ in tensor.entries]
    known = {"location", "offset", "length"}
    if tensor.entry("location") != data_file or len(set(keys)) != len(keys) or set(keys) - known:
        return f"its data must be in {data_file}, given by location, offset and length only"
    try:
        offset, length = int(tensor.entry("offset") or 0), int(tensor.entry("length") or -1)
    except ValueError:
        return "its offset or length is not a number"
    if offset < 0 or length < 0 or offset + length > data_size:
        return f"its range (offset {offset}, length {length}) is not inside {data_file} ({data_size} bytes)"
    return None


def check_graph(
    data: bytes, num_labels: int, where: Path, data_file: str | None = None, data_size: int = 0
) -> GraphSummary:
    """Refuse a graph that is corrupt, reads external data other than ranges of `data_file` (the export's own
    weights file, `data_size` bytes, beside the graph), or does not look like a sequence classifier with
    `num_labels` outputs, before onnxruntime parses it."""
    try:
        graph = scan_onnx(data)
    except CorruptGraph:
        raise ModelLoadError(f"{where} is not a valid ONNX model (truncated or corrupt); re-export the model") from None
    for tensor in graph.external_tensors:
        why = _external_refusal(tensor, data_file, data_size)
        if why is not None:
            raise ModelLoadError(
                f"{where} keeps tensor {tensor.name!r} in external data ({dict(tensor.entries)}): {why}. The engine "
                "loads only its own layout (external data paths can point anywhere on disk). Re-export the model."
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
