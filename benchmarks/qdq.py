"""The engine's int8 graph in standard QDQ form, for OpenVINO: the lever of an OpenVINO backend for the engine.

OpenVINO's ONNX reader takes onnxruntime's MatMulIntegerToFloat as plain float math; QuantizeLinear ->
DequantizeLinear -> MatMul is the pattern its low-precision transformations run as int8 (as they run NNCF's
graphs). Used by `python -m benchmarks` (system "engine int8 graph on OpenVINO") and `experiments.int8_levers`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def qdq_form(model: Any) -> Any:
    """The engine's int8 graph in the standard QDQ form that OpenVINO's low-precision transformations run as int8:
    a static group's QuantizeLinear feeds a DequantizeLinear, each MatMulIntegerToFloat becomes a MatMul of that
    and the dequantized 7-bit weights, plus the bias (a QAttention: three such MatMuls and the MultiHeadAttention
    it fused). A per-token group has no static form: it becomes an fp32
    MatMul of its original input with the dequantized weights (what OpenVINO runs for it is then more exact). An
    8-bit embedding table becomes its dequantized fp32 values (the same numbers) behind a plain Gather."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    array = lambda name: numpy_helper.to_array(inits[name])  # noqa: E731
    nodes: list[Any] = []
    extra: list[Any] = []
    dequantized: set[str] = set()
    replaced: set[str] = set()  # outputs of the per-token groups' offset Adds, now made by the fp32 MatMul
    for node in graph.node:
        if node.op_type == "GatherBlockQuantized":  # an 8-bit embedding table: the same values, fp32, plain Gather
            table, indices, scale, zero = node.input
            q = array(table).astype(np.float32) - array(zero).astype(np.float32).repeat(node_block(node), axis=1)
            values = q * array(scale).repeat(node_block(node), axis=1)
            extra.append(numpy_helper.from_array(values.astype(np.float32), table + "/f32"))
            nodes.append(helper.make_node("Gather", [table + "/f32", indices], list(node.output)))
            continue
        if node.op_type == "QAttention":  # fused Q/K/V projections: back to three QDQ MatMuls + MultiHeadAttention
            xq, w, bias, a_scale, w_scale, mask, a_zero = node.input
            if xq not in dequantized:
                dequantized.add(xq)
                nodes.append(helper.make_node("DequantizeLinear", [xq, a_scale, a_zero], [xq + "/dq"]))
            p = node.output[0] + "/qdq/"
            parts = zip(np.split(array(w), 3, axis=1), np.split(array(w_scale), 3), "qkv", strict=True)
            for weights, scales, name in parts:
                extra += [
                    numpy_helper.from_array(weights, p + name + "/w8"),
                    numpy_helper.from_array(scales, p + name + "/ws"),
                    numpy_helper.from_array(np.zeros(scales.shape, np.int8), p + name + "/wz"),
                ]
                nodes += [
                    helper.make_node(
                        "DequantizeLinear",
                        [p + name + "/w8", p + name + "/ws", p + name + "/wz"],
                        [p + name + "/w"],
                        axis=1,
                    ),
                    helper.make_node("MatMul", [xq + "/dq", p + name + "/w"], [p + name]),
                ]
            attention = helper.make_node(
                "MultiHeadAttention", [p + "q", p + "k", p + "v", bias, mask], list(node.output), domain="com.microsoft"
            )
            attention.attribute.extend(node.attribute)
            nodes.append(attention)
            continue
        if node.op_type != "MatMulIntegerToFloat":
            nodes.append(node)
            continue
        xq, w, a_scale, w_scale, a_zero = node.input[:5]
        p = node.output[0] + "/qdq/"
        if a_scale in inits:  # static
            if xq not in dequantized:
                dequantized.add(xq)
                nodes.append(helper.make_node("DequantizeLinear", [xq, a_scale, a_zero], [xq + "/dq"]))
            extra.append(numpy_helper.from_array(np.zeros(inits[w_scale].dims, np.int8), p + "wz"))
            nodes.append(helper.make_node("DequantizeLinear", [w, w_scale, p + "wz"], [p + "w"], axis=1))
            bias = node.input[6] if len(node.input) > 6 else ""
            nodes.append(helper.make_node("MatMul", [xq + "/dq", p + "w"], [p + "mm" if bias else node.output[0]]))
            if bias:
                nodes.append(helper.make_node("Add", [p + "mm", bias], [node.output[0]]))
            continue
        # per token: x from the token's ReduceMax; out = x (wq ws) + bias, the bias being the offset's second row
        x = producer[xq.removesuffix("q") + "hi"].input[0]
        add = next((n for n in graph.node if n.op_type == "Add" and node.output[0] in n.input), None)
        weights = array(w).astype(np.float32) * array(w_scale)
        if add is None:  # no zero-point offset or bias after it: the product is the output
            extra.append(numpy_helper.from_array(weights, p + "w"))
            nodes.append(helper.make_node("MatMul", [x, p + "w"], [node.output[0]]))
            continue
        offset = next(i for i in add.input if i != node.output[0])
        bias = array(producer[offset].input[1])[1]
        extra += [numpy_helper.from_array(weights, p + "w"), numpy_helper.from_array(bias.astype(np.float32), p + "b")]
        nodes += [
            helper.make_node("MatMul", [x, p + "w"], [p + "mm"]),
            helper.make_node("Add", [p + "mm", p + "b"], [add.output[0]]),
        ]
        replaced.add(add.output[0])
    nodes = [n for n in nodes if not (n.op_type == "Add" and n.output[0] in replaced and n.input[0].endswith("/int"))]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(extra)
    return model


def node_block(node: Any) -> int:
    return next(a.i for a in node.attribute if a.name == "block_size")


def qdq_file(engine_dir: Path, out: Path) -> Path:
    """`engine_dir`'s model.onnx in QDQ form, written to `out` (once)."""
    import onnx

    if not out.exists():
        onnx.save(qdq_form(onnx.load(str(engine_dir / "model.onnx"))), str(out))
    return out
