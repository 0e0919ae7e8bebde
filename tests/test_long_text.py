"""long_text="chunk": every window of a long text scored and aggregated (issue 16, part 1).

A text that fits one window gives exactly the truncate path's result; a text built from passages that are exactly
one window each aggregates like those passages scored alone; and the model rows run grow linearly with windows.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from engine import (
    InvalidRequestError,
    TextClassificationInput,
    TextClassificationParameters,
    TextClassifier,
    TextPair,
    ZeroShotClassificationInput,
    ZeroShotClassificationParameters,
    ZeroShotClassifier,
)
from engine.runtime.chunking import LongText, LongTextMode
from engine.runtime.postprocess import softmax
from engine.runtime.tokenization import Strategy, Truncation

WORDS = [
    "the",
    "movie",
    "was",
    "good",
    "but",
    "the",
    "plot",
    "felt",
    "slow",
    "and",
    "the",
    "ending",
    "was",
    "bad",
    "yet",
    "the",
    "actors",
    "were",
    "great",
]
SHORT = ["I like this film a lot.", "Terrible service, never again.", "It was fine, I guess."]
LABELS = ["cinema", "food", "travel"]
TEMPLATE = "This example is {}."
ATOL = 1e-5


def passage(tokenizer: Any, n_tokens: int, shift: int) -> str:
    """A text of exactly `n_tokens` tokens (each word of WORDS is one token of the BERT vocabulary)."""
    text = " ".join(WORDS[(shift + i) % len(WORDS)] for i in range(n_tokens))
    with tokenizer._using(None) as plain:
        assert len(plain.encode(text, add_special_tokens=False).ids) == n_tokens  # test data check
    return text


@contextmanager
def counted_rows(task: Any) -> Iterator[list[int]]:
    """Counts the rows the model runs (batch rows, padding excluded): the cost that matters, not time."""
    rows: list[int] = []
    session = task.model.session
    run = session.run

    def counting(batch: Any) -> np.ndarray:
        rows.append(len(batch.index))
        return run(batch)

    session.run = counting
    try:
        yield rows
    finally:
        del session.run


def all_labels(p: Any) -> dict[str, float]:
    return {o.label: o.score for o in p.outputs}


@pytest.fixture(scope="module")
def clf(exported: Any) -> TextClassifier:
    return TextClassifier.load(exported("distilbert", "fp32"), threads=1)


@pytest.fixture(scope="module")
def multilabel(exported: Any) -> TextClassifier:
    return TextClassifier.load(exported("distilbert-multilabel", "fp32"), threads=1)


@pytest.fixture(scope="module", params=["bert-nli", "bart-nli"])
def zs(request: pytest.FixtureRequest, exported: Any) -> ZeroShotClassifier:
    return ZeroShotClassifier.load(exported(request.param, "fp32"), threads=1)


def chunk(**kw: Any) -> TextClassificationParameters:
    return TextClassificationParameters.parse(top_k=None, long_text="chunk", **kw)


def test_fitting_text_is_exactly_todays_result(clf: TextClassifier, multilabel: TextClassifier) -> None:
    for model in (clf, multilabel):
        today = model.predict(SHORT, TextClassificationParameters(top_k=None))
        chunked = model.predict(SHORT, chunk())
        assert [p.outputs for p in chunked] == [p.outputs for p in today]  # bit for bit
        assert [p.num_chunks for p in chunked] == [1, 1, 1]
        assert not any(p.truncated for p in chunked)


def test_softmax_model_averages_probabilities_of_its_windows(clf: TextClassifier) -> None:
    tok = clf.model.tokenizer
    budget = tok.max_length - 2  # [CLS] ... [SEP]
    passages = [passage(tok, budget, shift) for shift in (0, 5, 11)]
    (whole,) = clf.predict([" ".join(passages)], chunk(chunk_stride=0))
    alone = clf.predict(passages, TextClassificationParameters(top_k=None))
    assert whole.num_chunks == 3
    assert not whole.truncated
    for label in clf.labels:
        want = np.mean([all_labels(p)[label] for p in alone])
        assert abs(all_labels(whole)[label] - want) < ATOL
    # the max override takes each label's best window instead
    (best,) = clf.predict([" ".join(passages)], chunk(chunk_stride=0, chunk_aggregation="max"))
    for label in clf.labels:
        assert abs(all_labels(best)[label] - max(all_labels(p)[label] for p in alone)) < ATOL


def test_sigmoid_model_takes_each_labels_best_window(multilabel: TextClassifier) -> None:
    tok = multilabel.model.tokenizer
    passages = [passage(tok, tok.max_length - 2, shift) for shift in (2, 7)]
    (whole,) = multilabel.predict([" ".join(passages)], chunk(chunk_stride=0))
    alone = multilabel.predict(passages, TextClassificationParameters(top_k=None))
    for label in multilabel.labels:
        assert abs(all_labels(whole)[label] - max(all_labels(p)[label] for p in alone)) < ATOL


def test_overlapping_windows_match_each_window_scored_alone(clf: TextClassifier) -> None:
    """With a stride the windows overlap: score each window the tokenizer made on its own, then average."""
    text = " ".join(WORDS * 12)
    ((windows),) = clf.model.tokenizer.encode_chunks([text], LongText(LongTextMode.CHUNK, stride=16))
    assert len(windows) > 3
    for a, b in itertools.pairwise(windows):  # each window repeats the previous one's last 16 text tokens
        assert a.ids[-17:-1] == b.ids[1:17]
    alone = np.stack([softmax(clf.model.logits([w]))[0] for w in windows])
    (whole,) = clf.predict([text], chunk(chunk_stride=16))
    assert whole.num_chunks == len(windows)
    got = np.array([all_labels(whole)[label] for label in clf.labels])
    np.testing.assert_allclose(got, alone.mean(axis=0), atol=ATOL)
    # and the default stride (a quarter of the window) is what the call uses without one
    (default,) = clf.predict([text], chunk())
    stride = (clf.model.tokenizer.max_length - 2) // 4
    (default_windows,) = clf.model.tokenizer.encode_chunks([text], LongText(LongTextMode.CHUNK, stride=stride))
    assert default.num_chunks == len(default_windows)


def test_rows_grow_linearly_with_windows(clf: TextClassifier, zs: ZeroShotClassifier) -> None:
    budget = clf.model.tokenizer.max_length - 2
    for k in (1, 2, 4):
        text = " ".join(passage(clf.model.tokenizer, budget, i) for i in range(k))
        with counted_rows(clf) as rows:
            (p,) = clf.predict([text], chunk(chunk_stride=0))
        assert p.num_chunks == k
        assert sum(rows) == k
    params = ZeroShotClassificationParameters.parse(LABELS, long_text="chunk", chunk_stride=0)
    counts = []
    for n_words in (30, 120, 240):
        with counted_rows(zs) as rows:
            (z,) = zs.predict([" ".join(WORDS * 16)[: n_words * 6]], params)
        assert sum(rows) == z.num_chunks * len(LABELS)
        counts.append(z.num_chunks)
    assert counts[0] < counts[1] < counts[2]


def test_zero_shot_chunks_the_premise_and_aggregates_per_label(zs: ZeroShotClassifier) -> None:
    tok = zs.model.tokenizer
    hypotheses = [TEMPLATE.format(label) for label in LABELS]
    with tok._using(None) as plain:
        longest = max(len(plain.encode(h, add_special_tokens=False).ids) for h in hypotheses)
    budget = tok.max_length - tok.specials_pair - longest
    if zs.model.info.model_type == "bart":  # byte-level BPE: build windows from the tokenizer's own split
        text = " ".join(WORDS * 12)
        (group,) = tok.encode_pairs([text], [hypotheses], Truncation(), LongText(LongTextMode.CHUNK, stride=0))
        assert group.windows > 1
        return
    passages = [passage(tok, budget, shift) for shift in (0, 3, 9)]
    premise = " ".join(passages)
    multi = ZeroShotClassificationParameters.parse(LABELS, multi_label=True, long_text="chunk", chunk_stride=0)
    (whole,) = zs.predict([premise], multi)
    alone = zs.predict(passages, ZeroShotClassificationParameters.parse(LABELS, multi_label=True))
    assert whole.num_chunks == 3
    for label in LABELS:  # multi_label: a label holds if any window entails it
        assert abs(all_labels(whole)[label] - max(all_labels(p)[label] for p in alone)) < ATOL
    # single label: the entailment logits averaged per label over the windows, then softmax across the labels
    single = ZeroShotClassificationParameters.parse(LABELS, long_text="chunk", chunk_stride=0)
    (whole,) = zs.predict([premise], single)
    trunc = Truncation(strategy=Strategy.ONLY_FIRST)
    entail = zs.entailment_id
    per_window = [zs.model.logits(g.rows)[:, entail] for g in tok.encode_pairs(passages, [hypotheses] * 3, trunc)]
    want = softmax(np.mean(per_window, axis=0))
    np.testing.assert_allclose([all_labels(whole)[label] for label in LABELS], want, atol=ATOL)
    assert abs(sum(all_labels(whole).values()) - 1) < 1e-5


def test_zero_shot_fitting_premise_is_exactly_todays_result(zs: ZeroShotClassifier) -> None:
    for multi in (False, True):
        today = zs.predict(SHORT, ZeroShotClassificationParameters.parse(LABELS, multi_label=multi))
        chunked = zs.predict(
            SHORT, ZeroShotClassificationParameters.parse(LABELS, multi_label=multi, long_text="chunk")
        )
        assert [p.outputs for p in chunked] == [p.outputs for p in today]
        assert {p.num_chunks for p in chunked} == {1}


def test_call_and_request_shapes(clf: TextClassifier, zs: ZeroShotClassifier) -> None:
    long = " ".join(WORDS * 10)
    by_call = clf(long, top_k=None, long_text="chunk", chunk_stride=8)
    request = TextClassificationInput.from_dict(
        {"inputs": long, "parameters": {"top_k": None, "long_text": "chunk", "chunk_stride": 8}}
    )
    assert clf(request) == by_call
    assert request.parameters.to_dict() == {"top_k": None, "long_text": "chunk", "chunk_stride": 8}
    assert TextClassificationParameters().to_dict() == {"top_k": 1}  # the spec shape is unchanged by default
    body = {"inputs": long, "parameters": {"candidate_labels": LABELS, "long_text": "chunk"}}
    assert zs(ZeroShotClassificationInput.from_dict(body)) == zs(long, LABELS, long_text="chunk")


@pytest.mark.parametrize(
    "kw",
    [
        {"long_text": "split"},
        {"long_text": "chunk", "chunk_stride": -1},
        {"long_text": "chunk", "chunk_stride": True},
        {"long_text": "chunk", "chunk_aggregation": "median"},
        {"chunk_stride": 4},  # only with chunk
        {"chunk_aggregation": "max"},
    ],
)
def test_bad_options_are_typed_errors(kw: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        TextClassificationParameters.parse(**kw)


def test_stride_must_leave_room_and_pairs_are_refused(clf: TextClassifier) -> None:
    long = " ".join(WORDS * 10)
    with pytest.raises(InvalidRequestError, match="chunk_stride"):
        clf.predict([long], chunk(chunk_stride=clf.model.tokenizer.max_length))
    with pytest.raises(InvalidRequestError, match="single texts"):
        clf.predict([TextPair("a", "b")], chunk())
