"""Attention fusion for graphs from transformers 5's exporter (torch.export, then onnxscript): the same result as
fuse.py's onnxruntime fusion gives optimum's graphs, for a graph that fusion does not recognise.

Such a graph spells each attention core as torchlib's scaled_dot_product_attention: Q and K^T each scaled by the
square root of the scale (K^T made by a reshape, a transpose and a reshape), a MatMul, the additive mask, a
Softmax, a MatMul by V, transformers' `Where` that zeroes a row masked at every key, then the heads merged back
(a transpose and a reshape). Its mask is built from `attention_mask` by gathers and comparisons that
onnxruntime's fusion does not follow either. Each core found from its Softmax becomes one onnxruntime
`MultiHeadAttention` laid out as that fusion lays it out, so the int8 rewrite (quantize.fuse_qkv) treats both
alike: query, key and value are the projections' MatMul outputs, their biases one packed Q|K|V bias input, the
mask the raw `attention_mask` cast to int32 (each row's padded keys masked, nothing else: the fused model types
are bidirectional encoders without a sliding window).

A core that does not have this shape is left as it is. The export checks the fused graph against torch like any
other and keeps the unfused one if it does not match, so a match that misreads a graph costs only the fusion.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

MASK_INPUT = "attention_mask"
MASK_INT32 = "attention_mask/int32"
HEAD_PERM = [0, 2, 1, 3]  # [batch, tokens, heads, head size] <-> [batch, heads, tokens, head size]


class _Graph:
    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.producer = {o: n for n in graph.node for o in n.output}
        self.readers: dict[str, list[Any]] = defaultdict(list)
        for n in graph.node:
            for i in n.input:
                self.readers[i].append(n)
        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for n in graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.constants[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)

    def made_by(self, name: str, op_type: str) -> Any | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def perm(self, node: Any) -> list[int]:
        from onnx import helper

        return next((list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "perm"), [])

    def scalar(self, name: str) -> float | None:
        value = self.constants.get(name)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    def unscaled(self, name: str) -> tuple[str, float]:
        """(x, s) when `name` is x * s or x / (1/s) by a constant scalar, else (name, 1)."""
        node = self.producer.get(name)
        if node is not None and node.op_type in ("Mul", "Div") and len(node.input) == 2:
            value = self.scalar(node.input[1])
            if value is not None and value != 0:
                return node.input[0], value if node.op_type == "Mul" else 1.0 / value
            if node.op_type == "Mul" and (value := self.scalar(node.input[0])) is not None:
                return node.input[1], value
        return name, 1.0

    def split_heads(self, name: str) -> str | None:
        """x when `name` is Transpose(Reshape(x), perm=[0, 2, 1, 3])."""
        transpose = self.made_by(name, "Transpose")
        if transpose is None or self.perm(transpose) != HEAD_PERM:
            return None
        reshape = self.made_by(transpose.input[0], "Reshape")
        return reshape.input[0] if reshape is not None else None

    def before_reshapes(self, name: str, limit: int = 6) -> str | None:
        """The tensor a chain of at most `limit` Reshapes and Transposes starts from (K, before it became K^T)."""
        steps = 0
        while (node := self.producer.get(name)) is not None and node.op_type in ("Reshape", "Transpose"):
            name, steps = node.input[0], steps + 1
            if steps > limit:
                return None
        return name if steps >= 2 else None

    def projection(self, name: str) -> tuple[str, np.ndarray | None] | None:
        """(MatMul output, bias) when `name` is MatMul(x, W) + b (or the MatMul alone) with constant W and b."""
        node = self.producer.get(name)
        if node is not None and node.op_type == "Add" and len(node.input) == 2:
            for mm, bias in (node.input, node.input[::-1]):
                matmul = self.made_by(mm, "MatMul")
                if matmul is not None and bias in self.constants and self.constants[bias].ndim == 1:
                    return (mm, self.constants[bias]) if matmul.input[1] in self.constants else None
            return None
        if node is not None and node.op_type == "MatMul" and node.input[1] in self.constants:
            return name, None
        return None


def fuse_exported_attention(model: Any, heads: int, width: int) -> tuple[Any, int]:
    """(a copy of `model` with each attention core as above fused, how many were), or (`model`, 0)."""
    import onnx
    from onnx import helper, numpy_helper

    if heads <= 0 or width <= 0 or width % heads or MASK_INPUT not in {i.name for i in model.graph.input}:
        return model, 0
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    g = _Graph(copy.graph)
    default_scale = 1.0 / math.sqrt(width // heads)
    replaced: dict[int, Any] = {}  # id of the node making a core's output -> the MultiHeadAttention that replaces it
    new_initializers = []
    for softmax in [n for n in copy.graph.node if n.op_type == "Softmax"]:
        scores = g.producer.get(softmax.input[0])
        if scores is not None and scores.op_type == "Add":  # the additive mask
            scores = next((p for i in scores.input if (p := g.made_by(i, "MatMul")) is not None), None)
        if scores is None or scores.op_type != "MatMul":
            continue
        (q4, q_scale), (kt4, k_scale) = g.unscaled(scores.input[0]), g.unscaled(scores.input[1])
        readers = g.readers[softmax.output[0]]
        if len(readers) != 1 or readers[0].op_type != "MatMul" or readers[0].input[0] != softmax.output[0]:
            continue
        context = readers[0]
        q, k, v = g.split_heads(q4), g.before_reshapes(kt4), g.split_heads(context.input[1])
        out = context.output[0]
        after = g.readers[out]
        if len(after) == 1 and after[0].op_type == "Where" and after[0].input[2] == out:  # a fully masked row's zeros
            out, after = after[0].output[0], g.readers[after[0].output[0]]
        if len(after) != 1 or after[0].op_type != "Transpose" or g.perm(after[0]) != HEAD_PERM:
            continue
        merge = g.readers[after[0].output[0]]
        if len(merge) != 1 or merge[0].op_type != "Reshape" or None in (q, k, v):
            continue
        projections = [g.projection(t) for t in (q, k, v) if t is not None]
        if len(projections) != 3 or any(p is None for p in projections):
            continue
        biases = [b if b is not None else np.zeros(width, np.float32) for _, b in projections]  # type: ignore[misc]
        if any(b.shape != (width,) for b in biases):
            continue
        name = f"fused_attention/{len(replaced)}"
        new_initializers.append(numpy_helper.from_array(np.concatenate(biases).astype(np.float32), f"{name}/bias"))
        inputs = [p[0] for p in projections] + [f"{name}/bias", MASK_INT32]  # type: ignore[index]
        node = helper.make_node("MultiHeadAttention", inputs, list(merge[0].output), name, domain="com.microsoft")
        node.attribute.append(helper.make_attribute("num_heads", heads))
        scale = q_scale * k_scale
        if not math.isclose(scale, default_scale, rel_tol=1e-6):
            node.attribute.append(helper.make_attribute("scale", scale))
        replaced[id(merge[0])] = node
    if not replaced:
        return model, 0
    cast = helper.make_node("Cast", [MASK_INPUT], [MASK_INT32], "fused_attention/mask", to=onnx.TensorProto.INT32)
    nodes = [cast] + [replaced.get(id(n), n) for n in copy.graph.node]
    del copy.graph.node[:]
    copy.graph.node.extend(_live(nodes, {o.name for o in copy.graph.output}))
    copy.graph.initializer.extend(new_initializers)
    read = {i for n in copy.graph.node for i in n.input} | {o.name for o in copy.graph.output}
    used = [t for t in copy.graph.initializer if t.name in read]  # the scales and biases the fused nodes held
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(used)
    produced = {o for n in copy.graph.node for o in n.output}
    kept = [v for v in copy.graph.value_info if v.name in produced]
    del copy.graph.value_info[:]
    copy.graph.value_info.extend(kept)
    if not any(o.domain == "com.microsoft" for o in copy.opset_import):
        copy.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return copy, len(replaced)


def _live(nodes: list[Any], outputs: set[str]) -> list[Any]:
    """`nodes` less those whose outputs nothing reads (repeatedly), in their order."""
    while True:
        read = outputs | {i for n in nodes for i in n.input}
        kept = [n for n in nodes if any(o in read for o in n.output)]
        if len(kept) == len(nodes):
            return nodes
        nodes = kept
