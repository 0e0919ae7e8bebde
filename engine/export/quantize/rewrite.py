"""The graph rewrite: a recipe applied to an fp32 ONNX graph (MatMulIntegerToFloat, QuantizeLinear, tables)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from engine.export.quantize import passes
from engine.export.quantize.scheme import (
    Range,
    embedding_block,
    embedding_targets,
    quantize_blocks,
    quantize_weight,
    smoothing,
    static_scale,
    targets,
)


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
    passes.fuse_qkv(graph)
    passes.fold_attention_smoothing(graph)
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
