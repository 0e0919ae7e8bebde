"""Attention fusion: each encoder layer's attention core becomes one onnxruntime `MultiHeadAttention` node.

optimum's export spells attention out as reshapes, four transposes, two scalings, a masked softmax and two
batched MatMuls per layer: on 2 cores the transposes alone were 12% of a DistilBERT-base int8 run. onnxruntime's
own fusion (onnxruntime.transformers, shipped with the run time) replaces that core with its fused CPU kernel,
and nothing else: the Q/K/V, output and FFN MatMuls stay plain MatMuls for the int8 rewrite, LayerNorm and GELU
stay as exported. Measured one process per graph (`python -m experiments.attention_fusion`,
experiments/results/attention_fusion.md): int8 DistilBERT-base +30% sentences/s and -34% batch-1 latency, MiniLM-L6
level (+18% on a busier run); the fp32 graph's logits moved by 2e-6 to 4e-6. onnxruntime's full fusion set
(SkipLayerNorm, BiasGelu, EmbedLayerNorm, packed Attention) was slower with the int8 rewrite, so only attention
is fused.

The mask is given to the kernel as the raw [batch, tokens] attention mask (not as sequence lengths, which would
assume right padding), so a row's scores stay those it has alone. The export checks the fused fp32 graph against
torch like any other; if it does not match, the unfused graph is used.
"""

from __future__ import annotations

import logging
from typing import Any

from engine.export.graph.fuse_exported import fuse_exported_attention

# architectures whose exported attention onnxruntime's "bert" fusion recognises (tested: bert, distilbert, roberta)
FUSED_MODEL_TYPES = {"bert", "distilbert", "roberta", "xlm-roberta", "camembert", "electra"}


def heads_and_width(config: Any) -> tuple[int, int]:
    """(attention heads, hidden size) from a transformers config; DistilBERT calls them n_heads and dim."""
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None) or 0
    width = getattr(config, "hidden_size", None) or getattr(config, "dim", None) or 0
    return int(heads), int(width)


def fuse_attention(model: Any, config: Any) -> tuple[Any, int]:
    """(a copy of `model` with its attention cores fused, how many were), or (`model`, 0) when the architecture is
    not one the fusion knows or no core matched."""
    if config.model_type not in FUSED_MODEL_TYPES:
        return model, 0
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_by_fusion

    options = FusionOptions("bert")
    for name in (
        "enable_gelu",
        "enable_bias_gelu",
        "enable_gelu_approximation",
        "enable_layer_norm",
        "enable_skip_layer_norm",
        "enable_bias_skip_layer_norm",
        "enable_embed_layer_norm",
    ):
        setattr(options, name, False)
    options.use_multi_head_attention = True
    options.use_raw_attention_mask(True)
    heads, width = heads_and_width(config)
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    logging.disable(logging.WARNING)  # the fusion modules log each pattern they do not find, under their own names
    try:
        fused = optimize_by_fusion(copy, "bert", heads, width, options).model
    finally:
        logging.disable(logging.NOTSET)
    count = sum(n.op_type == "MultiHeadAttention" for n in fused.graph.node)
    if not count:  # transformers 5's exporter spells attention otherwise: fuse_exported.py
        return fuse_exported_attention(model, heads, width)
    if not any(o.domain == "com.microsoft" for o in fused.opset_import):  # declared, for onnx's own tools
        fused.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return fused, count
