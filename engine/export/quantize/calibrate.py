"""Measuring candidates: the engine's own run time over the verification inputs, and top-1 agreement."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from engine.export.quantize.scheme import Item, Range
from engine.runtime import batching, postprocess
from engine.runtime.session import OnnxSession
from engine.runtime.tokenization import Strategy, TextTokenizer, Truncation


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


# A decision whose fp32 margin (top-1 minus top-2 probability) is below this is a
# near-tie: int8 flips it as easily as any rounding would, and a user acts on it no more than on a coin. The gate
# counts clear decisions only, unless near-ties are most of the texts (then it counts them all): a model trained
# on one domain makes near-ties of many generic texts while its own domain's decisions are clear, so counting
# them made the gate predict far more flips than its domain shows. experiments/gate_domains.py measures flip
# rates by margin on both; benchmarks' fidelity table checks the prediction on held-out in-domain texts.
CLEAR_MARGIN = 0.2


margins = postprocess.margins  # top-1 minus top-2 probability; a single logit's is infinite


def counted(reference: np.ndarray) -> np.ndarray:
    """Which decisions the gate counts: the clear ones, or all when near-ties are the majority."""
    clear = margins(reference) >= CLEAR_MARGIN
    return clear if clear.sum() * 2 >= len(clear) else np.ones(len(clear), dtype=bool)


def decisions(logits: np.ndarray) -> np.ndarray:
    """What a user acts on: the top label, or for a single-logit model which side of 0.5 the score falls."""
    return (logits[:, 0] > 0) if logits.shape[1] == 1 else logits.argmax(axis=1)


def compare(
    reference: np.ndarray, candidate: np.ndarray, problem_type: str | None, near_ties: bool = True
) -> tuple[float, float]:
    """(top-1 agreement, max score difference under the model's default activation); `near_ties=False` counts
    only the decisions the gate counts (`counted`)."""
    act = postprocess.default_activation(problem_type, reference.shape[1])
    same = decisions(reference) == decisions(candidate)
    agreement = float(same.mean() if near_ties else same[counted(reference)].mean())
    diff = float(np.abs(postprocess.activate(reference, act) - postprocess.activate(candidate, act)).max())
    return agreement, diff
