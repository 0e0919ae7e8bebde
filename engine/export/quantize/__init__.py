"""Accuracy-aware int8 quantization of ONNX graphs: row-independent by design, fused by onnxruntime.

Every MatMul with a constant weight becomes one `MatMulIntegerToFloat` with 7-bit per-channel weights (no int16
saturation on AVX2 without VNNI); each group of MatMuls sharing an input gets a static (optionally smoothed) or a
per-token dynamic activation scale, chosen by a search that must keep fp32's top-1 decisions (the `Check`s);
large embedding tables are stored 8-bit in blocks or fp16. Why each choice, with the experiments that measured
it: docs/design/int8.md.
"""

from engine.export.quantize.calibrate import CLEAR_MARGIN, Runtime, compare, counted, decisions, margins
from engine.export.quantize.passes import MHA_ATTRIBUTES, fold_attention_smoothing, fuse_qkv, int8_matmuls
from engine.export.quantize.rewrite import bias_add, rewrite
from engine.export.quantize.scheme import (
    EMBEDDING_BLOCKS,
    EMBEDDING_MIN_SIZE,
    PROBE_ITEMS,
    SMOOTHING,
    WEIGHT_MAX,
    Item,
    Range,
    Recipe,
    Target,
    embedding_block,
    embedding_targets,
    groups,
    quantize_blocks,
    quantize_weight,
    smoothing,
    static_scale,
    targets,
)
from engine.export.quantize.search import Check, Memo, SearchResult, search, sensitivity_order

__all__ = [
    "CLEAR_MARGIN",
    "EMBEDDING_BLOCKS",
    "EMBEDDING_MIN_SIZE",
    "MHA_ATTRIBUTES",
    "PROBE_ITEMS",
    "SMOOTHING",
    "WEIGHT_MAX",
    "Check",
    "Item",
    "Memo",
    "Range",
    "Recipe",
    "Runtime",
    "SearchResult",
    "Target",
    "bias_add",
    "compare",
    "counted",
    "decisions",
    "embedding_block",
    "embedding_targets",
    "fold_attention_smoothing",
    "fuse_qkv",
    "groups",
    "int8_matmuls",
    "margins",
    "quantize_blocks",
    "quantize_weight",
    "rewrite",
    "search",
    "sensitivity_order",
    "smoothing",
    "static_scale",
    "targets",
]
