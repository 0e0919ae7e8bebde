"""int8 quantization (scripts/quantize.py): agreement with fp32, row independence, manifest, no int16 saturation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import checkpoints
import numpy as np
import onnx
import pytest

from engine.export import export as export_models
from engine.export import quantize

TINY = ["distilbert", "bert", "roberta", "bert-single", "distilbert-multilabel", "bert-regression"]
MAX_SCORE_DIFF = 0.25  # largest int8-vs-fp32 change of a score (probability units) on the verification inputs
TEXTS = checkpoints.sample_texts()


def manifest(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "manifest.json").read_text())


def runtime_for(model_dir: Path) -> quantize.Runtime:
    m = manifest(model_dir)
    tok = (model_dir / "tokenizer.json").read_text()
    return quantize.Runtime(tok, m["max_length"], m["pad_token_id"], len(m["id2label"]))


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real MiniLM-L6 encoder with a spread head, exported at int8 once for this module."""
    ckpt = checkpoints.minilm_spread(tmp_path_factory.mktemp("minilm-ckpt"))
    out = tmp_path_factory.mktemp("minilm-int8") / "model"
    export_models.export(str(ckpt), out, "int8", log=lambda _msg: None)
    return out


@pytest.mark.parametrize("name", TINY)
def test_tiny_int8_keeps_fp32_decisions(exported: Callable[..., Path], name: str) -> None:
    """Recomputed here, not read from the manifest: int8 and fp32 exports scored by the engine's run time."""
    int8, fp32 = exported(name, "int8"), exported(name, "fp32")
    runtime = runtime_for(int8)
    items: list[quantize.Item] = list(TEXTS)
    ref = runtime.logits((fp32 / "model.onnx").read_bytes(), items)
    got = runtime.logits((int8 / "model.onnx").read_bytes(), items)
    agreement, diff = quantize.compare(ref, got, manifest(int8)["problem_type"])
    assert agreement >= export_models.MIN_INT8_AGREEMENT
    assert diff <= MAX_SCORE_DIFF


def test_manifest_records_recipe_kept_nodes_and_figures(exported: Callable[..., Path]) -> None:
    m = manifest(exported("distilbert", "int8"))
    recipe, v = m["quantization"], m["verification"]
    graph = onnx.load(str(exported("distilbert", "int8") / "model.onnx")).graph
    integer = sum(n.op_type == "MatMulInteger" for n in graph.node)
    assert recipe["int8_matmuls"] == integer
    assert recipe["session_options"] == {}
    kept = set(recipe["kept_fp32"])
    assert kept <= {n.name for n in graph.node if n.op_type == "MatMul"}  # kept nodes really are fp32 MatMuls
    assert v["int8_top1_agreement"] >= v["int8_min_agreement"] == export_models.MIN_INT8_AGREEMENT
    assert v["int8_recipes_tried"][0]["recipe"] == "per-token int8"
    assert v["int8_recipes_tried"][-1]["top1_agreement"] == v["int8_top1_agreement"]
    fp16 = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    assert {f"q8/{table}/e" for table in recipe["fp16_embeddings"]} == fp16  # the manifest names what is fp16


def test_fp16_embeddings_are_the_fp32_model_with_a_rounded_table(exported: Callable[..., Path]) -> None:
    """The lookup rewrite changes nothing but the table's precision: it equals the fp32 graph whose table values
    are rounded to fp16, and that rounding moves the logits far less than int8 MatMuls do."""
    from onnx import numpy_helper

    fp32 = exported("bert", "fp32")
    model = onnx.load(str(fp32 / "model.onnx"))
    lookups = quantize.embedding_targets(model)
    assert any("word_embeddings" in t.weight for t in lookups)
    rewritten = quantize.rewrite(model, exclude=tuple(t.node for t in quantize.targets(model)))
    tables = {t.weight for t in lookups}
    assert not tables & {i.name for i in rewritten.graph.initializer}  # the fp32 tables are gone, not duplicated
    rounded = onnx.ModelProto.FromString(model.SerializeToString())
    for init in rounded.graph.initializer:
        if init.name in tables:
            value = numpy_helper.to_array(init).astype(np.float16).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(value, init.name))
    runtime = runtime_for(fp32)
    items: list[quantize.Item] = list(TEXTS[:40])
    got = runtime.logits(rewritten.SerializeToString(), items)
    np.testing.assert_allclose(got, runtime.logits(rounded.SerializeToString(), items), rtol=0, atol=1e-5)
    assert np.abs(got - runtime.logits(model.SerializeToString(), items)).max() < 1e-2


def quantized_everywhere(exported: Callable[..., Path], name: str) -> tuple[bytes, quantize.Runtime]:
    fp32 = exported(name, "fp32")
    model = quantize.rewrite(onnx.load(str(fp32 / "model.onnx")))
    assert sum(n.op_type == "MatMulInteger" for n in model.graph.node) == len(
        quantize.targets(onnx.load(str(fp32 / "model.onnx")))
    )
    return model.SerializeToString(), runtime_for(fp32)


def test_int8_row_scores_do_not_depend_on_the_batch(exported: Callable[..., Path]) -> None:
    onnx_bytes, runtime = quantized_everywhere(exported, "bert")
    items: list[quantize.Item] = [TEXTS[0], "Meh.", TEXTS[15], "Brilliant.", TEXTS[60]]  # mixed lengths, one batch
    together = runtime.logits(onnx_bytes, items)
    alone = np.stack([runtime.logits(onnx_bytes, [item])[0] for item in items])
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-5)


def test_onnxruntime_dynamic_quantization_is_batch_dependent(exported: Callable[..., Path], tmp_path: Path) -> None:
    """Why the rewrite exists: one activation scale per batch tensor lets neighbours move a row's scores."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = exported("bert", "fp32")
    quantize_dynamic(fp32 / "model.onnx", tmp_path / "dyn.onnx", weight_type=QuantType.QInt8)
    runtime = runtime_for(fp32)
    items: list[quantize.Item] = [TEXTS[0], "Meh.", TEXTS[15], "Brilliant.", TEXTS[60]]
    onnx_bytes = (tmp_path / "dyn.onnx").read_bytes()
    together = runtime.logits(onnx_bytes, items)
    alone = np.stack([runtime.logits(onnx_bytes, [item])[0] for item in items])
    assert np.abs(alone - together).max() > 1e-4


def test_integer_matmul_is_exact_on_real_activations(exported: Callable[..., Path]) -> None:
    """No int16 saturation on this CPU: MatMulInteger's int32 output equals numpy's exact integer product for the
    uint8 activations the graph really computes, and the weights' range rules saturation out on any x86 kernel."""
    import onnxruntime as ort

    fp32 = exported("distilbert", "fp32")
    model = quantize.rewrite(onnx.load(str(fp32 / "model.onnx")))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    mm = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for n in mm for name in (n.input[0], n.output[0]))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    runtime = runtime_for(fp32)
    encoded = runtime.tokenizer.encode(TEXTS[:32], quantize.Truncation())
    batch = next(quantize.batching.batches(encoded, runtime.pad_id))
    feed = {i.name: getattr(batch, i.name) for i in session.get_inputs()}
    names = [name for n in mm for name in (n.input[0], n.output[0])]
    values = dict(zip(names, session.run(names, feed), strict=True))
    for n in mm:
        q, w = values[n.input[0]], inits[n.input[1]]
        assert q.dtype == np.uint8 and w.dtype == np.int8
        assert 2 * 255 * int(np.abs(w.astype(np.int32)).max()) <= 32767  # vpmaddubsw's int16 pair sum cannot overflow
        exact = q.astype(np.int64) @ w.astype(np.int64)
        np.testing.assert_array_equal(values[n.output[0]], exact)


def test_minilm_int8_keeps_decisions_with_int8_matmuls(minilm: Path) -> None:
    m = manifest(minilm)
    v, recipe = m["verification"], m["quantization"]
    assert v["int8_top1_agreement"] >= export_models.MIN_INT8_AGREEMENT
    assert v["int8_max_score_diff"] <= MAX_SCORE_DIFF
    graph = onnx.load(str(minilm / "model.onnx")).graph
    assert recipe["int8_matmuls"] == sum(n.op_type == "MatMulInteger" for n in graph.node) >= 18  # at least half
    assert recipe["fp16_embeddings"] == [
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.position_embeddings.weight",
    ]
    runtime = runtime_for(minilm)
    items: list[quantize.Item] = [TEXTS[3], "Meh.", TEXTS[100], TEXTS[7]]
    onnx_bytes = (minilm / "model.onnx").read_bytes()
    together = runtime.logits(onnx_bytes, items)
    alone = np.stack([runtime.logits(onnx_bytes, [item])[0] for item in items])
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-5)
