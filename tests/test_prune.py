"""engine/export/graph/prune.py: the last layer's token-by-token stretch runs on the head's token only, with the same
logits; nothing is pruned where the head reads another token, or where the stretch's tensors are read elsewhere;
the export applies it to every architecture whose head reads token 0 and rows stay independent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.export.graph.prune import prune_to_first_token

H = 8


def toy(head_token: int = 0, expose: str | None = None) -> onnx.ModelProto:
    """x -> a token-mixing step (x + mean over tokens) -> MatMul, Erf, MatMul, residual Add, LayerNorm -> the head's
    Gather of one token -> MatMul: a stand-in for a classifier's last layer after its attention."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(H, 4 * H)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(4 * H, H)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(size=(H, 3)).astype(np.float32), "wc"),
        numpy_helper.from_array(np.ones(H, np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(H, np.float32), "beta"),
        numpy_helper.from_array(np.array(head_token, np.int64), "token"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mix"], axes=[1], keepdims=1),
        helper.make_node("Add", ["x", "mix"], ["a"]),
        helper.make_node("MatMul", ["a", "w1"], ["h"]),
        helper.make_node("Mul", ["h", "half"], ["hs"]),
        helper.make_node("Erf", ["hs"], ["g"]),
        helper.make_node("MatMul", ["g", "w2"], ["m"]),
        helper.make_node("Add", ["m", "a"], ["r"]),
        helper.make_node("LayerNormalization", ["r", "gamma", "beta"], ["n"], axis=-1),
        helper.make_node("Gather", ["n", "token"], ["first"], axis=1),
        helper.make_node("MatMul", ["first", "wc"], ["logits"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 3])]
    if expose:
        outputs.append(helper.make_tensor_value_info(expose, TensorProto.FLOAT, ["B", "L", H]))
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "L", H])], outputs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["logits"], {"x": x})[0])


def test_the_stretch_after_the_mixing_runs_on_token_0_with_the_same_logits() -> None:
    model = toy()
    pruned, matmuls = prune_to_first_token(model)
    assert matmuls == 2  # w1 and w2; the head's own MatMul reads the gathered token already
    slices = [n for n in pruned.graph.node if n.op_type == "Slice"]
    assert sorted(n.input[0] for n in slices) == ["mix", "x"]  # both tensors entering the stretch
    onnx.checker.check_model(pruned)
    x = np.random.default_rng(1).normal(size=(3, 7, H)).astype(np.float32)
    np.testing.assert_allclose(run(pruned, x), run(model, x), rtol=0, atol=1e-6)
    assert len(model.graph.node) == 10  # the input model is left as it was


def test_a_head_reading_another_token_is_not_pruned() -> None:
    model = toy(head_token=1)
    assert prune_to_first_token(model) == (model, 0)


def test_a_stretch_tensor_read_elsewhere_leaves_the_stretch() -> None:
    """The LayerNorm's output is also a graph output: it must keep every token, so nothing before it is pruned."""
    model = toy(expose="n")
    assert prune_to_first_token(model) == (model, 0)
    # the residual `a` is read by the stretch only; a tensor read outside in the middle only shortens it
    model = toy(expose="g")
    pruned, matmuls = prune_to_first_token(model)
    assert matmuls == 1  # w2 alone: h, hs and g keep every token for the exposed output
    x = np.random.default_rng(2).normal(size=(2, 5, H)).astype(np.float32)
    np.testing.assert_allclose(run(pruned, x), run(model, x), rtol=0, atol=1e-6)


def toy_int8(per_token: bool = False) -> onnx.ModelProto:
    """The int8 form the export writes: QuantizeLinear with one static scale (or, per token, a computed one), then
    MatMulIntegerToFloat with per-column weight scales and bias, a residual Add and LayerNorm, the head's Gather."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.integers(-63, 64, size=(H, H)).astype(np.int8), "w8"),
        numpy_helper.from_array(rng.uniform(0.01, 0.02, H).astype(np.float32), "ws"),
        numpy_helper.from_array(rng.normal(size=H).astype(np.float32), "bias"),
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "z"),
        numpy_helper.from_array(np.ones(H, np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(H, np.float32), "beta"),
        numpy_helper.from_array(np.array(0, np.int64), "token"),
        numpy_helper.from_array(rng.normal(size=(H, 3)).astype(np.float32), "wc"),
        numpy_helper.from_array(np.array(1 / 100, np.float32), "per"),
    ]
    scale = ["s"]
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mix"], axes=[1], keepdims=1),
        helper.make_node("Add", ["x", "mix"], ["a"]),
    ]
    if per_token:  # a scale computed from each token's own values, as the per-token groups do
        nodes += [
            helper.make_node("ReduceMax", ["a"], ["amax"], axes=[-1], keepdims=1),
            helper.make_node("Mul", ["amax", "per"], ["a_s"]),
            helper.make_node("Div", ["a", "a_s"], ["a_n"]),
        ]
        scale = ["a_s"]
    nodes += [
        helper.make_node("QuantizeLinear", ["a_n" if per_token else "a", "s", "z"], ["q"]),
        helper.make_node(
            "MatMulIntegerToFloat", ["q", "w8", scale[0], "ws", "z", "", "bias"], ["m"], domain="com.microsoft"
        ),
        helper.make_node("Add", ["m", "a"], ["r"]),
        helper.make_node("LayerNormalization", ["r", "gamma", "beta"], ["n"], axis=-1),
        helper.make_node("Gather", ["n", "token"], ["first"], axis=1),
        helper.make_node("MatMul", ["first", "wc"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "toy_int8",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "L", H])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 3])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def test_the_static_int8_form_is_pruned_with_the_same_logits_and_a_per_token_one_is_not() -> None:
    x = np.random.default_rng(4).normal(size=(3, 6, H)).astype(np.float32)
    model = toy_int8()
    pruned, matmuls = prune_to_first_token(model)
    assert matmuls == 1
    np.testing.assert_allclose(run(pruned, x), run(model, x), rtol=0, atol=1e-5)  # float steps on fewer rows
    per_token = toy_int8(per_token=True)
    assert prune_to_first_token(per_token) == (per_token, 0)  # its scale is computed: the walk ends before it


@pytest.mark.parametrize("name", ["bert", "distilbert", "roberta"])
def test_exports_prune_the_last_layer_and_keep_rows_independent(exported: Any, name: str) -> None:
    pytest.importorskip("transformers")  # the export extra
    from engine.runtime.loaded import LoadedModel
    from engine.runtime.tokenization import Truncation

    for precision in ("fp32", "int8"):
        verification = json.loads((Path(exported(name, precision)) / "manifest.json").read_text())["verification"]
        # the output projection and both feed-forward MatMuls, unless the int8 recipe made one of them per-token
        assert 1 <= verification["first_token_matmuls"] <= 3
        assert verification["first_token_matmuls"] == 3 or precision == "int8"
    path = Path(exported(name, "int8"))
    model = LoadedModel.load(path, threads=1)
    texts = ["short", "a somewhat longer text with more words in it than the first", "x " * 30]
    encoded = model.tokenizer.encode(texts, Truncation())
    batched = model.logits(encoded)
    alone = np.concatenate([model.logits([e]) for e in encoded])
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5)


def test_a_pruned_graph_that_does_not_run_is_not_used(
    checkpoint: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export verifies the pruned graph through the engine's run time; one it cannot load is dropped."""
    pytest.importorskip("transformers")  # the export extra
    from engine.export import export as export_models
    from engine.export import pipeline

    def broken(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
        copy = onnx.ModelProto.FromString(model.SerializeToString())
        copy.graph.node.append(helper.make_node("Slice", ["logits", "nowhere"], ["bad"]))
        return copy, 3

    monkeypatch.setattr(pipeline, "prune_to_first_token", broken)
    said: list[str] = []
    out = tmp_path / "model"
    export_models.export(str(checkpoint("bert")), out, "fp32", log=said.append)
    assert json.loads((out / "manifest.json").read_text())["verification"]["first_token_matmuls"] == 0
    assert "bad" not in [o for n in onnx.load(str(out / "model.onnx")).graph.node for o in n.output]
    assert any("pruned graph does not run" in line for line in said)
