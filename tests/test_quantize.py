"""int8 quantization (engine/export/quantize.py): agreement with fp32, row independence, no int16 saturation."""

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
from engine.runtime import batching
from engine.runtime.tokenization import Truncation

TINY = ["distilbert", "bert", "roberta", "bert-single", "distilbert-multilabel", "bert-regression"]
MAX_SCORE_DIFF = 0.25  # largest int8-vs-fp32 change of a score (probability units) on the verification inputs
# a regression score is a raw logit (spread std ~3 in the tiny checkpoints), not a probability: its own unit
MAX_SCORE_DIFF_REGRESSION = 0.5
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
    # the texts its gate measured (both splits): tiny random models' near ties flip more on texts beyond them
    items: list[quantize.Item] = list(export_models.verification_inputs(None, pairs=False, nli=False))
    ref = runtime.logits(whole_graph(fp32), items)
    got = runtime.logits(whole_graph(int8), items)
    # the decisions its gate counts: clear ones (engine/export/gate.py), near-ties left out
    agreement, diff = quantize.compare(ref, got, manifest(int8)["problem_type"], near_ties=False)
    assert agreement >= export_models.MIN_INT8_AGREEMENT
    assert diff <= (MAX_SCORE_DIFF_REGRESSION if name == "bert-regression" else MAX_SCORE_DIFF)


def whole_graph(directory: Path) -> bytes:
    """An export's graph as one self-contained ModelProto (its large tensors read back from model.onnx.data)."""
    return onnx.load(str(directory / "model.onnx")).SerializeToString()


def integer_matmuls(graph: Any) -> list[Any]:
    return [n for n in graph.node if n.op_type == "MatMulIntegerToFloat"]


def static_inputs(graph: Any) -> set[str]:
    """Quantized inputs whose scale is a constant (calibrated), not computed per token."""
    inits = {i.name for i in graph.initializer}
    constant = {n.input[0] for n in integer_matmuls(graph) if n.input[2] in inits}
    constant |= {n.input[0] for n in graph.node if n.op_type == "QAttention" and n.input[3] in inits}
    return {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear" and n.output[0] in constant}


def test_manifest_records_recipe_kept_nodes_and_figures(exported: Callable[..., Path]) -> None:
    m = manifest(exported("distilbert", "int8"))
    recipe, v = m["quantization"], m["verification"]
    graph = onnx.load(str(exported("distilbert", "int8") / "model.onnx")).graph
    assert recipe["int8_matmuls"] == quantize.int8_matmuls(graph)
    assert recipe["int8_matmuls"] == len(recipe["static_matmuls"]) + len(recipe["dynamic_matmuls"])
    assert recipe["session_options"] == {}
    kept = set(recipe["kept_fp32"])
    assert kept <= {n.name for n in graph.node if n.op_type == "MatMul"}  # kept nodes really are fp32 MatMuls
    assert v["int8_top1_agreement"] >= v["int8_min_agreement"] == export_models.MIN_INT8_AGREEMENT
    assert v["int8_recipes_tried"][0]["recipe"] == "int8, static scales"
    final = [t for t in v["int8_recipes_tried"] if t["recipe"] == recipe["name"]][-1]
    assert final["top1_agreement"] == v["int8_top1_agreement"]
    fp16 = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    assert {f"q8/{table}/e" for table in recipe["fp16_embeddings"]} == fp16  # the manifest names what is fp16
    eight = {n.input[0] for n in graph.node if n.op_type == "GatherBlockQuantized"}
    assert {f"q8/{table}/e8" for table in recipe["int8_embeddings"]} == eight  # and what is 8-bit


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


def test_8bit_embeddings_are_the_fp32_model_with_block_rounded_tables(exported: Callable[..., Path]) -> None:
    """An 8-bit table (GatherBlockQuantized) changes nothing but the table's values: it equals the fp32 graph whose
    table holds the same int8 blocks times their scales, and it stores a quarter of fp32's bytes (plus scales)."""
    from onnx import numpy_helper

    fp32 = exported("bert", "fp32")
    model = onnx.load(str(fp32 / "model.onnx"))
    tables = sorted({t.weight for t in quantize.embedding_targets(model)})
    rewritten = quantize.rewrite(model, tuple(t.node for t in quantize.targets(model)), embeddings8=tables)
    stored = {i.name: i for i in rewritten.graph.initializer}
    assert {n.op_type for n in rewritten.graph.node} >= {"GatherBlockQuantized"}
    assert not set(tables) & set(stored)
    rounded = onnx.ModelProto.FromString(model.SerializeToString())
    for init in rounded.graph.initializer:
        if init.name in tables:
            value = numpy_helper.to_array(init)
            block = quantize.embedding_block(value.shape[1])
            assert block is not None
            q, scale = quantize.quantize_blocks(value, block)
            assert numpy_helper.to_array(stored[f"q8/{init.name}/e8"]).tobytes() == q.tobytes()
            assert q.nbytes == value.nbytes // 4
            assert np.abs(q.astype(np.int32) - 128).max() <= 127
            back = (q.astype(np.float32) - 128).reshape(*q.shape[:1], -1, block) * scale[..., None]
            assert np.abs(back.reshape(value.shape) - value).max() <= scale.max() / 2 + 1e-7
            init.CopyFrom(numpy_helper.from_array(back.reshape(value.shape).astype(np.float32), init.name))
    runtime = runtime_for(fp32)
    items: list[quantize.Item] = list(TEXTS[:40])
    got = runtime.logits(rewritten.SerializeToString(), items)
    np.testing.assert_allclose(got, runtime.logits(rounded.SerializeToString(), items), rtol=0, atol=1e-5)


def test_smoothing_evens_out_channels_by_moving_them_into_the_weights() -> None:
    """With equal weight rows, s = amax^alpha, so a 1000x outlier channel becomes 1000^(1 - alpha) of the others
    after x / s, and (x / s)(s W) is x W."""
    lo = np.array([-1.0, -2.0, -1000.0, -0.5], np.float32)
    r = quantize.Range(lo, -lo / 2)
    w = np.ones((4, 3), np.float32)
    s = quantize.smoothing(r, [w, 2 * w])
    amax = np.maximum(np.abs(r.lo), np.abs(r.hi))
    assert np.isclose(np.exp(np.log(s).mean()), 1.0, rtol=1e-5)  # geometric mean 1: the scales stay in range
    spread = (amax / s).max() / (amax / s).min()
    assert np.isclose(spread, (amax.max() / amax.min()) ** (1 - quantize.SMOOTHING), rtol=1e-4)
    x = np.random.default_rng(0).uniform(r.lo, r.hi, size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose((x / s) @ (s[:, None] * w), x @ w, rtol=1e-5)


class ScriptedRuntime(quantize.Runtime):
    """The real ranges, but logits that keep the reference exactly when `passes(graph)` and flip every decision
    otherwise: the search's control flow, without its dependence on how a tiny model's int8 happens to round."""

    def __init__(self, real: quantize.Runtime, reference: np.ndarray, passes: Callable[[Any], bool]) -> None:
        self.__dict__.update(real.__dict__)
        self.reference, self.passes = reference, passes

    def logits(self, onnx_bytes: bytes, items: Any) -> np.ndarray:
        rows = self.reference[: len(items)]
        return rows if self.passes(onnx.ModelProto.FromString(onnx_bytes)) else -rows


LOW_PRECISION = {onnx.TensorProto.UINT8, onnx.TensorProto.INT8, onnx.TensorProto.FLOAT16}


def ops(model: Any) -> set[str]:
    return {n.op_type for n in model.graph.node}


@pytest.mark.parametrize(
    ("passes", "name", "tried"),
    [
        (lambda m: True, "int8, static scales, 8-bit embeddings", 2),
        (
            lambda m: any("smooth" in n.output[0] for n in m.graph.node) and "GatherBlockQuantized" not in ops(m),
            "int8, smoothed static scales",
            3,
        ),
        (
            lambda m: not {i.data_type for i in m.graph.initializer} & LOW_PRECISION,
            "fp32 (no int8 recipe kept the decisions)",
            None,
        ),
    ],
)
def test_search_takes_the_first_form_that_passes(
    exported: Callable[..., Path], tmp_path: Path, passes: Callable[[Any], bool], name: str, tried: int | None
) -> None:
    """static, then smoothed static, then per-token (with fp32 groups if need be), then the mix; 8-bit embedding
    tables only when the chosen graph still passes with them."""
    fp32 = exported("bert", "fp32")
    items: list[quantize.Item] = list(TEXTS[:30])
    reference = runtime_for(fp32).logits(whole_graph(fp32), items)
    runtime = ScriptedRuntime(runtime_for(fp32), reference, passes)
    config = type("Config", (), {"problem_type": None})()
    result = quantize.search(fp32 / "model.onnx", reference, items, runtime, config, tmp_path, 0.99, log=print)
    assert result.recipe["name"] == name
    assert passes(onnx.load(str(result.path)))
    if tried is not None:
        assert len(result.figures["int8_recipes_tried"]) == tried
    if "smoothed" in name:
        assert result.recipe["smoothing"] != "none"
        assert result.recipe["int8_embeddings"] == []
    if name.startswith("fp32"):
        assert result.recipe["int8_matmuls"] == 0


def quantized_everywhere(
    exported: Callable[..., Path], name: str, scales: str = "dynamic"
) -> tuple[Any, quantize.Runtime]:
    """Every MatMul int8 with per-token scales ("dynamic"), calibrated ones ("static"; "smoothed": after
    per-channel smoothing), or every other group each way ("mixed")."""
    fp32 = exported(name, "fp32")
    model = onnx.load(str(fp32 / "model.onnx"))
    runtime = runtime_for(fp32)
    inputs = list(dict.fromkeys(t.input for t in quantize.targets(model)))
    chosen = {"dynamic": [], "static": inputs, "smoothed": inputs, "mixed": inputs[::2]}[scales]
    ranges = runtime.ranges(model, chosen, list(TEXTS[:40]))
    rewritten = quantize.rewrite(model, ranges=ranges, smooth=scales == "smoothed")
    assert quantize.int8_matmuls(rewritten.graph) == len(quantize.targets(model))
    smoothers = {
        n.output[0]: n.input[0] for n in rewritten.graph.node if n.op_type == "Mul" and "smooth" in n.output[0]
    }
    assert {smoothers.get(x, x) for x in static_inputs(rewritten.graph)} == set(chosen)
    attention = {n.output[0] for n in rewritten.graph.node if n.op_type == "QAttention"}
    folded = {i for n in rewritten.graph.node if n.op_type == "QuantizeLinear" for i in n.input} & attention
    if scales == "smoothed":  # each smoothing Mul, or its factor folded into the V scales of the QAttention
        assert len(smoothers) + len(folded) == len(chosen)
    else:
        assert not smoothers
    return rewritten, runtime


@pytest.mark.parametrize("scales", ["dynamic", "static", "smoothed", "mixed"])
def test_int8_row_scores_do_not_depend_on_the_batch(exported: Callable[..., Path], scales: str) -> None:
    model, runtime = quantized_everywhere(exported, "bert", scales)
    onnx_bytes = model.SerializeToString()
    items: list[quantize.Item] = [TEXTS[0], "Meh.", TEXTS[15], "Brilliant.", TEXTS[60]]  # mixed lengths, one batch
    together = runtime.logits(onnx_bytes, items)
    alone = np.stack([runtime.logits(onnx_bytes, [item])[0] for item in items])
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-5)


def test_static_scales_cover_the_calibrated_range(exported: Callable[..., Path]) -> None:
    """A static input's scale and zero point map its calibrated [min, max] (widened to 0) onto 0..255."""
    model, runtime = quantized_everywhere(exported, "distilbert", "static")
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    fp32 = onnx.load(str(exported("distilbert", "fp32") / "model.onnx"))
    ranges = runtime.ranges(fp32, sorted(static_inputs(model.graph)), list(TEXTS[:40]))
    quantizers = {n.input[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear"}
    for name, r in ranges.items():
        lo, hi = float(r.lo.min()), float(r.hi.max())
        scale, zero = inits[quantizers[name].input[1]], inits[quantizers[name].input[2]]
        assert scale.shape == ()
        assert zero.dtype == np.uint8
        assert (0 - float(zero)) * scale <= min(lo, 0) + scale / 2
        assert (255 - float(zero)) * scale >= max(hi, 0) - scale / 2


def test_per_token_quantization_is_each_tokens_own_range(exported: Callable[..., Path]) -> None:
    """A per-token group's uint8 codes and step reproduce every token's values, less the token's minimum, to half a
    step, the step spanning that token's own range in 255 steps: one blocked QuantizeLinear per token row."""
    import onnxruntime as ort

    model, runtime = quantized_everywhere(exported, "distilbert", "dynamic")
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantizers
    assert all(next(a.i for a in n.attribute if a.name == "block_size") > 1 for n in quantizers)
    probed = list(dict.fromkeys(name for n in quantizers for name in (*n.input, n.output[0])))
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in probed)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    encoded = runtime.tokenizer.encode(TEXTS[:16], Truncation())
    batch = next(batching.batches(encoded, runtime.pad_id))
    feed = {i.name: getattr(batch, i.name) for i in session.get_inputs()}
    values = dict(zip(probed, session.run(probed, feed), strict=True))
    for n in quantizers:
        shifted, step, q = (values[name] for name in (n.input[0], n.input[1], n.output[0]))
        assert len(n.input) == 2
        assert q.dtype == np.uint8
        assert step.shape == (*shifted.shape[:-1], 1)
        assert np.all(shifted.min(-1) == 0)  # x - the token's minimum
        np.testing.assert_allclose(step, np.maximum(shifted.max(-1, keepdims=True), 1e-12) / 255, rtol=1e-6)
        back = q.astype(np.float32) * step
        assert np.all(np.abs(back - shifted) <= step / 2 * (1 + 1e-4) + 1e-7)


def test_onnxruntime_dynamic_quantization_is_batch_dependent(exported: Callable[..., Path], tmp_path: Path) -> None:
    """Why the rewrite exists: one activation scale per batch tensor lets neighbours move a row's scores."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = exported("bert", "fp32")
    # DefaultTensorType: onnx's shape inference gives no type after the export's fused attention (a contrib op)
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    quantize_dynamic(fp32 / "model.onnx", tmp_path / "dyn.onnx", weight_type=QuantType.QInt8, extra_options=extra)
    runtime = runtime_for(fp32)
    items: list[quantize.Item] = [TEXTS[0], "Meh.", TEXTS[15], "Brilliant.", TEXTS[60]]
    onnx_bytes = (tmp_path / "dyn.onnx").read_bytes()
    together = runtime.logits(onnx_bytes, items)
    alone = np.stack([runtime.logits(onnx_bytes, [item])[0] for item in items])
    assert np.abs(alone - together).max() > 1e-4


@pytest.mark.parametrize("name", ["bert", "distilbert"])
def test_fused_qkv_attention_is_bit_identical_to_the_separate_nodes(
    exported: Callable[..., Path], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Static Q/K/V projections and their attention become one QAttention per layer, with the very same scores as
    the three MatMulIntegerToFloat + MultiHeadAttention it replaces, batched and alone; per-token groups stay as
    they are."""
    fused, runtime = quantized_everywhere(exported, name, "mixed")
    monkeypatch.setattr(quantize.passes, "fuse_qkv", lambda graph: 0)
    separate, _ = quantized_everywhere(exported, name, "mixed")
    dynamic, _ = quantized_everywhere(exported, name, "dynamic")
    kinds = {
        label: [n.op_type for n in m.graph.node if "Attention" in n.op_type]
        for label, m in (("fused", fused), ("separate", separate), ("dynamic", dynamic))
    }
    assert kinds["fused"] == ["QAttention"] * 2  # every Q/K/V group of "mixed" is static; 2 layers
    assert kinds["separate"] == kinds["dynamic"] == ["MultiHeadAttention"] * 2
    items: list[quantize.Item] = [TEXTS[0], "Meh.", TEXTS[15], TEXTS[60]]
    for batch in (items, items[1:2]):
        a, b = (runtime.logits(m.SerializeToString(), batch) for m in (fused, separate))
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["bert", "distilbert"])
def test_attention_smoothing_folds_into_the_v_columns(
    exported: Callable[..., Path], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The smoothing Mul after each QAttention goes into V's weight scales and bias: the same scores up to float
    rounding, batched and alone; a Mul whose input has another reader stays."""
    folded, runtime = quantized_everywhere(exported, name, "smoothed")
    monkeypatch.setattr(quantize.passes, "fold_attention_smoothing", lambda graph: 0)
    smoothed, _ = quantized_everywhere(exported, name, "smoothed")
    monkeypatch.undo()
    muls = [sum(n.op_type == "Mul" for n in m.graph.node) for m in (smoothed, folded)]
    # the fixture's fp32 export is pruned: its last attention output reaches its Mul through the first-token Slice
    assert muls[1] == muls[0] - 1
    items: list[quantize.Item] = [TEXTS[0], "Meh.", TEXTS[15], TEXTS[60]]
    for batch in (items, items[1:2]):
        a, b = (runtime.logits(m.SerializeToString(), batch) for m in (folded, smoothed))
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-3 * float(np.abs(b).max()))
    again = onnx.ModelProto.FromString(smoothed.SerializeToString())
    assert quantize.fold_attention_smoothing(again.graph) == 1
    shared = onnx.ModelProto.FromString(smoothed.SerializeToString())
    for attention in [n for n in shared.graph.node if n.op_type == "QAttention"]:
        shared.graph.output.append(
            onnx.helper.make_tensor_value_info(attention.output[0], onnx.TensorProto.FLOAT, None)
        )
    assert quantize.fold_attention_smoothing(shared.graph) == 0


def test_qkv_fusion_needs_the_int32_mask_and_the_attributes_it_knows(
    exported: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quantize.passes, "fuse_qkv", lambda graph: 0)
    separate, _ = quantized_everywhere(exported, "bert", "static")
    monkeypatch.undo()
    assert quantize.fuse_qkv(onnx.ModelProto.FromString(separate.SerializeToString()).graph) == 2
    int64_mask = onnx.ModelProto.FromString(separate.SerializeToString())
    cast = next(n for n in int64_mask.graph.node if n.op_type == "Cast" and n.output[0].startswith("attention_mask"))
    next(a for a in cast.attribute if a.name == "to").i = onnx.TensorProto.INT64
    assert quantize.fuse_qkv(int64_mask.graph) == 0
    unknown = onnx.ModelProto.FromString(separate.SerializeToString())
    for node in unknown.graph.node:
        if node.op_type == "MultiHeadAttention":
            node.attribute.append(onnx.helper.make_attribute("unidirectional", 1))
    assert quantize.fuse_qkv(unknown.graph) == 0


@pytest.mark.parametrize("scales", ["dynamic", "static", "smoothed"])
def test_integer_matmul_is_exact_on_real_activations(exported: Callable[..., Path], scales: str) -> None:
    """No int16 saturation on this CPU: MatMulIntegerToFloat's output equals numpy's exact integer product of the
    uint8 activations the graph really computes, times the scales (plus the bias it fuses), and the weights' range
    rules saturation out on any x86 kernel (a saturated pair sum would be off by thousands of units)."""
    import onnxruntime as ort

    model, runtime = quantized_everywhere(exported, "distilbert", scales)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    mm = integer_matmuls(model.graph)
    probed = list(dict.fromkeys(name for n in mm for name in (n.input[0], n.input[2], n.output[0])))
    probed = [name for name in probed if name not in inits]
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in probed)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    encoded = runtime.tokenizer.encode(TEXTS[:32], Truncation())
    batch = next(batching.batches(encoded, runtime.pad_id))
    feed = {i.name: getattr(batch, i.name) for i in session.get_inputs()}
    values = inits | dict(zip(probed, session.run(probed, feed), strict=True))
    for n in mm:
        q, w, a_scale, w_scale, zero = (values[name] for name in n.input[:5])
        assert q.dtype == np.uint8
        assert w.dtype == np.int8
        assert 2 * 255 * int(np.abs(w.astype(np.int32)).max()) <= 32767  # vpmaddubsw's int16 pair sum cannot overflow
        exact = (q.astype(np.int64) - int(zero)) @ w.astype(np.int64)
        expected = exact * a_scale.astype(np.float64) * w_scale.astype(np.float64)
        if len(n.input) > 6:
            expected = expected + values[n.input[6]]
        unit = float(np.abs(a_scale).max() * np.abs(w_scale).max())  # one integer step of the product
        np.testing.assert_allclose(values[n.output[0]], expected, rtol=1e-5, atol=unit)


def test_minilm_int8_keeps_decisions_with_int8_matmuls(minilm: Path) -> None:
    m = manifest(minilm)
    v, recipe = m["verification"], m["quantization"]
    assert v["int8_top1_agreement"] >= export_models.MIN_INT8_AGREEMENT
    assert v["int8_max_score_diff"] <= MAX_SCORE_DIFF
    graph = onnx.load(str(minilm / "model.onnx")).graph
    # a random head on the real encoder: near-tied decisions, so the gate keeps many groups fp32 (16 of 36 int8 here)
    assert recipe["int8_matmuls"] == quantize.int8_matmuls(graph) >= 12
    assert recipe["fp16_embeddings"] + recipe["int8_embeddings"] == [
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.position_embeddings.weight",
    ]
    runtime = runtime_for(minilm)
    items: list[quantize.Item] = [TEXTS[3], "Meh.", TEXTS[100], TEXTS[7]]
    onnx_bytes = whole_graph(minilm)
    together = runtime.logits(onnx_bytes, items)
    alone = np.stack([runtime.logits(onnx_bytes, [item])[0] for item in items])
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-5)


@pytest.mark.parametrize("bound", [0.0, 1.0])
def test_search_meets_its_bound_with_static_scales_first(
    exported: Callable[..., Path], tmp_path: Path, bound: float
) -> None:
    """Bound 0: every MatMul gets a static scale (the fastest form). Bound 1: whatever mix of static, per-token and
    fp32 groups the search ends with keeps every decision, and the recipe accounts for every MatMul once."""
    fp32 = exported("bert", "fp32")
    runtime = runtime_for(fp32)
    items: list[quantize.Item] = list(TEXTS[:60])
    reference = runtime.logits(whole_graph(fp32), items)
    config = type("Config", (), {"problem_type": None})()
    result = quantize.search(fp32 / "model.onnx", reference, items, runtime, config, tmp_path, bound, log=print)
    recipe = result.recipe
    names = [t.node for t in quantize.targets(onnx.load(str(fp32 / "model.onnx")))]
    assert sorted(recipe["static_matmuls"] + recipe["dynamic_matmuls"] + recipe["kept_fp32"]) == sorted(names)
    assert result.figures["int8_top1_agreement"] >= bound
    got = runtime.logits(result.path.read_bytes(), items)
    assert quantize.compare(reference, got, None, near_ties=False)[0] == result.figures["int8_top1_agreement"]
    if bound == 0.0:
        assert recipe["static_matmuls"] == names


def test_a_stricter_look_reuses_what_the_first_measured(exported: Callable[..., Path], tmp_path: Path) -> None:
    """The gate searches again with a stricter bound when a confirmation fails: with the first search's Memo the
    second returns the graph a fresh search returns, and builds only the graphs the first did not measure."""
    fp32 = exported("bert", "fp32")
    runtime = runtime_for(fp32)
    items: list[quantize.Item] = list(TEXTS[:60])
    reference = runtime.logits(whole_graph(fp32), items)
    config = type("Config", (), {"problem_type": None})()

    def search(bound: float, where: str, memo: quantize.Memo) -> quantize.SearchResult:
        (tmp_path / where).mkdir()
        return quantize.search(
            fp32 / "model.onnx", reference, items, runtime, config, tmp_path / where, bound, print, (), memo
        )

    fresh = quantize.Memo()
    alone = search(1.0, "alone", fresh)
    shared = quantize.Memo()
    search(0.0, "first", shared)  # every MatMul static, then with 8-bit embeddings
    first = set(shared.attempts)
    again = search(1.0, "again", shared)
    assert again.recipe == alone.recipe
    assert again.figures["int8_top1_agreement"] == alone.figures["int8_top1_agreement"]
    assert set(shared.attempts) == first | set(fresh.attempts)
    assert shared.measured == len(shared.attempts)  # no graph built twice
    assert shared.measured < len(first) + fresh.measured  # the static graph was measured once, for both looks
    assert [r["recipe"] for r in again.figures["int8_recipes_tried"]] == [
        r["recipe"] for r in alone.figures["int8_recipes_tried"]
    ]
