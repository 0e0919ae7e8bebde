"""The fp32 ONNX graph of a sequence classifier through transformers 5's own exporter.

transformers 5 ships an ONNX exporter (`transformers.exporters.OnnxExporter`: torch.export, then torch.onnx's
dynamo translation and onnxscript's optimizer). optimum-onnx, which exported for transformers 4 (its
`onnx_export_from_model`), has no release for transformers 5 (0.1.0 requires transformers<4.58 and imports names
transformers 5 removed), and torch.onnx's older TorchScript exporter traces transformers 5's mask code wrongly (the
logits of a tiny BERT moved by ~40). So with transformers 5 the export goes through this module; with transformers
4.57 it keeps optimum's export (export.py picks).

The graph takes what optimum's graphs take: `input_ids`, `attention_mask`, and `token_type_ids` only where the model
has more than one token type; it returns `logits`. Batch and sequence axes are dynamic, the sequence up to the
model's window. The sample inputs are made from the config alone (no tokenizer): two rows, the second padded, token
ids that are no special token, each row ending in the EOS token (BART pools it, and wants equal counts per row).
"""

from __future__ import annotations

import contextlib
import inspect
import io
from pathlib import Path
from typing import Any

SAMPLE_TOKENS = 16  # the sample's length (shorter when the window is): its values are not baked into the graph
SAMPLE_PADDING = 5  # the second row's padding


def available() -> bool:
    """Whether the installed transformers has its own ONNX exporter (transformers 5)."""
    try:
        from transformers.exporters import OnnxExporter  # type: ignore[attr-defined]  # noqa: F401
    except ImportError:
        return False
    return True


def _special_ids(config: Any) -> set[int]:
    names = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id", "unk_token_id")
    ids = {getattr(config, n, None) for n in names}
    return {int(i) for i in ids if isinstance(i, int) and not isinstance(i, bool)}


def sample_inputs(model: Any, max_length: int) -> dict[str, Any]:
    """Forward kwargs for tracing: see the module doc."""
    import torch

    config = model.config
    accepted = set(inspect.signature(model.forward).parameters)  # transformers 5 wraps forward: signature follows
    tokens = max(4, min(SAMPLE_TOKENS, max_length))
    pad = SAMPLE_PADDING if tokens > SAMPLE_PADDING + 2 else 1
    vocab = int(config.vocab_size)
    special = _special_ids(config)
    ordinary = torch.tensor([i for i in range(min(vocab, 4096)) if i not in special][: max(8, tokens)])
    generator = torch.Generator().manual_seed(0)
    ids = ordinary[torch.randint(len(ordinary), (2, tokens), generator=generator)]
    mask = torch.ones(2, tokens, dtype=torch.long)
    mask[1, tokens - pad :] = 0
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, int) and not isinstance(eos, bool):
        ids[0, -1] = eos
        ids[1, tokens - pad - 1] = eos
    pad_id = getattr(config, "pad_token_id", None)
    ids[1, tokens - pad :] = pad_id if isinstance(pad_id, int) and not isinstance(pad_id, bool) else 0
    sample = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in accepted and (getattr(config, "type_vocab_size", 0) or 0) > 1:
        types = torch.zeros(2, tokens, dtype=torch.long)
        types[:, tokens // 2 :] = 1
        sample["token_type_ids"] = types
    return {k: v for k, v in sample.items() if k in accepted}


def export_fp32(model: Any, out: Path, max_length: int) -> Path:
    """Write `out`/model.onnx (weights inside the file) and return its path."""
    import onnx_ir
    from torch.export import Dim
    from transformers.exporters import OnnxConfig, OnnxExporter  # type: ignore[attr-defined]

    sample = sample_inputs(model, max_length)
    # DYNAMIC, not named Dims: a model's own guards may narrow the range (BART's: at least 3 tokens) without failing
    # the export; the checks after it run every verification text through the graph
    sequence = Dim.DYNAMIC(max=max(max_length, sample["input_ids"].shape[1]))
    shapes = {name: {0: Dim.DYNAMIC, 1: sequence} for name in sample}
    with contextlib.redirect_stdout(io.StringIO()):  # torch.onnx prints each stage ("[torch.onnx] Run ...")
        exported = OnnxExporter().export(  # type: ignore[no-untyped-call]
            model, sample, OnnxConfig(dynamic_shapes=shapes, optimize=True)
        )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    onnx_ir.save(exported.program, str(path))
    return path
