"""First-token pruning: the last layer computes, after its attention, only the token the classifier head reads.

A sequence classifier's head reads one token of the last hidden state (BERT's pooler, DistilBERT's and RoBERTa's
heads: token 0). Everything between the last attention and that read works on each token alone (the output
projection, residual adds, LayerNorms, the feed-forward MatMuls and GELU), so computing it for the other tokens
is thrown away: three quarters of the last layer's MatMul work, a twelfth of a 6-layer model's. This pass moves
the head's read up to where that token-by-token stretch begins: each tensor entering it is sliced to token 0,
and the stretch runs on one token per sequence. The head's own read is left in place (it reads token 0 of a
one-token tensor). Every row is still computed alone, so rows stay independent of their batch neighbours.

The stretch is found by walking back from the head's read while the nodes are token-by-token: element-wise ops
whose constant operands are scalars or per-channel vectors, LayerNormalization over the last axis, MatMul by a
constant 2-D weight, and in an int8 graph QuantizeLinear with one constant scale and the static
MatMulIntegerToFloat (a per-token group computes its scales, so it ends the walk). Anything else ends the walk
(the last attention). Then every node whose output is also read from outside the stretch leaves it (the
residual stream, which the last attention reads too), until none is. The tensors entering what is left are
sliced; a computed scalar or per-channel vector is left whole. Nothing is pruned when the head's read is not a
Gather of token 0 along axis 1 (BART pools its last EOS token) or when the stretch holds no MatMul.

The export prunes its final graph, after the int8 recipe search and its gates (so calibration and gates see
every token), checks the pruned graph's logits against the unpruned one's, and keeps the unpruned one if they
differ or it does not run.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Erf", "Gelu", "Tanh", "Relu", "Sigmoid", "Pow", "Sqrt", "Cast", "Identity"}


def _constants(graph: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _token_by_token(node: Any, constants: dict[str, np.ndarray]) -> bool:
    """Whether `node` computes each token from that token alone, given which of its inputs are constants."""
    const = [i in constants for i in node.input if i]
    shapes = [constants[i].shape for i in node.input if i in constants]
    if node.op_type in ELEMENTWISE:
        return not all(const) and all(len(s) <= 1 for s in shapes)
    if node.op_type == "LayerNormalization":
        return not const[0] and _attr(node, "axis", -1) == -1 and all(len(s) <= 1 for s in shapes)
    if node.op_type == "MatMul":
        return len(node.input) == 2 and not const[0] and const[1] and len(shapes[0]) == 2
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):  # one scale and zero point for the whole tensor
        return not const[0] and all(const[1:]) and all(len(s) == 0 for s in shapes)
    if node.op_type == "MatMulIntegerToFloat":  # the engine's static int8 MatMul: A's scale is one constant
        ranks = [len(constants[i].shape) if i in constants else (-1 if i == "" else None) for i in node.input]
        return (
            not const[0]
            and all(const[1:])
            and ranks[1:3] == [2, 0]
            and all(r is not None and r <= 1 for r in ranks[3:])  # -1: an optional input left out
        )
    return False


def _ranks(model: Any) -> dict[str, int]:
    """Tensor ranks that onnx's shape inference can tell (not past onnxruntime's contrib ops)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # onnx raises several kinds; without ranks every cut is taken as [batch, tokens, ...]
        return {}
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.tensor_type.HasField("shape")}


def _head_read(graph: Any, constants: dict[str, np.ndarray]) -> Any | None:
    """The one Gather of token 0 along axis 1: what a classifier head reads of the last hidden state."""
    reads = [
        n
        for n in graph.node
        if n.op_type == "Gather"
        and _attr(n, "axis", 0) == 1
        and n.input[1] in constants
        and constants[n.input[1]].ndim == 0
        and int(constants[n.input[1]]) == 0
    ]
    return reads[0] if len(reads) == 1 else None


def prune_to_first_token(model: Any) -> tuple[Any, int]:
    """(a copy of `model` whose token-by-token stretch before the head's read runs on token 0 only, how many MatMuls
    it holds), or (`model`, 0) when nothing can be pruned (see the module doc)."""
    import onnx
    from onnx import helper

    graph = model.graph
    constants = _constants(graph)
    head = _head_read(graph, constants)
    if head is None:
        return model, 0
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[Any]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            readers[i].append(n)
    outputs = {o.name for o in graph.output}

    stretch: list[Any] = []  # every token-by-token node the walk back from the head reaches
    todo, seen = [head.input[0]], set()
    while todo:
        name = todo.pop()
        node = producer.get(name)
        if name in seen or node is None or not _token_by_token(node, constants):
            seen.add(name)
            continue
        seen.add(name)
        stretch.append(node)
        todo += [i for i in node.input if i and i not in constants]
    while True:  # drop the nodes something outside reads (the residual stream of earlier layers), until none is
        inside = {id(n) for n in stretch} | {id(head)}
        kept = [
            n for n in stretch if all(o not in outputs and all(id(r) in inside for r in readers[o]) for o in n.output)
        ]
        if len(kept) == len(stretch):
            break
        stretch = kept
    produced = {o for n in stretch for o in n.output}
    if head.input[0] not in produced:
        return model, 0
    cuts = {i for n in stretch for i in n.input if i and i not in constants and i not in produced}
    ranks = _ranks(model)
    if any(ranks.get(c) == 2 for c in cuts):  # [batch, tokens] or [tokens, width]: which axis is which is unclear
        return model, 0
    cuts = {c for c in cuts if ranks.get(c, 3) >= 3}  # a computed scalar or per-channel vector has no token axis
    matmuls = sum(n.op_type in ("MatMul", "MatMulIntegerToFloat") for n in stretch)
    if not matmuls:
        return model, 0

    copy = onnx.ModelProto.FromString(model.SerializeToString())
    g = copy.graph
    bounds = {"starts": 0, "ends": 1, "axes": 1}
    for key, value in bounds.items():
        g.initializer.append(onnx.numpy_helper.from_array(np.array([value], np.int64), f"first_token/{key}"))
    names = {n.output[0] for n in stretch}
    sliced = {cut: f"{cut}/first_token" for cut in cuts}
    nodes: list[Any] = []
    emitted: set[str] = set()
    for node in g.node:
        if node.output and node.output[0] in names:
            for i, name in enumerate(node.input):
                if name in sliced:
                    if name not in emitted:
                        nodes.append(
                            helper.make_node(
                                "Slice",
                                [name, "first_token/starts", "first_token/ends", "first_token/axes"],
                                [sliced[name]],
                                name=f"first_token/{len(emitted)}",
                            )
                        )
                        emitted.add(name)
                    node.input[i] = sliced[name]
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    changed = {o for n in stretch for o in n.output}  # their shapes lost the token axis's length
    kept = [v for v in g.value_info if v.name not in changed]
    del g.value_info[:]
    g.value_info.extend(kept)
    return copy, matmuls
