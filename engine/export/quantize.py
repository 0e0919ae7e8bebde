"""Accuracy-aware int8 quantization for the export script: per-token dynamic int8, row-independent by design.

Scheme. Every MatMul with a constant weight (the encoder's linear layers) is rewritten into standard ONNX ops:
the activation is quantized per token (one asymmetric uint8 scale and zero point per row of the last axis, from
that token's own min and max), the weight is quantized offline per output channel to symmetric 7-bit integers
(-63..63, int8 storage), MatMulInteger multiplies them exactly in int32, and the result is rescaled to float. The
small head layers (Gemm: pooler, classifier) run once per row and stay fp32. Large embedding tables (the word
embeddings: 94 MB of a 134 MB DistilBERT-base int8 graph) are stored as fp16 and cast to fp32 after the lookup:
half the file, load time and resident memory of the table at no speed cost. Why not int8: word-embedding rows
have outlier dimensions, so 8-bit rows lose ~0.8% of each value (`python -m benchmarks.embedding_storage` on the
real MiniLM-L6 with a spread head: max logit change 0.07 and top-1 agreement 99.7% from the table alone; 16-column
blocks 0.04), while fp16 loses 0.02% (max logit change 0.002, agreement 100%).

Why per token. onnxruntime's dynamic quantization (DynamicQuantizeLinear) takes one activation scale over the
whole batch tensor, padding rows included, so a row's int8 scores changed with its neighbours. Here a token's
integers depend only on that token, the int32 products are exact, and everything else is fp32 as before: a row's
scores equal its scores alone up to float rounding. Static (calibrated) scales would also be row-independent but
lose accuracy on inputs unlike the calibration texts; per-token scales adapt to every input and need no
calibration data. Asymmetric per-token scales were measured better than symmetric ones (MiniLM: mean |logit
change| 0.34 vs 0.48), because the inputs of the FFN output layer (after GELU) are far from symmetric.

Why 7-bit weights (saturation). On x86 CPUs with AVX2 but no VNNI (this build machine: AMD EPYC, avx2, no
avx512/vnni), onnxruntime's u8s8 kernel uses vpmaddubsw, which adds pairs of u8*s8 products into a saturating
int16. With weights in -63..63 the largest pair is 2 * 255 * 63 = 32130 < 32767: it cannot saturate, and VNNI and
AVX-512 kernels accumulate in int32, so every x86 kernel returns the same exact integers and the same file gives
the same answers everywhere, with no session option. Measured on this CPU (tests/test_quantize.py repeats it):
full 8-bit s8 weights against uint8 activations give int32 errors of ~7e4 (saturation); 7-bit weights give 0.
The session option session.x64quantprecision=1 (onnxruntime rewrites s8 weights to u8 and runs the slower exact
U8U8 kernel) would also fix 8-bit weights, but only where the engine remembers to set it; 8-bit weights bought
little here (mean |logit change| 0.31 vs 0.34 on MiniLM), the activations dominate the error.

Search. Quantize every eligible MatMul (and store the embedding tables fp16) and measure top-1 agreement with fp32
through the engine's own run time on the verification inputs. If it is below the bound, estimate each group's
sensitivity (the MatMuls that share one input tensor: Q/K/V, attention output, FFN in, FFN out; an embedding table
is a group of its own) by changing that group alone on a small subset of the inputs, order groups by logit error
per weight element (the most damaging per unit of speed first), and bisect on how many of them to keep fp32: the
fewest that reach the bound (agreement grows with the groups kept).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine import batching, postprocess
from engine.session import OnnxSession
from engine.tokenize import Strategy, TextTokenizer, Truncation

Item = str | tuple[str, str]
WEIGHT_MAX = 63  # 7-bit symmetric weights: 2 * 255 * 63 < 2**15, so AVX2's int16 pair sums cannot saturate
EMBEDDING_MIN_SIZE = 1 << 16  # smaller tables (token types) are not worth a node
PROBE_ITEMS = 24  # inputs per sensitivity probe


class Runtime:
    """The engine's own forward pass over candidate graphs, so the checks measure what users will run."""

    def __init__(
        self,
        tokenizer_json: str,
        max_length: int,
        pad_id: int,
        num_labels: int,
        nli: bool = False,
        pooled_id: int | None = None,
    ):
        self.tokenizer = TextTokenizer(tokenizer_json, max_length, pad_id)
        self.pad_id = pad_id
        self.pooled_id = pooled_id
        self.num_labels = num_labels
        self.strategy = Strategy.ONLY_FIRST if nli else Strategy.LONGEST_FIRST

    def logits(self, onnx_bytes: bytes, items: Sequence[Item]) -> np.ndarray:
        session = OnnxSession(onnx_bytes, self.num_labels)
        encoded = self.tokenizer.encode(items, Truncation(strategy=self.strategy))
        out = np.empty((len(items), self.num_labels), dtype=np.float32)
        for batch in batching.batches(encoded, self.pad_id, pooled_id=self.pooled_id):
            out[batch.index] = session.run(batch)
        return out


def decisions(logits: np.ndarray) -> np.ndarray:
    """What a user acts on: the top label, or for a single-logit model which side of 0.5 the score falls."""
    return (logits[:, 0] > 0) if logits.shape[1] == 1 else logits.argmax(axis=1)


def compare(reference: np.ndarray, candidate: np.ndarray, problem_type: str | None) -> tuple[float, float]:
    """(top-1 agreement, max score difference under the model's default activation)."""
    act = postprocess.default_activation(problem_type, reference.shape[1])
    agreement = float((decisions(reference) == decisions(candidate)).mean())
    diff = float(np.abs(postprocess.activate(reference, act) - postprocess.activate(candidate, act)).max())
    return agreement, diff


@dataclass(frozen=True)
class Recipe:
    name: str
    exclude: tuple[str, ...] = ()  # nodes kept fp32: MatMuls and embedding Gathers
    quantized: int = 0  # MatMul nodes made int8
    kept_matmuls: tuple[str, ...] = ()
    embeddings: tuple[str, ...] = ()  # embedding tables stored fp16

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": "per-token dynamic int8 (graph rewrite: MatMulInteger with per-row activation scales)",
            "activations": "uint8, asymmetric, one scale and zero point per token (row-independent)",
            "weights": f"int8 storage, symmetric per output channel, 7-bit range (+-{WEIGHT_MAX})",
            "integer_math": "exact int32 on every x86 kernel (no int16 saturation: 2*255*63 < 32767)",
            "session_options": {},
            "int8_matmuls": self.quantized,
            "kept_fp32": list(self.kept_matmuls),
            "embeddings": "large tables stored fp16, cast to fp32 after the lookup",
            "fp16_embeddings": list(self.embeddings),
            "fp32_always": "Gemm head layers (pooler, classifier)",
        }


@dataclass
class SearchResult:
    path: Path
    recipe: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """A MatMul the rewrite may quantize: its node, activation input and constant weight initializer."""

    node: str
    input: str
    weight: str
    size: int  # weight elements: the node's cost per token


def targets(model: Any) -> list[Target]:
    """MatMuls whose second input is a constant 2-D weight (directly, or through an Identity as optimum writes
    shared weights)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in inits}
    out = []
    for n in graph.node:
        if n.op_type != "MatMul":
            continue
        w = alias.get(n.input[1], n.input[1])
        if w in inits and len(inits[w].dims) == 2:
            out.append(Target(n.name, n.input[0], w, int(np.prod(inits[w].dims))))
    return out


def embedding_targets(model: Any) -> list[Target]:
    """Gathers from a large constant 2-D float table that nothing but Gathers reads (an embedding lookup)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer if i.data_type == 1 and len(i.dims) == 2}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in inits}
    readers: dict[str, set[str]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(alias.get(i, i), set()).add(n.op_type)
    out = []
    for n in graph.node:
        if n.op_type != "Gather" or next((a.i for a in n.attribute if a.name == "axis"), 0) != 0:
            continue
        table = alias.get(n.input[0], n.input[0])
        if table in inits and readers[table] <= {"Gather", "Identity"}:
            size = int(np.prod(inits[table].dims))
            if size >= EMBEDDING_MIN_SIZE:
                out.append(Target(n.name, n.input[1], table, size))
    return out


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights in -63..63, float32 scale per output column)."""
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / WEIGHT_MAX
    return np.clip(np.round(w / scale), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8), scale.astype(np.float32)


def rewrite(model: Any, exclude: Sequence[str] = ()) -> Any:
    """A copy of `model` with every target MatMul not in `exclude` replaced by per-token int8 arithmetic, and every
    embedding Gather not in `exclude` reading an fp16 table."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    excluded = set(exclude)
    todo = [t for t in targets(model) if t.node not in excluded]
    consts = {"q8/axes": np.array([-1], np.int64), "q8/zero": np.float32(0), "q8/eps": np.float32(1e-12)}
    consts |= {"q8/255": np.float32(255), "q8/inv255": np.float32(1 / 255)}
    new_inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]

    def reduce(op: str, x: str, out: str) -> Any:
        if opset >= 18:
            return helper.make_node(op, [x, "q8/axes"], [out], keepdims=1)
        return helper.make_node(op, [x], [out], axes=[-1], keepdims=1)

    def quantize_input(x: str, p: str) -> list[Any]:
        """uint8 q, zero point z (float) and scale s per token, so that x ~= (q - z) * s."""
        return [
            reduce("ReduceMax", x, p + "max"),
            reduce("ReduceMin", x, p + "min"),
            helper.make_node("Max", [p + "max", "q8/zero"], [p + "hi"]),
            helper.make_node("Min", [p + "min", "q8/zero"], [p + "lo"]),
            helper.make_node("Sub", [p + "hi", p + "lo"], [p + "range"]),
            helper.make_node("Max", [p + "range", "q8/eps"], [p + "range1"]),
            helper.make_node("Mul", [p + "range1", "q8/inv255"], [p + "s"]),
            helper.make_node("Div", ["q8/255", p + "range1"], [p + "inv"]),
            helper.make_node("Mul", [p + "lo", p + "inv"], [p + "lo_q"]),
            helper.make_node("Round", [p + "lo_q"], [p + "lo_r"]),
            helper.make_node("Neg", [p + "lo_r"], [p + "z"]),
            helper.make_node("Mul", [x, p + "inv"], [p + "xs"]),
            helper.make_node("Round", [p + "xs"], [p + "xr"]),
            helper.make_node("Add", [p + "xr", p + "z"], [p + "xz"]),
            helper.make_node("Clip", [p + "xz", "q8/zero", "q8/255"], [p + "xc"]),
            helper.make_node("Cast", [p + "xc"], [p + "q"], to=TensorProto.UINT8),
        ]

    prefixes: dict[str, str] = {}  # input tensor -> prefix of its quantized form (Q, K and V share one)
    replacement: dict[str, list[Any]] = {}
    for t in todo:
        node_nodes: list[Any] = []
        if t.input not in prefixes:
            prefixes[t.input] = f"q8/in{len(prefixes)}/"
            node_nodes += quantize_input(t.input, prefixes[t.input])
        a = prefixes[t.input]
        p = f"q8/{t.node}/"
        wq, ws = quantize_weight(numpy_helper.to_array(inits[t.weight]).astype(np.float32))
        new_inits += [
            numpy_helper.from_array(wq, p + "w"),
            numpy_helper.from_array(ws, p + "ws"),
            numpy_helper.from_array(wq.astype(np.float32).sum(axis=0), p + "colsum"),
        ]
        out = next(n.output[0] for n in graph.node if n.name == t.node)
        node_nodes += [
            helper.make_node("MatMulInteger", [a + "q", p + "w"], [p + "i32"]),
            helper.make_node("Cast", [p + "i32"], [p + "f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [a + "z", p + "colsum"], [p + "zc"]),  # sum((q - z) w) = sum(q w) - z sum(w)
            helper.make_node("Sub", [p + "f", p + "zc"], [p + "acc"]),
            helper.make_node("Mul", [p + "acc", a + "s"], [p + "as"]),
            helper.make_node("Mul", [p + "as", p + "ws"], [out]),
        ]
        replacement[t.node] = node_nodes
    stored: set[str] = set()  # a table two lookups share is stored once
    for t in embedding_targets(model):
        if t.node in excluded:
            continue
        p = f"q8/{t.weight}/"
        if t.weight not in stored:
            stored.add(t.weight)
            table = numpy_helper.to_array(inits[t.weight]).astype(np.float16)
            new_inits.append(numpy_helper.from_array(table, p + "e"))
        g = f"q8/{t.node}/"
        out = next(n.output[0] for n in graph.node if n.name == t.node)
        replacement[t.node] = [
            helper.make_node("Gather", [p + "e", t.input], [g + "h"]),
            helper.make_node("Cast", [g + "h"], [out], to=TensorProto.FLOAT),
        ]
    nodes = [m for n in graph.node for m in replacement.get(n.name, [n])]
    used = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    nodes = [n for n in nodes if n.op_type != "Identity" or n.output[0] in used]  # weight aliases left unused
    used = {i for n in nodes for i in n.input}
    kept = [i for i in graph.initializer if i.name in used] + new_inits
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


def groups(model: Any) -> list[list[Target]]:
    """MatMul targets grouped by the tensor they read (Q/K/V, attention output, FFN in, FFN out), in graph order,
    then embedding lookups grouped by table."""
    by_input: dict[str, list[Target]] = {}
    for t in targets(model):
        by_input.setdefault(t.input, []).append(t)
    by_table: dict[str, list[Target]] = {}
    for t in embedding_targets(model):
        by_table.setdefault(t.weight, []).append(t)
    return list(by_input.values()) + list(by_table.values())


def search(
    fp32_path: Path,
    reference: np.ndarray,
    items: Sequence[Item],
    runtime: Runtime,
    config: Any,
    workdir: Path,
    min_agreement: float,
    log: Callable[[str], Any] = print,
) -> SearchResult:
    """The int8 graph with the fewest fp32 MatMuls whose top-1 agreement with fp32 reaches `min_agreement`."""
    import onnx

    problem_type = getattr(config, "problem_type", None)
    model = onnx.load(str(fp32_path))
    all_targets = targets(model)
    lookups = embedding_targets(model)
    tried: list[dict[str, Any]] = []

    def recipe_keeping(name: str, kept: tuple[str, ...]) -> Recipe:
        matmuls = tuple(t.node for t in all_targets if t.node in kept)
        tables = tuple(dict.fromkeys(t.weight for t in lookups if t.node not in kept))
        return Recipe(name, kept, len(all_targets) - len(matmuls), matmuls, tables)

    def attempt(recipe: Recipe, tag: str) -> tuple[Path, float, float]:
        path = workdir / f"int8-{tag}.onnx"
        path.write_bytes(rewrite(model, recipe.exclude).SerializeToString())
        agreement, diff = compare(reference, runtime.logits(path.read_bytes(), items), problem_type)
        tried.append(
            {
                "recipe": recipe.name,
                "kept_fp32": len(recipe.kept_matmuls),
                "fp16_embeddings": len(recipe.embeddings),
                "top1_agreement": agreement,
                "max_score_diff": diff,
            }
        )
        log(
            f"int8 recipe {recipe.name!r} ({len(recipe.kept_matmuls)} of {len(all_targets)} MatMuls kept fp32, "
            f"{len(recipe.embeddings)} embedding table(s) fp16): "
            f"top-1 agreement {agreement:.2%}, max score diff {diff:.4f}"
        )
        return path, agreement, diff

    def done(path: Path, recipe: Recipe, agreement: float, diff: float) -> SearchResult:
        figures = {
            "int8_top1_agreement": agreement,
            "int8_max_score_diff": diff,
            "int8_min_agreement": min_agreement,
            "int8_recipes_tried": tried,
        }
        return SearchResult(path, recipe.describe(), figures)

    recipe = recipe_keeping("per-token int8", ())
    path, agreement, diff = attempt(recipe, "all")
    if agreement >= min_agreement:
        return done(path, recipe, agreement, diff)

    order = sensitivity_order(model, reference, items, runtime, log)
    best: tuple[Path, Recipe, float, float] | None = None
    lo, hi = 0, len(order)  # keeping lo groups fails; keeping hi groups (all) is fp32 and passes
    while hi - lo > 1:
        mid = (lo + hi) // 2
        kept = tuple(t.node for g in order[:mid] for t in g)
        recipe = recipe_keeping("per-token int8, sensitive nodes in fp32", kept)
        path, agreement, diff = attempt(recipe, f"keep{mid}")
        if agreement >= min_agreement:
            hi, best = mid, (path, recipe, agreement, diff)
        else:
            lo = mid
    if best is None:
        kept = tuple(t.node for t in all_targets + lookups)
        recipe = recipe_keeping("fp32 (no int8 recipe kept the decisions)", kept)
        path, agreement, diff = attempt(recipe, "none")
        best = (path, recipe, agreement, diff)
    return done(*best)


def sensitivity_order(
    model: Any, reference: np.ndarray, items: Sequence[Item], runtime: Runtime, log: Callable[[str], Any]
) -> list[list[Target]]:
    """Groups ordered by how much quantizing each one alone moves the logits per weight element, worst first,
    measured on a spread subset of the inputs (cheap: a few short runs instead of one full run per MatMul)."""
    pick = np.linspace(0, len(items) - 1, min(PROBE_ITEMS, len(items))).round().astype(int)
    subset, ref = [items[i] for i in pick], reference[pick]
    all_groups = groups(model)
    names = {t.node for g in all_groups for t in g}
    scores = []
    for g in all_groups:
        mine = {t.node for t in g}
        probe = rewrite(model, tuple(names - mine)).SerializeToString()
        error = float(np.abs(runtime.logits(probe, subset) - ref).mean())
        scores.append(error / sum(t.size for t in g))
    log(f"int8 sensitivity: probed {len(all_groups)} groups (MatMuls, embedding tables) on {len(subset)} inputs")
    return [all_groups[i] for i in np.argsort(scores)[::-1]]
