"""The numpy core: activation rule, guarded numerics, ranking, zero-shot scoring."""

from __future__ import annotations

import numpy as np
import pytest

from engine import InferenceError, InvalidRequestError
from engine.runtime.postprocess import (
    Activation,
    activate,
    default_activation,
    parse_top_k,
    rank,
    sigmoid,
    softmax,
    zero_shot_scores,
)


@pytest.mark.parametrize(
    ("problem_type", "num_labels", "expected"),
    [
        ("regression", 1, Activation.NONE),
        ("regression", 3, Activation.NONE),
        ("multi_label_classification", 4, Activation.SIGMOID),
        (None, 1, Activation.SIGMOID),
        ("single_label_classification", 1, Activation.SIGMOID),  # num_labels == 1 wins, as in the reference
        ("single_label_classification", 3, Activation.SOFTMAX),
        (None, 2, Activation.SOFTMAX),
    ],
)
def test_default_activation_rule(problem_type: str | None, num_labels: int, expected: Activation) -> None:
    assert default_activation(problem_type, num_labels) is expected


@pytest.mark.parametrize("value", [1e4, -1e4, 88.8, -104.0, 0.0])
def test_extreme_logits_stay_finite_and_bounded(value: float) -> None:
    logits = np.array([[value, 0.0, -value]], dtype=np.float32)
    for act in (Activation.SOFTMAX, Activation.SIGMOID):
        scores = activate(logits, act)
        assert np.isfinite(scores).all()
        assert (scores >= 0).all()
        assert (scores <= 1).all()
    assert softmax(logits).sum() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_are_refused(bad: float) -> None:
    with pytest.raises(InferenceError):
        activate(np.array([[0.0, bad]], dtype=np.float32), Activation.SOFTMAX)


def test_sigmoid_matches_plain_formula_where_it_is_safe() -> None:
    x = np.linspace(-30, 30, 301, dtype=np.float32)
    np.testing.assert_allclose(sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("value", ["SOFTMAX", "Sigmoid", " none "])
def test_function_to_apply_is_case_insensitive(value: str) -> None:
    assert Activation.parse(value) is not None


@pytest.mark.parametrize("value", ["relu", "", 3, True])
def test_unknown_function_to_apply_names_the_allowed_values(value: object) -> None:
    with pytest.raises(InvalidRequestError, match="sigmoid"):
        Activation.parse(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1, True, False, 1.5, "2"])
def test_bad_top_k(value: object) -> None:
    with pytest.raises(InvalidRequestError):
        parse_top_k(value)


def test_rank_is_stable_on_ties_and_cut_by_top_k() -> None:
    scores = np.array([0.2, 0.5, 0.2, 0.1], dtype=np.float32)
    assert rank(scores, None).tolist() == [1, 0, 2, 3]
    assert rank(scores, 2).tolist() == [1, 0]
    assert rank(scores, 10).tolist() == [1, 0, 2, 3]


def test_zero_shot_single_label_vs_multi_label() -> None:
    logits = np.array([[2.0, 0.0, 1.0], [0.5, 0.0, 3.0]], dtype=np.float32)  # [contradiction, neutral, entailment]
    multi = zero_shot_scores(logits, entailment_id=2, contradiction_id=0, multi_label=True)
    np.testing.assert_allclose(
        multi, [np.exp(1) / (np.exp(1) + np.exp(2)), np.exp(3) / (np.exp(3) + np.exp(0.5))], rtol=1e-6
    )
    single = zero_shot_scores(logits, entailment_id=2, contradiction_id=0, multi_label=False)
    np.testing.assert_allclose(single, softmax(np.array([1.0, 3.0])), rtol=1e-6)
    assert single.sum() == pytest.approx(1.0)
    one = zero_shot_scores(logits[:1], entailment_id=2, contradiction_id=0, multi_label=False)
    np.testing.assert_allclose(one, multi[:1], rtol=1e-6)
