"""The int8 scheme: 7-bit per-channel weights, activation ranges and smoothing, block-quantized embedding
tables, and the recipe that says which group gets which form (docs/design/int8.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
    out: np.ndarray = (s / np.exp(np.log(s).mean())).astype(np.float32)
    return out


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
