"""What every made graph is checked on: the verification texts (built in, or --calibration-file), the bounds of
each check, and the zero-shot grid that holds an NLI model's int8 graph to the labels fp32 picks."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ExportError
from engine.export import quantize
from engine.runtime import postprocess

HERE = Path(__file__).resolve().parent
VERIFICATION_TEXTS = HERE / "verification_texts.txt"
FP32_ATOL = 1e-4  # torch vs ONNX fp32: same math, so only float reordering may differ
MIN_INT8_AGREEMENT = 0.99
# int8 text classifiers re-score in fp32 the rows whose int8 margin is below this (engine.runtime.loaded): the
# gate's own line between a near-tie and a clear decision (quantize.CLEAR_MARGIN), fixed before any held-out
# text was seen; `python -m experiments.headroom CKPT --cascade 0.05 0.1 0.2` measures other lines
RESCORE_MARGIN = quantize.CLEAR_MARGIN
# hypotheses of the NLI checks ("This example is {topic}."): the pipeline's default template
NLI_TOPICS = ["politics", "sports", "technology", "a complaint", "good news", "science"]
# label sets of the int8 zero-shot gate: every verification premise is ranked against each ("This example is {}.")
ZERO_SHOT_LABEL_SETS = (
    tuple(NLI_TOPICS),
    ("positive", "negative", "neutral"),
    ("a question", "a complaint", "praise", "a request"),
)
MIN_ZERO_SHOT_AGREEMENT = 0.99  # what a zero-shot user sees: the winning label, as fp32 picks it


def verification_inputs(path: Path | None, pairs: bool, nli: bool) -> list[str | tuple[str, str]]:
    """The texts every check runs on: singles, plus pairs for pair models. NLI models get (premise, hypothesis)
    pairs only, as zero-shot runs them (BART's head also needs the same number of </s> in every row of a batch)."""
    source = path or VERIFICATION_TEXTS
    try:
        texts = [t.strip() for t in source.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read verification texts from {source}: {exc}") from exc
    texts = [t for t in texts if t and not t.startswith("#")]
    if len(texts) < 20:
        raise ExportError(f"{source} has {len(texts)} texts; the checks need at least 20 non-empty lines")
    if nli:
        return [(t, f"This example is {NLI_TOPICS[i % len(NLI_TOPICS)]}.") for i, t in enumerate(texts)]
    items: list[str | tuple[str, str]] = list(texts)
    if pairs:
        items += [(texts[i], texts[(i + 1) % len(texts)]) for i in range(len(texts))]
    return items


def check_label_sets(label_sets: Sequence[Sequence[str]] | None) -> list[list[str]]:
    """The zero-shot gate's label sets: the given ones (each of two or more distinct, non-blank labels), else the
    generic ZERO_SHOT_LABEL_SETS."""
    if label_sets is None:
        return [list(labels) for labels in ZERO_SHOT_LABEL_SETS]
    checked = [[label.strip() for label in labels] for labels in label_sets]
    for labels in checked:
        if len(labels) < 2 or any(not label for label in labels) or len(set(labels)) != len(labels):
            raise ExportError(
                f"--zero-shot-labels takes sets of two or more distinct, non-blank labels, got {labels!r}"
            )
    if not checked:
        raise ExportError("--zero-shot-labels needs at least one label set")
    return checked


class ZeroShotGrid:
    """Zero-shot as its users see it: every verification premise against every label set (softmax of the
    entailment logits across a set's labels; the winner is the argmax). `check` gates the int8 search on how
    often a candidate graph picks fp32's winner; `figures` describes the final graph."""

    def __init__(
        self,
        runtime: Any,
        fp32_path: Path,
        items: Sequence[str | tuple[str, str]],
        entail: int,
        label_sets: Sequence[Sequence[str]] = ZERO_SHOT_LABEL_SETS,
    ) -> None:
        self.runtime, self.entail = runtime, entail
        self.label_sets = [list(labels) for labels in label_sets]
        self.premises = [item[0] for item in items if isinstance(item, tuple)]
        labels = [label for labels in self.label_sets for label in labels]
        self.grid = [(p, f"This example is {label}.") for p in self.premises for label in labels]
        self.reference = self.scores(fp32_path.read_bytes())

    def scores(self, graph: bytes) -> list[np.ndarray]:
        """Per label set: (premises, labels) scores."""
        logits = self.runtime.logits(graph, self.grid)[:, self.entail].reshape(len(self.premises), -1)
        bounds = np.cumsum([0, *(len(labels) for labels in self.label_sets)])
        return [postprocess.softmax(logits[:, a:b]) for a, b in itertools.pairwise(bounds)]

    def agreement(self, graph: bytes) -> float:
        got = self.scores(graph)
        same = [(r.argmax(axis=1) == g.argmax(axis=1)) for r, g in zip(self.reference, got)]
        return float(np.concatenate(same).mean())

    def check(self, bound: float) -> quantize.Check:
        return quantize.Check("int8_zero_shot_top1_agreement", bound, self.agreement)

    def figures(self, final_path: Path, bound: float, log: Any) -> dict[str, Any]:
        graph = final_path.read_bytes()
        agreement = self.agreement(graph)
        diff = max(float(np.abs(r - g).max()) for r, g in zip(self.reference, self.scores(graph)))
        sets = len(self.label_sets)
        log(
            f"int8 vs fp32 zero-shot ({len(self.premises)} texts x {sets} label sets): "
            f"top-1 agreement {agreement:.2%} (bound {bound:.0%}), max score diff {diff:.4f}"
        )
        return {
            "int8_zero_shot_top1_agreement": agreement,
            "int8_zero_shot_max_score_diff": diff,
            "int8_zero_shot_min_agreement": bound,
            "int8_zero_shot_texts": len(self.premises),
            "int8_zero_shot_label_sets": self.label_sets,
        }
