"""Logits -> scores -> ranked labels. Pure numpy: this module must never import onnxruntime.

Semantics follow the transformers pipelines (see shared/spec-notes.md); the numerics are guarded so that
no input of finite logits produces NaN or inf, and non-finite logits are refused instead of ranked.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np

from engine.errors import InferenceError, InvalidRequestError


class Aggregation(str, Enum):
    """How the windows' scores of one long text become its scores (long_text="chunk", engine.runtime.chunking)."""

    MEAN = "mean"  # softmax models: the mean of the probabilities
    MAX = "max"  # sigmoid / multi-label: a label is present if any part of the text has it


class Activation(str, Enum):
    """`function_to_apply` of the HF task spec."""

    SIGMOID = "sigmoid"
    SOFTMAX = "softmax"
    NONE = "none"

    @classmethod
    def parse(cls, value: object) -> Activation | None:
        """None stays None (use the model's default); strings are matched case-insensitively."""
        if value is None or isinstance(value, Activation):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        allowed = ", ".join(repr(a.value) for a in cls)
        raise InvalidRequestError(f"function_to_apply must be one of {allowed} (or absent), got {value!r}")


def default_activation(problem_type: str | None, num_labels: int) -> Activation:
    """The reference pipeline's rule when the caller gives no function_to_apply."""
    if problem_type == "regression":
        return Activation.NONE
    if problem_type == "multi_label_classification" or num_labels == 1:
        return Activation.SIGMOID
    if problem_type == "single_label_classification" or num_labels > 1:
        return Activation.SOFTMAX
    return Activation.NONE


def check_finite(logits: np.ndarray) -> np.ndarray:
    """Refuse NaN/inf logits: ranking them would return silent garbage."""
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf here, and is refused below
        logits = np.asarray(logits, dtype=np.float32)
    if not np.isfinite(logits).all():
        raise InferenceError(
            "the model produced non-finite logits (NaN or inf); the model file is likely broken or "
            "quantized for another CPU: re-export it, or try --precision fp32"
        )
    return logits


def softmax(x: np.ndarray) -> np.ndarray:
    """Row softmax in float32, shifted by the true row max so exp never overflows."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):  # x - max can only overflow to -inf (logits ~ -3e38 vs 3e38): exp gives 0
        e = np.exp(x - x.max(axis=-1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function in float32 that never overflows: exp is only taken of -|x|."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(-np.abs(x))
    out: np.ndarray = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)
    return out


def margins(logits: np.ndarray) -> np.ndarray:
    """Each row's decision margin: top-1 minus top-2 softmax probability (float64). A single logit (a regression, or
    a score read against 0.5) has no runner-up: its margin is infinite. The int8 gate counts decisions by the fp32
    margin; a near-tie cascade (engine.runtime.loaded) re-scores rows by the int8 one."""
    if logits.shape[1] == 1:
        return np.full(len(logits), np.inf)
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    p = np.sort(np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), axis=1)
    return np.asarray(p[:, -1] - p[:, -2])


def activate(logits: np.ndarray, activation: Activation) -> np.ndarray:
    logits = check_finite(logits)
    if activation is Activation.SOFTMAX:
        return softmax(logits)
    if activation is Activation.SIGMOID:
        return sigmoid(logits)
    return logits


def parse_top_k(top_k: object) -> int | None:
    """`top_k`: a positive int, or None for every label. bool is refused even though it is an int."""
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise InvalidRequestError(f"top_k must be a positive integer or null (all labels), got {top_k!r}")
    if top_k < 1:
        raise InvalidRequestError(f"top_k must be >= 1 (or null for all labels), got {top_k}")
    return int(top_k)


def rank(scores: np.ndarray, top_k: int | None) -> np.ndarray:
    """Indices of one row's scores, best first; ties keep label order (a stable sort, like the reference)."""
    order = np.argsort(-scores, kind="stable")
    return order if top_k is None else order[:top_k]


def ranked_labels(scores: np.ndarray, labels: Sequence[str], top_k: int | None) -> list[tuple[str, float]]:
    return [(labels[i], float(scores[i])) for i in rank(scores, top_k)]


def ranked_rows(scores: np.ndarray, labels: Sequence[str], top_k: int | None) -> list[list[tuple[str, float]]]:
    """ranked_labels of every row of (rows, labels) scores, sorted in one call: per row in Python it cost ~5% of
    a MiniLM int8 call's time."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    values = np.take_along_axis(scores, order, axis=1).tolist()
    return [[(labels[i], v) for i, v in zip(idx, vals)] for idx, vals in zip(order.tolist(), values)]


def default_aggregation(activation: Activation) -> Aggregation:
    """Windows of one text: sigmoid labels are present if any window has them (max); probabilities and raw
    scores are averaged (mean)."""
    return Aggregation.MAX if activation is Activation.SIGMOID else Aggregation.MEAN


def aggregate(scores: np.ndarray, how: Aggregation) -> np.ndarray:
    """(windows, labels) -> (labels,). One window gives its own row back, bit for bit."""
    out: np.ndarray = scores.max(axis=0) if how is Aggregation.MAX else scores.mean(axis=0, dtype=np.float32)
    return out


def zero_shot_scores(
    logits: np.ndarray,
    entailment_id: int,
    contradiction_id: int,
    multi_label: bool,
    windows: int = 1,
    aggregation: Aggregation | None = None,
) -> np.ndarray:
    """Scores of one text's candidate labels from its (windows * n_labels, n_nli_classes) logits, window-major.

    multi_label (or a single label): each label on its own, softmax over [contradiction, entailment], then the
    windows' entailment shares aggregated per label (max by default: the label holds if any window entails it).
    Otherwise: the entailment logits aggregated per label across windows (mean by default), then softmax across
    the labels, so the scores sum to 1. With one window both are exactly the reference's scores.
    """
    logits = check_finite(logits)
    per_window = logits.reshape(windows, -1, logits.shape[-1])
    if multi_label or per_window.shape[1] == 1:
        pair = softmax(per_window[..., [contradiction_id, entailment_id]])[..., 1]
        return aggregate(pair, aggregation or Aggregation.MAX)
    return softmax(aggregate(per_window[..., entailment_id], aggregation or Aggregation.MEAN))


def relevance(logits: np.ndarray, raw: bool) -> np.ndarray:
    """Cross-encoder relevance per row: one logit as it is, two as (relevant - not relevant), so that the sigmoid of
    either is the probability (for two logits, softmax's share of the second). `raw` skips the sigmoid."""
    logits = check_finite(logits)
    score = logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]
    return score if raw else sigmoid(score)
