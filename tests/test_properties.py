"""Property tests (hypothesis, derandomized and bounded so they are quick and never flaky).

- any text (surrogates, controls, huge): validation + tokenization fits the window or raises our error;
- postprocess: finite logits give finite, bounded, ordered scores; anything else an InferenceError;
- zero-shot: permuting the candidate labels permutes the scores;
- a row's score does not depend on its batch neighbours (fp32).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from engine import (
    InferenceError,
    InvalidRequestError,
    TextClassifier,
    TextTooLongError,
    ZeroShotClassifier,
)
from engine.model import files as model_files
from engine.runtime import postprocess
from engine.runtime.postprocess import Activation
from engine.runtime.tokenization import Side, Strategy, TextTokenizer, Truncation
from engine.tasks.inputs import parse_inputs

QUICK = settings(max_examples=150, deadline=None, derandomize=True, database=None)
MODEL = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ANY_CHAR = st.characters(exclude_categories=())  # surrogates, controls, private use: everything
SOME_WORDS = st.sampled_from(["good", "bad", "😀", "مرحبا", "\x00", " ", "\u200b", "e\u0301", "supercalifragilistic"])
TEXTS = st.one_of(
    st.text(ANY_CHAR, max_size=200),
    st.builds(lambda parts, n: " ".join(parts) * n, st.lists(SOME_WORDS, min_size=1, max_size=5), st.integers(1, 3000)),
    st.builds(lambda c, n: c * n, ANY_CHAR, st.integers(1, 20_000)),  # one character repeated past the char cap
)
TRUNCATIONS = st.builds(Truncation, st.booleans(), st.sampled_from(list(Side)), st.sampled_from(list(Strategy)))


@pytest.fixture(scope="module")
def tokenizer(exported: Any) -> TextTokenizer:
    files = model_files.load(exported("bert", "fp32"))
    return TextTokenizer(files.tokenizer_json, files.info.max_length, files.info.pad_id)


@pytest.fixture(scope="module")
def clf(exported: Any) -> TextClassifier:
    return TextClassifier.load(exported("bert", "fp32"), threads=1)


@pytest.fixture(scope="module")
def zs(exported: Any) -> ZeroShotClassifier:
    return ZeroShotClassifier.load(exported("bert-nli", "fp32"), threads=1)


@QUICK
@given(text=TEXTS, pair=st.one_of(st.none(), TEXTS), trunc=TRUNCATIONS)
def test_any_text_fits_the_window_or_is_refused(
    tokenizer: TextTokenizer, text: str, pair: str | None, trunc: Truncation
) -> None:
    raw: Any = text if pair is None else {"text": text, "text_pair": pair}
    try:
        (item,), _ = parse_inputs(raw)
        items: list[str | tuple[str, str]] = [item if isinstance(item, str) else (item.text, item.text_pair)]
        (encoded,) = tokenizer.encode(items, trunc)
    except TextTooLongError:
        assert not trunc.enabled or trunc.strategy is Strategy.ONLY_FIRST  # only then may a text be too long
        return
    except InvalidRequestError as exc:
        message = str(exc)
    else:
        message = None
    if message is not None:
        assert message  # an error says what is wrong
        return
    assert 2 <= len(encoded.ids) <= tokenizer.max_length
    assert len(encoded.type_ids) == len(encoded.ids)
    if not encoded.truncated:
        assert sum(len(t) for t in ([text] if pair is None else [text, pair])) <= 2 * tokenizer.max_chars


FINITE_32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
ANY_FLOAT = st.one_of(FINITE_32, st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300]))


def matrices(elements: st.SearchStrategy[float]) -> st.SearchStrategy[np.ndarray]:
    shapes = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8)
    return hnp.arrays(np.float64, shapes, elements=elements)


@QUICK
@given(
    logits=matrices(ANY_FLOAT),
    activation=st.sampled_from(list(Activation)),
    top_k=st.one_of(st.none(), st.integers(1, 10)),
)
def test_postprocess_is_finite_and_ordered_or_an_inference_error(
    logits: np.ndarray, activation: Activation, top_k: int | None
) -> None:
    with np.errstate(over="ignore"):
        finite = bool(np.isfinite(logits.astype(np.float32)).all())
    try:
        scores = postprocess.activate(logits, activation)
    except InferenceError:
        assert not finite
        return
    assert finite
    assert scores.shape == logits.shape
    assert np.isfinite(scores).all()
    if activation is not Activation.NONE:
        assert ((scores >= 0) & (scores <= 1)).all()
    if activation is Activation.SOFTMAX:
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    labels = [f"L{i}" for i in range(logits.shape[1])]
    for row in scores:
        ranked = postprocess.ranked_labels(row, labels, top_k)
        values = [s for _, s in ranked]
        assert values == sorted(values, reverse=True)
        assert len(ranked) == min(top_k or len(labels), len(labels))
        assert len({label for label, _ in ranked}) == len(ranked)


@QUICK
@given(
    logits=hnp.arrays(np.float32, st.tuples(st.integers(1, 12), st.just(3)), elements=FINITE_32),
    multi_label=st.booleans(),
    data=st.data(),
)
def test_zero_shot_scores_are_bounded_and_permute_with_labels(
    logits: np.ndarray, multi_label: bool, data: st.DataObject
) -> None:
    scores = postprocess.zero_shot_scores(logits, 2, 0, multi_label)
    assert np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    if not multi_label and len(logits) > 1:  # one label alone is scored like multi_label, as the reference does
        assert math.isclose(float(scores.sum()), 1.0, abs_tol=1e-5)
    perm = np.array(data.draw(st.permutations(range(len(logits)))))
    np.testing.assert_allclose(postprocess.zero_shot_scores(logits[perm], 2, 0, multi_label), scores[perm], atol=1e-6)


LABEL_POOL = ["sport", "politics", "refund", "weather", "a very long label about cooking", "😀", "финансы", "x"]
PREMISES = ["The match ended in a draw.", "I want my money back!", "It will rain tomorrow " * 10, "مرحبا"]


@MODEL
@given(
    labels=st.lists(st.sampled_from(LABEL_POOL), min_size=2, max_size=6, unique=True),
    text=st.sampled_from(PREMISES),
    multi_label=st.booleans(),
    data=st.data(),
)
def test_permuting_zero_shot_labels_permutes_the_scores(
    zs: ZeroShotClassifier, labels: list[str], text: str, multi_label: bool, data: st.DataObject
) -> None:
    permuted = data.draw(st.permutations(labels))
    first = {o.label: o.score for o in zs(text, labels, multi_label=multi_label)}
    second = {o.label: o.score for o in zs(text, permuted, multi_label=multi_label)}
    assert first.keys() == second.keys() == set(labels)
    np.testing.assert_allclose([second[label] for label in labels], [first[label] for label in labels], atol=1e-5)


NEIGHBOURS = st.lists(
    st.one_of(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=80).filter(str.strip), SOME_WORDS.filter(str.strip)
    ),
    max_size=8,
)


@MODEL
@given(text=st.sampled_from(PREMISES), neighbours=NEIGHBOURS, data=st.data())
def test_row_score_does_not_depend_on_batch_neighbours(
    clf: TextClassifier, text: str, neighbours: list[str], data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(neighbours)))
    batch = [*neighbours[:position], text, *neighbours[position:]]
    alone = clf(text, top_k=None, function_to_apply="none")
    together = clf(batch, top_k=None, function_to_apply="none")[position]
    want = {o.label: o.score for o in alone}
    got = {o.label: o.score for o in together}
    assert got.keys() == want.keys()
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-5, atol=1e-5)
