"""Accuracy-aware int8 quantization for the export script: row-independent by design, fused by onnxruntime.

Scheme. Every MatMul with a constant weight (the encoder's linear layers) becomes one onnxruntime
`MatMulIntegerToFloat` (uint8 activations x int8 weights, exact int32 sums, scaled to float inside the kernel).
The weights are quantized offline per output channel to symmetric 7-bit integers (-63..63). The activations
feeding each group of MatMuls (the ones that share an input: Q/K/V, attention output, FFN in, FFN out) get one of
two scales, the search choosing per group:

- static: one calibrated scale and zero point for the whole tensor (the min and max of that tensor over the
  verification inputs), so the input is quantized by one `QuantizeLinear` and the bias is added inside the
  kernel. The fastest form: two nodes per group, nothing per token. Smoothed static (SmoothQuant): BERT's hidden
  states have a few outlier channels that stretch one scale over the whole tensor, so the input is first divided
  per channel by s = amax(x)^0.75 / amax(W row)^0.25 and the weight rows multiplied by s, x W = (x / s)(s W),
  which evens the channels out. It costs one Mul per group (~8% of MiniLM's time), so the search tries it only
  when plain static falls short. On the benchmark's NLI model it keeps 99-100% of the zero-shot winners on its
  own topics where plain static keeps 96-98% (`python -m benchmarks.zero_shot_int8_forms`).
- dynamic: one scale and offset per token, from that token's own min and max (q = round((x - min) / step), step
  = (max - min) / 255), quantized by one blocked `QuantizeLinear` (opset 21, a block = a token's row; the graph's
  opset is raised to 21 when it has per-token groups, which changes none of its other ops), the step passed to
  `MatMulIntegerToFloat` as a [..., 1] tensor. The kernel takes only one zero point per tensor, so the offset
  comes back through one small MatMul, [min, 1] x [colsum(W); bias], added to the kernel's output (x W = (x -
  min) W + min colsum(W)). The blocked QuantizeLinear replaced a Div over the whole tensor: the input side of a
  per-token group took half the time on 256-token batches (scratch), the NLI benchmark model +12% texts/s.
  Symmetric per-token scales (no offset) were measured ~3% faster but lost too many decisions: on the trained
  MiniLM they fell below 99% agreement where this keeps it (`python -m benchmarks.int8_levers`).

Static Q/K/V groups then fuse with the attention kernel they feed: the three `MatMulIntegerToFloat`s and the
`MultiHeadAttention` become one onnxruntime `QAttention` (`fuse_qkv`), bit-identical and three nodes fewer per
layer. A smoothed attention output's `Mul` then folds into the QAttention's V columns
(`fold_attention_smoothing`; equal up to rounding, and measured by the gates like the rest of the rewrite).

Either way a token's integers depend only on that token and on constants, so a row's scores equal its scores
alone up to float rounding. onnxruntime's own dynamic quantization takes one scale over the whole batch tensor,
padding rows included, so a row's scores there changed with its neighbours. The small head layers (Gemm:
pooler, classifier) run once per row and stay fp32. Large embedding tables (the word embeddings: 94 MB of a
134 MB DistilBERT-base fp32 graph) are stored 8-bit when the gate still passes with them, else fp16 (cast to fp32
after the lookup). 8-bit tables keep one scale per block of 64 columns of a row (onnxruntime's fused
`GatherBlockQuantized`), a quarter of the fp32 bytes: the weights file is memory-mapped, so the rows a workload
touches are what it holds resident (8-12 MB less than fp16 on the benchmark's models). Blocks, not whole rows:
word-embedding rows have outlier dimensions, so whole 8-bit rows lose 0.8-1.6% of each value (MiniLM,
DistilBERT), blocks of 64 0.6-0.8%, fp16 0.02% (`python -m benchmarks.embedding_storage`); the gate decides.

Why 7-bit weights (saturation). On x86 CPUs with AVX2 but no VNNI, onnxruntime's u8s8 kernel uses vpmaddubsw,
which adds pairs of u8*s8 products into a saturating int16. With weights in -63..63 the largest pair is
2 * 255 * 63 = 32130 < 32767: it cannot saturate, whatever the activation's zero point, and VNNI and AVX-512
kernels accumulate in int32, so every x86 kernel returns the same exact integers and the same file gives the
same answers everywhere, with no session option. (tests/test_quantize.py checks the kernel's output against
numpy's exact integer product on this CPU; full 8-bit weights measured int32 errors of ~7e4 on an AVX2 CPU.)

Search. Try every group static and measure top-1 agreement with fp32 through the engine's own run time on the
verification inputs; then every group smoothed static. If both fall below the bound, estimate each group's damage
from a static scale (that group alone static, in the form that came closer, the rest fp32, on a small subset of
the inputs), order groups by logit error per weight element, and bisect on how many of the worst to make dynamic:
the fewest that reach the bound. If even every group dynamic falls short, a bisection first finds how many groups
(MatMul groups and embedding tables, ordered by their dynamic damage) to keep fp32; the other groups then go
through the static/dynamic bisection. Last, the passing recipe is tried with 8-bit embedding tables, kept if it
still passes. The manifest lists the static, dynamic and fp32 nodes, the smoothing and the tables' storage.
`python -m benchmarks.int8_levers` measures the forms against each other. The export code may add further checks
(`Check`: a figure of the candidate graph and its bound, e.g. zero-shot ranking agreement for NLI models); a recipe
passes only when every one holds, and each figure is recorded with the recipes tried.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
EMBEDDING_BLOCKS = (64, 32, 16)  # columns per scale of an 8-bit embedding table: the first that divides a row
SMOOTHING = 0.75  # alpha: how much of an input channel's range a static group moves into the weights


@dataclass(frozen=True)
class Range:
    """Calibrated per-channel minimum and maximum of a MatMul input (channels: its last axis)."""

    lo: np.ndarray
    hi: np.ndarray


def smoothing(r: Range, weights: Sequence[np.ndarray]) -> np.ndarray:
    """Per-channel factors s (geometric mean 1) with x W = (x / s)(s W): a static scale then fits x / s, whose
    channels are far more even than x's (BERT's hidden states have a few outlier channels). s = amax(x)^alpha /
    amax(W row)^(1 - alpha) over the group's weights, SmoothQuant's balance of activation and weight ranges."""
    amax = np.maximum(np.maximum(np.abs(r.lo), np.abs(r.hi)), 1e-5)
    wmax = np.maximum(np.max([np.abs(w).max(axis=1) for w in weights], axis=0), 1e-5)
    s = amax**SMOOTHING / wmax ** (1 - SMOOTHING)
    return (s / np.exp(np.log(s).mean())).astype(np.float32)


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

    def batches(self, items: Sequence[Item]) -> Iterator[batching.Batch]:
        encoded = self.tokenizer.encode(items, Truncation(strategy=self.strategy))
        return batching.batches(encoded, self.pad_id, pooled_id=self.pooled_id)

    def logits(self, onnx_bytes: bytes, items: Sequence[Item]) -> np.ndarray:
        session = OnnxSession(onnx_bytes, self.num_labels)
        out = np.empty((len(items), self.num_labels), dtype=np.float32)
        for batch in self.batches(items):
            out[batch.index] = session.run(batch)
        return out

    def ranges(self, model: Any, tensors: Sequence[str], items: Sequence[Item]) -> dict[str, Range]:
        """Per-channel (min, max) of each named tensor of the fp32 graph over the real (unpadded) tokens of
        `items`: channels are the last axis, the one a MatMul sums over."""
        import onnx
        import onnxruntime as ort

        if not tensors:
            return {}
        probe = onnx.ModelProto.FromString(model.SerializeToString())
        probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in tensors)
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        inputs = [i.name for i in session.get_inputs()]
        lo: dict[str, np.ndarray] = {}
        hi: dict[str, np.ndarray] = {}
        for batch in self.batches(items):
            values = session.run(list(tensors), {name: getattr(batch, name) for name in inputs})
            real = batch.attention_mask.astype(bool)
            for name, value in zip(tensors, values, strict=True):
                # a per-token tensor [batch, tokens, ...]: its real tokens; anything else (DeBERTa's relative
                # position embeddings feed MatMuls too) does not depend on the batch: all of it
                # ([batch, width] rows, as ModernBERT's head reads, are taken whole: a batch of `width` tokens
                # would otherwise mistake them for [batch, tokens])
                tokens = value[real] if value.ndim >= 3 and value.shape[:2] == real.shape else value
                tokens = tokens.reshape(-1, tokens.shape[-1])
                lo[name] = np.minimum(lo.get(name, np.inf), tokens.min(axis=0))
                hi[name] = np.maximum(hi.get(name, -np.inf), tokens.max(axis=0))
        return {name: Range(lo[name], hi[name]) for name in tensors}


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
    static: tuple[str, ...] = ()  # MatMuls whose input has a calibrated static scale; the other int8 ones: per token
    dynamic: tuple[str, ...] = ()
    kept_matmuls: tuple[str, ...] = ()
    embeddings: tuple[str, ...] = ()  # embedding tables stored fp16
    smoothed: bool = False  # static inputs smoothed per channel (a Mul before their QuantizeLinear)
    embeddings8: tuple[str, ...] = ()  # of those, the ones stored 8-bit instead

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": "int8 MatMulIntegerToFloat (onnxruntime contrib op): static or per-token activation scales; "
            "static Q/K/V projections and their attention fused into one QAttention",
            "activations": "uint8; per group of MatMuls either one calibrated scale and zero point for the tensor "
            "(static) or each token's own min and max (dynamic); row-independent both ways",
            "weights": f"int8 storage, symmetric per output channel, 7-bit range (+-{WEIGHT_MAX})",
            "integer_math": "exact int32 on every x86 kernel (no int16 saturation: 2*255*63 < 32767)",
            "session_options": {},
            "int8_matmuls": len(self.static) + len(self.dynamic),
            "static_matmuls": list(self.static),
            "dynamic_matmuls": list(self.dynamic),
            "kept_fp32": list(self.kept_matmuls),
            "smoothing": f"static inputs divided per channel by s, weight rows times s (SmoothQuant, alpha {SMOOTHING})"
            if self.smoothed and self.static
            else "none",
            "embeddings": "large tables stored fp16 (cast to fp32 after the lookup) or 8-bit (one scale per block "
            f"of {'/'.join(map(str, EMBEDDING_BLOCKS))} columns of a row, onnxruntime GatherBlockQuantized)",
            "fp16_embeddings": [e for e in self.embeddings if e not in self.embeddings8],
            "int8_embeddings": list(self.embeddings8),
            "fp32_always": "Gemm head layers (pooler, classifier)",
        }


@dataclass(frozen=True)
class Check:
    """A further acceptance test of a candidate graph, given by the export code (e.g. zero-shot ranking
    agreement): `measure(graph bytes)` must reach `bound`. Recorded under `name` in every tried recipe."""

    name: str
    bound: float
    measure: Callable[[bytes], float]


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


def embedding_block(columns: int) -> int | None:
    """Columns per scale for an 8-bit table of this width (None: no block size fits, the table stays fp16)."""
    return next((b for b in EMBEDDING_BLOCKS if columns % b == 0), None)


def quantize_blocks(table: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """An embedding table as uint8 (symmetric int8 + 128) with one float32 scale per `block` columns of a row:
    the layout of onnxruntime's GatherBlockQuantized (bits 8, zero point 128)."""
    rows, cols = table.shape
    blocks = table.reshape(rows, cols // block, block)
    scale = np.maximum(np.abs(blocks).max(axis=2), 1e-12) / 127
    q = np.clip(np.round(blocks / scale[..., None]), -127, 127).astype(np.int16) + 128
    return q.astype(np.uint8).reshape(rows, cols), scale.astype(np.float32)


def static_scale(lo: float, hi: float) -> tuple[np.float32, np.uint8]:
    """uint8 scale and zero point covering [lo, hi] (widened to include 0, so that 0 is exact)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-12) / 255
    return np.float32(scale), np.uint8(np.clip(np.round(-lo / scale), 0, 255))


def bias_add(graph: Any, output: str, columns: int, inits: Mapping[str, Any]) -> Any | None:
    """The Add that adds a constant [columns] bias to `output` and is its only reader, if there is one."""
    readers = [n for n in graph.node if output in n.input]
    if len(readers) != 1 or readers[0].op_type != "Add":
        return None
    other = [i for i in readers[0].input if i != output]
    if len(other) == 1 and other[0] in inits and list(inits[other[0]].dims) == [columns]:
        return readers[0]
    return None


def rewrite(
    model: Any,
    exclude: Sequence[str] = (),
    ranges: Mapping[str, Range] | None = None,
    smooth: bool = False,
    embeddings8: Sequence[str] = (),
) -> Any:
    """A copy of `model` with every target MatMul not in `exclude` made int8, and every embedding Gather not in
    `exclude` reading an fp16 table. A MatMul whose input tensor has a calibrated range in `ranges` gets a static
    scale (of the input divided by its `smoothing` when `smooth`); the others get per-token scales. Tables named
    in `embeddings8` are stored 8-bit (their width must have an `embedding_block`)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    ranges = ranges or {}
    excluded = set(exclude)
    todo = [t for t in targets(model) if t.node not in excluded]
    weights = {t.node: numpy_helper.to_array(inits[t.weight]).astype(np.float32) for t in todo}
    factors = {  # per smoothed static input: its smoothing, shared by the MatMuls that read it
        x: smoothing(r, [weights[t.node] for t in todo if t.input == x])
        for x, r in (ranges.items() if smooth else ())
        if any(t.input == x for t in todo)
    }
    consts = {"q8/axes": np.array([-1], np.int64), "q8/eps": np.float32(1e-12)}
    consts |= {"q8/255": np.float32(255), "q8/0": np.uint8(0), "q8/one": np.array([1], np.float32)}
    new_inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]

    def quantize_input(x: str, p: str, width: int) -> list[Any]:
        """uint8 q, scale s and zero point z of x, so that x ~= (q - z) * s."""
        if x in ranges:
            r, s = ranges[x], factors.get(x)
            lo, hi = (r.lo, r.hi) if s is None else (r.lo / s, r.hi / s)
            scale, zero = static_scale(float(lo.min()), float(hi.max()))
            new_inits.extend(
                [
                    numpy_helper.from_array(np.asarray(scale), p + "s"),
                    numpy_helper.from_array(np.asarray(zero), p + "z"),
                ]
            )
            if s is None:
                return [helper.make_node("QuantizeLinear", [x, p + "s", p + "z"], [p + "q"])]
            new_inits.append(numpy_helper.from_array(1 / s, p + "inv"))
            return [
                helper.make_node("Mul", [x, p + "inv"], [p + "smooth"]),
                helper.make_node("QuantizeLinear", [p + "smooth", p + "s", p + "z"], [p + "q"]),
            ]
        # per token: x ~= q step + lo with lo the token's min, step = (max - min) / 255, q = round((x - lo) / step)
        # by one blocked QuantizeLinear (a block: the token's row); lo1 = [lo, 1] carries the offset back:
        # x W = (x - lo) W + lo colsum(W), and the bias, in one small MatMul
        return [
            helper.make_node("ReduceMax", [x, "q8/axes"], [p + "hi"], keepdims=1),
            helper.make_node("ReduceMin", [x, "q8/axes"], [p + "lo"], keepdims=1),
            helper.make_node("Sub", [p + "hi", p + "lo"], [p + "span"]),
            helper.make_node("Max", [p + "span", "q8/eps"], [p + "range"]),
            helper.make_node("Div", [p + "range", "q8/255"], [p + "s"]),
            helper.make_node("Sub", [x, p + "lo"], [p + "shifted"]),
            helper.make_node("QuantizeLinear", [p + "shifted", p + "s"], [p + "q"], axis=-1, block_size=width),
            helper.make_node("Shape", [p + "lo"], [p + "shape"]),
            helper.make_node("Expand", ["q8/one", p + "shape"], [p + "ones"]),
            helper.make_node("Concat", [p + "lo", p + "ones"], [p + "lo1"], axis=-1),
        ]

    prefixes: dict[str, str] = {}  # input tensor -> prefix of its quantized form (Q, K and V share one)
    replacement: dict[str, list[Any]] = {}
    dropped: set[str] = set()  # outputs of the bias Adds moved into the kernel
    for t in todo:
        nodes: list[Any] = []
        if t.input not in prefixes:
            prefixes[t.input] = f"q8/in{len(prefixes)}/"
            nodes += quantize_input(t.input, prefixes[t.input], weights[t.node].shape[0])
        a = prefixes[t.input]
        p = f"q8/{t.node}/"
        static = t.input in ranges
        smoothed = factors.get(t.input)
        wq, ws = quantize_weight(weights[t.node] if smoothed is None else weights[t.node] * smoothed[:, None])
        new_inits += [numpy_helper.from_array(wq, p + "w"), numpy_helper.from_array(ws, p + "ws")]
        out = next(n.output[0] for n in graph.node if n.name == t.node)
        add = bias_add(graph, out, len(ws), inits)
        bias = np.zeros_like(ws)
        if add is not None:  # taken into the int8 nodes
            bias = numpy_helper.to_array(inits[next(i for i in add.input if i != out)]).astype(np.float32)
            out = add.output[0]
            dropped.add(out)
        inputs = [a + "q", p + "w", a + "s", p + "ws", a + "z" if static else "q8/0"]
        if static:  # the kernel adds the bias (it would add it before a per-row scale, hence only here)
            new_inits.append(numpy_helper.from_array(bias, p + "b"))
            nodes.append(
                helper.make_node("MatMulIntegerToFloat", [*inputs, "", p + "b"], [out], domain="com.microsoft")
            )
        else:
            colsum = (wq.astype(np.float32) * ws).sum(axis=0)  # x W = (x - lo) W + lo colsum(W)
            new_inits.append(numpy_helper.from_array(np.stack([colsum, bias]), p + "offset"))
            nodes += [
                helper.make_node("MatMulIntegerToFloat", inputs, [p + "int"], domain="com.microsoft"),
                helper.make_node("MatMul", [a + "lo1", p + "offset"], [p + "corr"]),
                helper.make_node("Add", [p + "int", p + "corr"], [out]),
            ]
        replacement[t.node] = nodes
    stored: set[str] = set()  # a table two lookups share is stored once
    for t in embedding_targets(model):
        if t.node in excluded:
            continue
        p = f"q8/{t.weight}/"
        block = embedding_block(int(inits[t.weight].dims[1])) if t.weight in embeddings8 else None
        if t.weight not in stored:
            stored.add(t.weight)
            table = numpy_helper.to_array(inits[t.weight]).astype(np.float32)
            if block:
                q, scale = quantize_blocks(table, block)
                new_inits += [
                    numpy_helper.from_array(q, p + "e8"),
                    numpy_helper.from_array(scale, p + "scale"),
                    numpy_helper.from_array(np.full(scale.shape, 128, np.uint8), p + "zero"),
                ]
            else:
                new_inits.append(numpy_helper.from_array(table.astype(np.float16), p + "e"))
        g = f"q8/{t.node}/"
        out = next(n.output[0] for n in graph.node if n.name == t.node)
        replacement[t.node] = (
            [
                helper.make_node(
                    "GatherBlockQuantized",
                    [p + "e8", t.input, p + "scale", p + "zero"],
                    [out],
                    domain="com.microsoft",
                    block_size=block,
                    gather_axis=0,
                    quantize_axis=1,
                    bits=8,
                )
            ]
            if block
            else [
                helper.make_node("Gather", [p + "e", t.input], [g + "h"]),
                helper.make_node("Cast", [g + "h"], [out], to=onnx.TensorProto.FLOAT),
            ]
        )
    originals = [n for n in graph.node if not (n.op_type == "Add" and n.output[0] in dropped)]
    nodes = [m for n in originals for m in replacement.get(n.name, [n])]
    used = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    nodes = [n for n in nodes if n.op_type != "Identity" or n.output[0] in used]  # weight aliases left unused
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    fuse_qkv(graph)
    fold_attention_smoothing(graph)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]  # fp32 weights and the Q/K/V weights fused away go
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if todo and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    if any(t.input not in ranges for t in todo):  # blocked QuantizeLinear: opset 21 (its other ops: unchanged)
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = max(o.version, 21)
    return model


MHA_ATTRIBUTES = {"num_heads", "mask_filter_value"}  # the attention attributes the export makes, read alike


def fuse_qkv(graph: Any) -> int:
    """Each attention core whose Q, K and V projections are static int8 of one quantized input becomes one
    onnxruntime `QAttention` (in place, the weights it replaces left for the caller to prune; returns how many):
    the three `MatMulIntegerToFloat`s and the `MultiHeadAttention` they feed are one node, its weights the three
    concatenated, Q|K|V, with their per-column scales and biases. The kernel computes the same exact int32 sums
    with the same float scaling, per (row, head), straight into the head-major layout attention reads, so the
    scores are bit-identical (tests/test_quantize.py), rows stay independent, and a run has three fewer nodes per
    layer. Measured on 2 cores, 256-token batches, raw session (scratch, interleaved): batch-1 p50 -12%
    (MiniLM-L6) and -11% (DistilBERT-base), sentences/s +5% and level. Per-token groups keep the separate nodes:
    QAttention takes one input scale per tensor."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1

    def static_projection(name: str) -> Any | None:
        """The static MatMulIntegerToFloat (symmetric weights, bias inside) making `name` for attention alone."""
        p = producer.get(name)
        if p is None or p.op_type != "MatMulIntegerToFloat" or len(p.input) != 7 or p.input[5]:
            return None
        return p if p.input[2] in inits and readers[name] == 1 else None

    fused = 0
    for mha in [n for n in graph.node if n.op_type == "MultiHeadAttention"]:
        attrs = {a.name: helper.get_attribute_value(a) for a in mha.attribute}
        if len(mha.input) > 5 or len(mha.output) != 1 or not set(attrs) <= MHA_ATTRIBUTES:
            continue
        qkv = [p for p in map(static_projection, mha.input[:3]) if p is not None]
        if len(qkv) != 3 or len({(p.input[0], p.input[2], p.input[4]) for p in qkv}) != 1:
            continue
        mask = mha.input[4] if len(mha.input) > 4 else ""
        cast = producer.get(mask)
        to = {a.name: a.i for a in cast.attribute}.get("to") if cast is not None and cast.op_type == "Cast" else None
        if mask and to != 6:  # onnx.TensorProto.INT32
            continue  # QAttention reads an int32 [batch, tokens] mask: the export's Cast of attention_mask
        array = lambda name: numpy_helper.to_array(inits[name])  # noqa: E731
        bias = np.concatenate([array(p.input[6]) for p in qkv])
        if len(mha.input) > 3 and mha.input[3]:
            bias = bias + array(mha.input[3])
        made = {
            "w": np.concatenate([array(p.input[1]) for p in qkv], axis=1),
            "ws": np.concatenate([array(p.input[3]) for p in qkv]),
            "b": bias.astype(np.float32),
        }
        prefix = f"q8/{mha.name}/qkv/"
        graph.initializer.extend(numpy_helper.from_array(v, prefix + k) for k, v in made.items())
        q, _, s, _, z = qkv[0].input[:5]
        inputs = [q, prefix + "w", prefix + "b", s, prefix + "ws", mask, z]
        node = helper.make_node("QAttention", inputs, list(mha.output), mha.name + "/qkv", domain="com.microsoft")
        node.attribute.extend(mha.attribute)
        nodes = [node if n == mha else n for n in graph.node if n not in qkv]
        del graph.node[:]
        graph.node.extend(nodes)
        fused += 1
    return fused


def fold_attention_smoothing(graph: Any) -> int:
    """Each smoothing `Mul` right after a `QAttention` (the output projection's smoothed static input) folded into
    the V columns' weight scales and bias, in place; returns how many. Attention mixes V's columns only by per-row
    weights, so scaling column j of V scales column j of the output. One element-wise pass over [tokens, width]
    fewer per layer; across two core complexes, where each such pass reads half its input from the other one,
    DistilBERT-base +3% sentences/s (scratch, interleaved). Equal up to float rounding, not bit-identical (the
    product is taken in another order, which can move a value across the next rounding step), so it is part of
    the rewrite the recipe search and its gates measure."""
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    folded = 0
    for node in [n for n in graph.node if n.op_type == "QAttention"]:
        users = readers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Mul" or node.output[0] in outputs:
            continue
        mul = users[0]
        factor = next((i for i in mul.input if i != node.output[0]), None)
        bias, scale = node.input[2], node.input[4]
        if factor not in inits or any(len(readers[name]) != 1 or name not in inits for name in (bias, scale)):
            continue
        s = numpy_helper.to_array(inits[factor]).astype(np.float32)
        ws, b = numpy_helper.to_array(inits[scale]).copy(), numpy_helper.to_array(inits[bias]).copy()
        width = ws.size // 3
        if s.shape != (width,) or ws.shape != (3 * width,) or b.shape != (3 * width,):
            continue  # one factor per channel of V, per-column weight scales
        ws[2 * width :] *= s
        b[2 * width :] *= s
        inits[scale].CopyFrom(numpy_helper.from_array(ws.astype(np.float32), scale))
        inits[bias].CopyFrom(numpy_helper.from_array(b.astype(np.float32), bias))
        for reader in readers.get(mul.output[0], []):
            for k, name in enumerate(reader.input):
                if name == mul.output[0]:
                    reader.input[k] = node.output[0]
        graph.node.remove(mul)
        folded += 1
    return folded


def int8_matmuls(graph: Any) -> int:
    """How many MatMuls `graph` runs int8: one per MatMulIntegerToFloat, three (Q, K, V) per QAttention."""
    return sum({"MatMulIntegerToFloat": 1, "QAttention": 3}.get(n.op_type, 0) for n in graph.node)


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
    checks: Sequence[Check] = (),
) -> SearchResult:
    """The fastest int8 graph the search finds whose top-1 agreement with fp32 reaches `min_agreement` and that
    passes every further check: static scales where they keep the decisions, per-token scales where they do not,
    fp32 where neither does."""
    import onnx

    problem_type = getattr(config, "problem_type", None)
    model = onnx.load(str(fp32_path))
    all_targets = targets(model)
    lookups = embedding_targets(model)
    columns = {i.name: int(i.dims[-1]) for i in model.graph.initializer if i.dims}  # scalars: transformers 5
    matmul_groups = [g for g in groups(model) if g[0] in all_targets]
    ranges = runtime.ranges(model, [g[0].input for g in matmul_groups], items)
    tried: list[dict[str, Any]] = []

    def make(name: str, kept: Sequence[Target] = (), dynamic: Sequence[Target] = (), smooth: bool = False) -> Recipe:
        kept_nodes, dynamic_nodes = {t.node for t in kept}, {t.node for t in dynamic}
        return Recipe(
            name,
            exclude=tuple(t.node for t in all_targets + lookups if t.node in kept_nodes),
            static=tuple(t.node for t in all_targets if t.node not in kept_nodes | dynamic_nodes),
            dynamic=tuple(t.node for t in all_targets if t.node in dynamic_nodes - kept_nodes),
            kept_matmuls=tuple(t.node for t in all_targets if t.node in kept_nodes),
            embeddings=tuple(dict.fromkeys(t.weight for t in lookups if t.node not in kept_nodes)),
            smoothed=smooth,
        )

    def graph(recipe: Recipe) -> Any:
        static = {t.input: ranges[t.input] for t in all_targets if t.node in set(recipe.static)}
        return rewrite(model, recipe.exclude, static, recipe.smoothed, recipe.embeddings8)

    def margin(result: Attempt) -> float:
        """How far a failed attempt is from passing: its worst figure against that figure's bound."""
        return min([result[2] - min_agreement] + [result[4][c.name] - c.bound for c in checks])

    Attempt = tuple[Path, Recipe, float, float, dict[str, float], bool]

    def attempt(recipe: Recipe, tag: str) -> Attempt:
        path = workdir / f"int8-{tag}.onnx"
        path.write_bytes(graph(recipe).SerializeToString())
        candidate = path.read_bytes()
        agreement, diff = compare(reference, runtime.logits(candidate, items), problem_type)
        extra = {c.name: c.measure(candidate) for c in checks}
        passes = agreement >= min_agreement and all(extra[c.name] >= c.bound for c in checks)
        tried.append(
            {
                "recipe": recipe.name,
                "static": len(recipe.static),
                "dynamic": len(recipe.dynamic),
                "kept_fp32": len(recipe.kept_matmuls),
                "fp16_embeddings": len(recipe.embeddings) - len(recipe.embeddings8),
                "int8_embeddings": len(recipe.embeddings8),
                "top1_agreement": agreement,
                "max_score_diff": diff,
                **extra,
            }
        )
        log(
            f"int8 recipe {recipe.name!r} (MatMuls: {len(recipe.static)} static, {len(recipe.dynamic)} per-token, "
            f"{len(recipe.kept_matmuls)} fp32; embedding tables: {len(recipe.embeddings) - len(recipe.embeddings8)} "
            f"fp16, {len(recipe.embeddings8)} 8-bit): "
            f"top-1 agreement {agreement:.2%}, max score diff {diff:.4f}"
            + "".join(f", {name} {value:.2%}" for name, value in extra.items())
        )
        return path, recipe, agreement, diff, extra, passes

    def bisect(order: list[list[Target]], recipe_for: Callable[[int], Recipe], upper: Attempt | None = None) -> Attempt:
        """The smallest k for which recipe_for(k) passes: recipe_for(0) failed, recipe_for(len(order)) passes (and
        is `upper` when that was already measured)."""
        lo, hi, best = 0, len(order), upper
        while hi - lo > 1:
            mid = (lo + hi) // 2
            result = attempt(recipe_for(mid), f"{len(tried)}")
            if result[5]:
                hi, best = mid, result
            else:
                lo = mid
        return best or attempt(recipe_for(len(order)), "upper")

    def done(result: Attempt) -> SearchResult:
        """The search's answer, its embedding tables 8-bit when that still passes (a quarter of fp32's memory
        instead of half)."""
        tables = tuple(e for e in result[1].embeddings if embedding_block(columns[e]))
        if result[5] and tables:
            recipe = replace(result[1], name=result[1].name + ", 8-bit embeddings", embeddings8=tables)
            leaner = attempt(recipe, "embeddings8")
            result = leaner if leaner[5] else result
        path, recipe, agreement, diff, extra, _ = result
        figures = {
            **extra,  # the final graph's figure of each further check
            "int8_top1_agreement": agreement,
            "int8_max_score_diff": diff,
            "int8_min_agreement": min_agreement,
            "int8_recipes_tried": tried,
        }
        return SearchResult(path, recipe.describe(), figures)

    result = attempt(make("int8, static scales"), "static")
    if result[5]:
        return done(result)
    smoothed = attempt(make("int8, smoothed static scales", smooth=True), "smoothed")
    if smoothed[5]:
        return done(smoothed)
    smooth = margin(smoothed) >= margin(result)  # the static form the mixed recipes below use
    static_name = "smoothed static" if smooth else "static"
    upper = attempt(make("int8, per-token scales", dynamic=all_targets), "dynamic")
    kept: list[Target] = []
    if not upper[5]:  # even per-token scales everywhere fall short: keep the groups they hurt most fp32
        every = [t.node for t in all_targets + lookups]
        order = sensitivity_order(
            groups(model),
            lambda g: rewrite(model, tuple(n for n in every if n not in {t.node for t in g})),
            reference,
            items,
            runtime,
            log,
            "per-token scales",
        )
        fp32_all = make("fp32 (no int8 recipe kept the decisions)", kept=all_targets + lookups)

        def keeping(k: int) -> Recipe:
            if k == len(order):
                return fp32_all
            return make("int8, per-token scales, sensitive nodes in fp32", kept=sum(order[:k], []), dynamic=all_targets)

        upper = bisect(order, keeping)
        if upper[1] is fp32_all:
            return done(upper)
        kept = [t for t in all_targets + lookups if t.node in upper[1].exclude]
        if not upper[1].dynamic:  # every MatMul fp32: no scales left to choose
            return done(upper)
        result = attempt(make(f"int8, {static_name} scales, sensitive nodes in fp32", kept=kept, smooth=smooth), "kept")
        if result[5]:
            return done(result)
    # the groups a static scale hurts most get per-token scales (the fp32 ones stay fp32)
    rest = [g for g in matmul_groups if not set(g) & set(kept)]
    order = sensitivity_order(
        rest,
        lambda g: rewrite(model, [t.node for t in all_targets if t not in g], {g[0].input: ranges[g[0].input]}, smooth),
        reference,
        items,
        runtime,
        log,
        f"a {static_name} scale",
    )
    name = f"int8, {static_name} and per-token scales" + (", sensitive nodes in fp32" if kept else "")
    return done(bisect(order, lambda k: make(name, kept=kept, dynamic=sum(order[:k], []), smooth=smooth), upper))


def sensitivity_order(
    candidates: list[list[Target]],
    graph_with: Callable[[list[Target]], Any],
    reference: np.ndarray,
    items: Sequence[Item],
    runtime: Runtime,
    log: Callable[[str], Any],
    what: str,
) -> list[list[Target]]:
    """Groups ordered by how much quantizing each one alone (`graph_with(group)`: that group changed, the rest
    fp32) moves the logits per weight element, worst first, measured on a spread subset of the inputs (cheap: a
    few short runs instead of one full run per MatMul)."""
    pick = np.linspace(0, len(items) - 1, min(PROBE_ITEMS, len(items))).round().astype(int)
    subset, ref = [items[i] for i in pick], reference[pick]
    scores = []
    for g in candidates:
        error = float(np.abs(runtime.logits(graph_with(g).SerializeToString(), subset) - ref).mean())
        scores.append(error / sum(t.size for t in g))
    log(f"int8 sensitivity to {what}: probed {len(candidates)} groups on {len(subset)} inputs")
    return [candidates[i] for i in np.argsort(scores)[::-1]]
