"""engine/export/graph/fuse.py: the export fuses each attention core into onnxruntime's MultiHeadAttention where it
knows the architecture, the fused graph still matches torch (the export checks it) and keeps rows independent of their
batch neighbours; an architecture it does not know, or a fusion that moved the logits, keeps the graph as exported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("transformers")  # the export extra

import onnx
from onnx import numpy_helper

from engine.export import export as export_models
from engine.export import pipeline, quantize
from engine.runtime.loaded import LoadedModel
from engine.runtime.tokenization import Truncation

LAYERS = 2  # every tiny test checkpoint (tests/checkpoints.py)
TEXTS = ["short", "a somewhat longer text with more words in it than the first", "mid length text here", "x " * 40]


def ops(model_dir: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(model_dir / "model.onnx")).graph.node]


def manifest(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "manifest.json").read_text())


@pytest.mark.parametrize("name", ["bert", "distilbert", "roberta"])
def test_known_architectures_are_fused_and_rows_stay_independent(exported: Any, name: str) -> None:
    path = Path(exported(name, "fp32"))
    assert ops(path).count("MultiHeadAttention") == LAYERS
    assert manifest(path)["verification"]["fused_attention_layers"] == LAYERS
    model = LoadedModel.load(path, threads=1)
    encoded = model.tokenizer.encode(TEXTS, Truncation())
    assert len({len(e.ids) for e in encoded}) == len(TEXTS)  # batched, the shorter rows are padded
    batched = model.logits(encoded)
    alone = np.concatenate([model.logits([e]) for e in encoded])
    np.testing.assert_allclose(batched, alone, atol=1e-6, rtol=0)


def test_int8_export_quantizes_around_the_fused_attention(exported: Any) -> None:
    path = Path(exported("bert", "int8"))
    found = ops(path)
    assert found.count("MultiHeadAttention") + found.count("QAttention") == LAYERS  # static Q/K/V: QAttention
    graph = onnx.load(str(path / "model.onnx")).graph
    assert quantize.int8_matmuls(graph) + len(manifest(path)["quantization"]["kept_fp32"]) == 6 * LAYERS


@pytest.mark.parametrize("name", ["bart-nli", "deberta-nli"])
def test_other_architectures_keep_the_exported_graph(exported: Any, name: str) -> None:
    path = Path(exported(name, "fp32"))
    assert "MultiHeadAttention" not in ops(path)
    assert manifest(path)["verification"]["fused_attention_layers"] == 0


def test_a_fusion_that_moves_the_logits_is_not_used(
    checkpoint: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pipeline.fuse_attention

    def damaging(model: Any, config: Any) -> tuple[Any, int]:
        fused, count = real(model, config)
        weight = next(i for i in fused.graph.initializer if len(i.dims) == 2 and i.dims[0] == i.dims[1])
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
        return fused, count

    monkeypatch.setattr(pipeline, "fuse_attention", damaging)
    said: list[str] = []
    out = tmp_path / "model"
    export_models.export(str(checkpoint("bert")), out, "fp32", log=said.append)
    assert "MultiHeadAttention" not in ops(out)
    assert manifest(out)["verification"]["fused_attention_layers"] == 0
    assert any("fused attention moved the logits" in line and "keeping the graph as it was" in line for line in said)


def test_the_fused_graph_declares_its_domain_for_onnx_tools(exported: Any) -> None:
    model = onnx.load(str(Path(exported("bert", "fp32")) / "model.onnx"))
    assert any(o.domain == "com.microsoft" for o in model.opset_import)
    onnx.shape_inference.infer_shapes(model, strict_mode=False)  # raised "No opset import for domain" before


def test_without_the_fusions_dependencies_the_export_says_so_and_goes_on(
    checkpoint: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(model: Any, config: Any) -> tuple[Any, int]:
        raise ImportError("missing 'sympy' (install with: pip install sympy)")

    monkeypatch.setattr(pipeline, "fuse_attention", missing)
    said: list[str] = []
    out = tmp_path / "model"
    export_models.export(str(checkpoint("bert")), out, "fp32", log=said.append)
    assert "MultiHeadAttention" not in ops(out)
    assert any("attention not fused" in line and "sympy" in line for line in said)
