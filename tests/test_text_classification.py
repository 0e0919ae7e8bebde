"""Parity with transformers.pipeline("text-classification") on the same weights, fp32: scores within 1e-5
(absolute, or relative for raw logits of magnitude > 1 with function_to_apply="none")."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from engine import (
    ClassificationOutput,
    TextClassificationInput,
    TextClassificationParameters,
    TextClassifier,
    TextPair,
    TextTooLongError,
)

MODELS = ["distilbert", "bert", "roberta", "bert-single", "distilbert-multilabel", "bert-regression"]
ABSENT = "absent"
FUNCTIONS = [ABSENT, "sigmoid", "softmax", "none"]
TOP_KS: list[Any] = [ABSENT, 1, 2, None, 10]
PAIR = {"text": "What is Paris?", "text_pair": "Paris is the capital and most populous city of France."}
INPUTS: dict[str, Any] = {
    "single": "I like you. I love you",
    "pair": PAIR,
    "list": ["This movie was a complete waste of time.", "Absolutely wonderful service!", "Meh.", PAIR],
}
LONG = "the quick brown fox jumps over the lazy dog " * 40


@pytest.fixture(scope="module", params=MODELS)
def pair_of(request: pytest.FixtureRequest, checkpoint: Any, exported: Any) -> tuple[Any, TextClassifier, str]:
    from transformers import pipeline

    name = request.param
    reference = pipeline("text-classification", model=str(checkpoint(name)), device="cpu")
    return reference, TextClassifier.load(exported(name, "fp32")), name


def as_rows(result: Any, batch: bool) -> list[list[tuple[str, float]]]:
    """Reference or engine output -> one list of (label, score) per input."""

    def row(r: Any) -> list[tuple[str, float]]:
        items = r if isinstance(r, list) else [r]
        return [(o.label, o.score) if isinstance(o, ClassificationOutput) else (o["label"], o["score"]) for o in items]

    return [row(r) for r in result] if batch else [row(result)]


@pytest.mark.parametrize(("function", "top_k", "kind"), list(itertools.product(FUNCTIONS, TOP_KS, INPUTS)))
def test_matches_reference_pipeline(pair_of: Any, function: str, top_k: Any, kind: str) -> None:
    reference, clf, _ = pair_of
    kwargs: dict[str, Any] = {}
    if function != ABSENT:
        kwargs["function_to_apply"] = function
    if top_k is not ABSENT:
        kwargs["top_k"] = top_k
    batch = kind == "list"
    expected = as_rows(reference(INPUTS[kind], **kwargs), batch)
    got = as_rows(clf(INPUTS[kind], **kwargs), batch)
    assert [[label for label, _ in r] for r in got] == [[label for label, _ in r] for r in expected]
    np.testing.assert_allclose(
        [s for r in got for _, s in r], [s for r in expected for _, s in r], rtol=1e-5, atol=1e-5
    )


def test_truncation_matches_reference_and_is_reported(pair_of: Any) -> None:
    reference, clf, _ = pair_of
    window = clf.model.info.max_length
    expected = as_rows(reference(LONG, truncation=True, max_length=window, top_k=None), False)
    (prediction,) = clf.predict([LONG], TextClassificationParameters(top_k=None))
    assert prediction.truncated
    assert prediction.num_tokens == clf.model.info.max_length
    got = as_rows(prediction.outputs, False)
    assert [label for label, _ in got[0]] == [label for label, _ in expected[0]]
    np.testing.assert_allclose([s for _, s in got[0]], [s for _, s in expected[0]], atol=1e-5, rtol=1e-5)
    with pytest.raises(TextTooLongError):
        clf(LONG, truncation=False)


def test_left_truncation_matches_reference(pair_of: Any) -> None:
    reference, clf, _ = pair_of
    text = "first words are cut " * 5 + LONG + " but the end is kept"
    reference.tokenizer.truncation_side = "left"
    try:
        window = clf.model.info.max_length
        expected = as_rows(reference(text, truncation=True, max_length=window, top_k=None), False)
    finally:
        reference.tokenizer.truncation_side = "right"
    got = as_rows(clf(text, top_k=None, truncation_direction="left"), False)
    np.testing.assert_allclose([s for _, s in got[0]], [s for _, s in expected[0]], atol=1e-5, rtol=1e-5)


def test_short_text_is_not_reported_truncated(pair_of: Any) -> None:
    _, clf, _ = pair_of
    (prediction,) = clf.predict(["short text"])
    assert not prediction.truncated


def test_row_does_not_depend_on_batch_neighbours(pair_of: Any) -> None:
    _, clf, _ = pair_of
    texts = ["A short one.", LONG[:300], "Another sentence of middling length, with some words.", "Meh."]
    alone = [clf(t, top_k=None) for t in texts]
    together = clf(texts, top_k=None)
    small_batches = TextClassifier(clf.model.__class__(clf.model.info, clf.model.tokenizer, clf.model.session, 64))
    for a, b, c in zip(alone, together, small_batches(texts, top_k=None)):
        assert [o.label for o in a] == [o.label for o in b] == [o.label for o in c]
        np.testing.assert_allclose([o.score for o in a], [o.score for o in b], atol=1e-6)
        np.testing.assert_allclose([o.score for o in a], [o.score for o in c], atol=1e-6)


def test_request_dataclass_round_trip(pair_of: Any) -> None:
    _, clf, _ = pair_of
    request = TextClassificationInput.from_dict({"inputs": [PAIR, "hello"], "parameters": {"top_k": None}})
    assert request.inputs[0] == TextPair(PAIR["text"], PAIR["text_pair"])
    assert TextClassificationInput.from_dict(request.to_dict()) == request
    assert clf(request) == clf([PAIR, "hello"], top_k=None)
