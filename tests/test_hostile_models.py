"""Hostile or broken model directories: each is refused at load with a ModelLoadError that says what is wrong,
and, wherever the engine can check it, before onnxruntime sees the graph.

A hostile directory can rewrite its manifest too, so every case here keeps the manifest consistent (the sha256 of
the altered file is rewritten): the check under test is the one that fires, not the integrity check.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import engine.runtime.session
from engine import IntegrityError, ModelLoadError, TextClassifier, ZeroShotClassifier
from engine.model.onnx_scan import check_graph

LABELS = 2  # the bert fixture's NEGATIVE / POSITIVE


@pytest.fixture
def model_dir(exported: Any, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported("bert", "fp32"), tmp_path / "m"))


@pytest.fixture
def ort_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every graph handed to onnxruntime during the test (the real session is still built)."""
    calls: list[Any] = []
    real = engine.runtime.session.ort.InferenceSession

    def spy(model: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(engine.runtime.session.ort, "InferenceSession", spy)
    return calls


def manifest_of(path: Path) -> dict[str, Any]:
    return json.loads((path / "manifest.json").read_text())


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    (path / "manifest.json").write_text(json.dumps(manifest))


def replace_file(path: Path, name: str, data: bytes) -> None:
    """Write a file and rewrite its sha256 in the manifest, as an attacker who controls the directory would."""
    (path / name).write_bytes(data)
    manifest = manifest_of(path)
    manifest["files"][name] = hashlib.sha256(data).hexdigest()
    write_manifest(path, manifest)


def refused(path: Path, match: str, calls: list[Any]) -> ModelLoadError:
    with pytest.raises(ModelLoadError, match=match) as info:
        TextClassifier.load(path)
    assert calls == [], "onnxruntime was handed a graph the loader should have refused"
    assert "re-export" in str(info.value).lower()  # the message says what to do
    return info.value


# Handmade graphs ---------------------------------------------------------------------------------------------------


def value(name: str, elem: int, shape: list[Any] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


INPUTS = [value("input_ids", TensorProto.INT64, ["b", "s"]), value("attention_mask", TensorProto.INT64, ["b", "s"])]


def weight(name: str = "W") -> TensorProto:
    return numpy_helper.from_array(np.array([[0.1, -0.1]], dtype=np.float32), name)


def external(tensor: TensorProto, location: str = "../../../../etc/passwd") -> TensorProto:
    """The same tensor, its data moved to an external file: the traversal vector the loader must refuse."""
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def classifier(
    inputs: list[onnx.ValueInfoProto] | None = None,
    output: onnx.ValueInfoProto | None = None,
    initializers: list[TensorProto] | None = None,
    nodes: list[onnx.NodeProto] | None = None,
    **model_fields: Any,
) -> bytes:
    """logits = sum(attention_mask) @ W: a valid classifier graph with two labels, unless told otherwise."""
    body = [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["mask_f", "axes"], ["length"], keepdims=1),
        helper.make_node("MatMul", ["length", "W"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")]
    graph = helper.make_graph(
        (nodes or []) + body,
        "classifier",
        INPUTS if inputs is None else inputs,
        [output or value("logits", TensorProto.FLOAT, ["b", LABELS])],
        inits + ([weight()] if initializers is None else initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], **model_fields)
    model.ir_version = 8
    return model.SerializeToString()


def constant_w(tensor: TensorProto) -> onnx.NodeProto:
    return helper.make_node("Constant", [], ["W"], value=tensor)


def nested_if(depth: int, leaf: onnx.NodeProto) -> onnx.NodeProto:
    """`depth` Ifs nested in each other's branches, the innermost branch holding `leaf` (which makes W)."""
    node = leaf
    for level in range(depth):
        out = "W" if level == depth - 1 else f"W{level + 1}"
        branch = helper.make_graph([node], f"branch{level}", [], [value(node.output[0], TensorProto.FLOAT, [1, 2])])
        node = helper.make_node("If", ["cond"], [out], then_branch=branch, else_branch=branch)
    return node


def leaf(name: str) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=external(weight(name)))


def with_cond() -> list[TensorProto]:
    return [numpy_helper.from_array(np.array(True), "cond")]


def sparse_external() -> bytes:
    model = onnx.load_from_string(classifier())
    values = external(numpy_helper.from_array(np.array([0.5], dtype=np.float32), "sv"))
    indices = numpy_helper.from_array(np.array([0], dtype=np.int64), "si")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [1, 2]))
    return model.SerializeToString()


def function_external() -> bytes:
    model = onnx.load_from_string(classifier())
    body = helper.make_node("Constant", [], ["y"], value=external(weight("fw")))
    model.functions.append(helper.make_function("custom", "Weights", [], ["y"], [body], [helper.make_opsetid("", 13)]))
    return model.SerializeToString()


EXTERNAL_GRAPHS: dict[str, Callable[[], bytes]] = {
    "initializer": lambda: classifier(initializers=[external(weight())]),
    "initializer, location only in data_location": lambda: classifier(
        initializers=[_located_only(numpy_helper.from_array(np.zeros((1, 2), np.float32), "W"))]
    ),
    "initializer, external_data only": lambda: classifier(initializers=[_entries_only(weight())]),
    "absolute path": lambda: classifier(initializers=[external(weight(), "/etc/shadow")]),
    "constant node": lambda: classifier(initializers=[], nodes=[constant_w(external(weight()))]),
    "If subgraph": lambda: classifier(initializers=with_cond(), nodes=[nested_if(1, leaf("W"))]),
    "subgraph nested 3 deep": lambda: classifier(initializers=with_cond(), nodes=[nested_if(3, leaf("W3"))]),
    "sparse initializer": sparse_external,
    "function body": function_external,
}


def in_weights(tensor: TensorProto, offset: int = 0, length: int | None = None, **extra: str) -> TensorProto:
    """The tensor's data moved to a range of the export's own weights file (model.onnx.data)."""
    size = len(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entries = {"location": "model.onnx.data", "offset": str(offset), "length": str(size if length is None else length)}
    for key, val in [*entries.items(), *extra.items()]:
        entry = tensor.external_data.add()
        entry.key, entry.value = key, val
    return tensor


def with_weights(model_dir: Path, graph: bytes) -> None:
    """The graph, and a weights file holding W's 8 bytes at offset 0, both listed in the manifest."""
    replace_file(model_dir, "model.onnx.data", weight().raw_data)
    replace_file(model_dir, "model.onnx", graph)


def duplicated_location() -> TensorProto:
    tensor = in_weights(weight())
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../../../etc/passwd"  # onnxruntime would read the last one
    return tensor


WEIGHTS_FILE_GRAPHS: dict[str, Callable[[], bytes]] = {  # each names model.onnx.data, yet must be refused
    "range past the end": lambda: classifier(initializers=[in_weights(weight(), offset=4)]),
    "negative offset": lambda: classifier(initializers=[in_weights(weight(), offset=-8)]),
    "an entry besides location, offset, length": lambda: classifier(initializers=[in_weights(weight(), checksum="x")]),
    "location given twice": lambda: classifier(initializers=[duplicated_location()]),
    "constant node": lambda: classifier(initializers=[], nodes=[constant_w(in_weights(weight()))]),
    "If subgraph": lambda: classifier(
        initializers=with_cond(),
        nodes=[nested_if(1, helper.make_node("Constant", [], ["W"], value=in_weights(weight())))],
    ),
}


def _located_only(tensor: TensorProto) -> TensorProto:
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    return tensor


def _entries_only(tensor: TensorProto) -> TensorProto:
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../weights.bin"
    return tensor


def test_handmade_graph_loads_and_classifies(model_dir: Path, ort_calls: list[Any]) -> None:
    """The control for every graph below: the same construction, minus the defect, loads and runs."""
    replace_file(model_dir, "model.onnx", classifier())
    clf = TextClassifier.load(model_dir)
    short, long = clf(["hi", "a much longer text with many more words in it"], top_k=None)
    assert len(ort_calls) == 1
    assert {o.label for o in short} == {"NEGATIVE", "POSITIVE"}
    assert short[0].score != long[0].score  # the graph really ran on the inputs
    nested = classifier(
        initializers=with_cond(), nodes=[nested_if(3, helper.make_node("Constant", [], ["W3"], value=weight("W3")))]
    )
    assert check_graph(nested, LABELS, model_dir).external_tensors == ()


@pytest.mark.parametrize("case", list(EXTERNAL_GRAPHS))
def test_external_data_is_refused_before_onnxruntime(model_dir: Path, ort_calls: list[Any], case: str) -> None:
    replace_file(model_dir, "model.onnx", EXTERNAL_GRAPHS[case]())
    error = refused(model_dir, "external data", ort_calls)
    assert "its own layout" in str(error)


def test_initializers_in_the_weights_file_load_and_classify(model_dir: Path, ort_calls: list[Any]) -> None:
    """The export's own layout: an initializer of the graph read from a range of model.onnx.data."""
    replace_file(model_dir, "model.onnx", classifier())
    expected = TextClassifier.load(model_dir)(["hi", "a longer text"], top_k=None)
    with_weights(model_dir, classifier(initializers=[in_weights(weight())]))
    assert TextClassifier.load(model_dir)(["hi", "a longer text"], top_k=None) == expected
    assert len(ort_calls) == 2


@pytest.mark.parametrize("case", list(WEIGHTS_FILE_GRAPHS))
def test_weights_file_misuse_is_refused_before_onnxruntime(model_dir: Path, ort_calls: list[Any], case: str) -> None:
    with_weights(model_dir, WEIGHTS_FILE_GRAPHS[case]())
    error = refused(model_dir, "external data", ort_calls)
    assert "its own layout" in str(error)


def test_loader_does_not_import_onnx(exported: Any) -> None:
    """The scan reads the protobuf wire format itself: loading a model must not pull in the onnx package."""
    import subprocess
    import sys

    code = (
        "import sys; from engine import TextClassifier; "
        f"TextClassifier.load({str(exported('bert', 'fp32'))!r}); print('onnx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def fixed(elem: int, shape: list[Any] | None, name: str = "input_ids") -> list[onnx.ValueInfoProto]:
    return [value(name, elem, shape), INPUTS[1]]


BAD_INTERFACES: dict[str, tuple[bytes, str]] = {
    "image input": (classifier(inputs=fixed(TensorProto.FLOAT, ["b", 3, 224, 224], "pixel_values")), "pixel_values"),
    "input_ids as float": (classifier(inputs=fixed(TensorProto.FLOAT, ["b", "s"])), "input_ids"),
    "input_ids as string": (classifier(inputs=fixed(TensorProto.STRING, ["b", "s"])), "input_ids"),
    "input_ids of rank 1": (classifier(inputs=fixed(TensorProto.INT64, ["s"])), "input_ids"),
    "unknown extra input": (
        classifier(inputs=[*INPUTS, value("position_ids", TensorProto.INT64, ["b", "s"])]),
        "position_ids",
    ),
    "no input_ids": (classifier(inputs=[INPUTS[1]]), "no input_ids"),
    "output for 5 labels": (classifier(output=value("logits", TensorProto.FLOAT, ["b", 5])), r"\[batch, 2\]"),
    "output of rank 3": (classifier(output=value("logits", TensorProto.FLOAT, ["b", "s", 2])), r"\[batch, 2\]"),
    "output of rank 1": (classifier(output=value("logits", TensorProto.FLOAT, ["b"])), r"\[batch, 2\]"),
    "integer output": (classifier(output=value("logits", TensorProto.INT64, ["b", 2])), "float logits"),
    "output without shape": (classifier(output=value("logits", TensorProto.FLOAT, None)), "no shape"),
}


@pytest.mark.parametrize("case", list(BAD_INTERFACES))
def test_graph_that_is_not_this_task_is_refused_before_onnxruntime(
    model_dir: Path, ort_calls: list[Any], case: str
) -> None:
    data, match = BAD_INTERFACES[case]
    replace_file(model_dir, "model.onnx", data)
    refused(model_dir, match, ort_calls)


def truncated(fraction: float) -> Callable[[bytes], bytes]:
    return lambda data: data[: int(len(data) * fraction)]


CORRUPT_ONNX: dict[str, Callable[[bytes], bytes]] = {
    "empty file": lambda _: b"",
    "cut to 10%": truncated(0.1),
    "cut to 50%": truncated(0.5),
    "cut to 90%": truncated(0.9),
    "last byte missing": lambda data: data[:-1],
    "random bytes": lambda _: np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes(),
    "text file": lambda _: b"this is not an ONNX model\n" * 100,
    "JSON file": lambda _: json.dumps({"graph": {"node": []}}).encode(),
    "header only": lambda data: data[:64],
    "overlong varint": lambda _: b"\x08" + b"\xff" * 20,
    "group wire type": lambda _: b"\x0b\x0c",
    "two graphs": lambda data: data + data,
}


@pytest.mark.parametrize("case", list(CORRUPT_ONNX))
def test_truncated_or_corrupt_onnx_is_refused_before_onnxruntime(
    model_dir: Path, ort_calls: list[Any], case: str
) -> None:
    replace_file(model_dir, "model.onnx", CORRUPT_ONNX[case]((model_dir / "model.onnx").read_bytes()))
    refused(model_dir, "not a valid ONNX model", ort_calls)


BAD_TOKENIZERS: dict[str, bytes] = {
    "not JSON": b"{not json",
    "empty file": b"",
    "JSON but not a tokenizer": b'{"hello": "world"}',
    "JSON array": b"[]",
    "JSON null": b"null",
    "not UTF-8": b"\xff\xfe\x00garbage",
}


@pytest.mark.parametrize("case", list(BAD_TOKENIZERS))
def test_broken_tokenizer_json_is_refused_before_onnxruntime(model_dir: Path, ort_calls: list[Any], case: str) -> None:
    replace_file(model_dir, "tokenizer.json", BAD_TOKENIZERS[case])
    refused(model_dir, "tokenizer.json", ort_calls)


@pytest.mark.parametrize("name", ["model.onnx", "tokenizer.json", "manifest.json"])
def test_missing_file_is_named(model_dir: Path, ort_calls: list[Any], name: str) -> None:
    (model_dir / name).unlink()
    refused(model_dir, name, ort_calls)


def test_changed_tokenizer_is_an_integrity_error(model_dir: Path, ort_calls: list[Any]) -> None:
    """Extends test_model_files (a changed graph byte): a changed vocabulary entry is caught the same way."""
    text = (model_dir / "tokenizer.json").read_text().replace('"good"', '"evil"', 1)
    (model_dir / "tokenizer.json").write_text(text)
    with pytest.raises(IntegrityError, match="sha256"):
        TextClassifier.load(model_dir)
    assert ort_calls == []


BAD_MANIFESTS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "label id missing": (lambda m: m["id2label"].pop("0"), "id2label"),
    "label id not an integer": (lambda m: m["id2label"].update({"x": "OTHER"}), "id2label"),
    "label id negative": (lambda m: m.update(id2label={"-1": "A", "0": "B"}), "id2label"),
    "label not a string": (lambda m: m["id2label"].update({"1": 7}), "id2label"),
    "labels repeated": (lambda m: m.update(id2label={"0": "SAME", "1": "SAME"}), "more than once"),
    "label map empty": (lambda m: m.update(id2label={}), "id2label"),
    "more labels than outputs": (lambda m: m["id2label"].update({"2": "EXTRA"}), r"\[batch, 3\]"),
    "file outside the directory": (lambda m: m["files"].update({"../../secret": "0" * 64}), "files"),
    "files not listed": (lambda m: m.pop("files"), "files"),
    "unknown format": (lambda m: m.update(format="engine-model/99"), "format"),
    "unknown task": (lambda m: m.update(task="image-classification"), "task"),
    "window not an int": (lambda m: m.update(max_length="64"), "max_length"),
    "window a bool": (lambda m: m.update(max_length=True), "max_length"),
    "window absurd": (lambda m: m.update(max_length=10**9), "max_length"),
    "negative pad id": (lambda m: m.update(pad_token_id=-1), "pad_token_id"),
    "entailment id out of range": (lambda m: m.update(entailment_id=5), "entailment_id"),
    "manifest an empty object": (lambda m: m.clear(), "format"),
}


@pytest.mark.parametrize("case", list(BAD_MANIFESTS))
def test_bad_manifest_is_refused_before_onnxruntime(model_dir: Path, ort_calls: list[Any], case: str) -> None:
    change, match = BAD_MANIFESTS[case]
    manifest = manifest_of(model_dir)
    change(manifest)
    write_manifest(model_dir, manifest)
    refused(model_dir, match, ort_calls)


def test_manifest_that_is_not_an_object(model_dir: Path, ort_calls: list[Any]) -> None:
    (model_dir / "manifest.json").write_text("[1, 2, 3]")
    refused(model_dir, "JSON object", ort_calls)


def test_classifier_without_entailment_is_not_a_zero_shot_model(exported: Any) -> None:
    with pytest.raises(ModelLoadError, match="entailment"):
        ZeroShotClassifier.load(exported("bert", "fp32"))


@pytest.mark.parametrize("name", ["model.onnx", "tokenizer.json", "manifest.json"])
@pytest.mark.parametrize("kind", ["endless device", "fifo", "directory"])
def test_special_file_is_refused_without_blocking(model_dir: Path, ort_calls: list[Any], name: str, kind: str) -> None:
    """Reading /dev/zero never ends and opening a FIFO blocks: both must be refused, not read."""
    target = model_dir / name
    target.unlink()
    if kind == "endless device":
        target.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    refused(model_dir, "not a regular file", ort_calls)


def test_symlinked_files_still_load(model_dir: Path, tmp_path: Path) -> None:
    """Caches keep files as symlinks to blobs: a symlink to a regular file is fine (its sha256 is still checked)."""
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for name in ("model.onnx", "tokenizer.json"):
        (model_dir / name).rename(blobs / name)
        (model_dir / name).symlink_to(blobs / name)
    assert TextClassifier.load(model_dir)("fine")[0].label in {"NEGATIVE", "POSITIVE"}
