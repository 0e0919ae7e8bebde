"""Reliability battery: every bad request gets a typed error whose message says what to do, and every unusual but
valid input gets finite, well-formed scores. Never a crash, a hang or a NaN.

Huge texts are cut (or refused) by the character cap before tokenizing: a spy on the tokenizer proves that a
50 MB text never reaches it. Non-finite or extreme logits are driven through a full call with a patched session.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pytest

import engine.runtime.tokenization
from engine import (
    CloudflareTextClassificationInput,
    EngineError,
    InferenceError,
    InvalidRequestError,
    TextClassificationInput,
    TextClassifier,
    TextPair,
    TextTooLongError,
    ZeroShotClassificationInput,
    ZeroShotClassifier,
)
from engine.runtime.batching import Batch

MB = 1_000_000


@functools.cache
def huge(size: int) -> str:
    """A text of `size` characters made of real words (built once: 50 MB is not free)."""
    return ("lorem ipsum dolor sit amet " * (size // 27 + 1))[:size]


@pytest.fixture(scope="module")
def clf(exported: Any) -> TextClassifier:
    return TextClassifier.load(exported("bert", "fp32"), threads=1)


@pytest.fixture(scope="module")
def zs(exported: Any) -> ZeroShotClassifier:
    return ZeroShotClassifier.load(exported("bert-nli", "fp32"), threads=1)


# Bad requests ------------------------------------------------------------------------------------------------------
# (id, inputs, keyword arguments, expected error, regex the message must match: what is wrong or what to do)

BAD_CLASSIFY: list[tuple[str, Any, dict[str, Any], type[EngineError], str]] = [
    ("empty text", "", {}, InvalidRequestError, "give some text"),
    ("whitespace only", " \n\t\u3000 ", {}, InvalidRequestError, "only whitespace"),
    ("None", None, {}, InvalidRequestError, "must be a string, got NoneType"),
    ("int", 42, {}, InvalidRequestError, "must be a string, got int"),
    ("float NaN as text", math.nan, {}, InvalidRequestError, "must be a string, got float"),
    ("bool", True, {}, InvalidRequestError, "must be a string, got bool"),
    ("set", {"a"}, {}, InvalidRequestError, "must be a string, got set"),
    ("bytes", b"plain ascii", {}, InvalidRequestError, "decode it to str first"),
    ("invalid UTF-8 bytes", b"caf\xe9 \xff\xfe", {}, InvalidRequestError, "decode it to str first"),
    (
        "invalid UTF-8 via surrogateescape",
        b"caf\xe9".decode("utf-8", "surrogateescape"),
        {},
        InvalidRequestError,
        "lone surrogate at position 3",
    ),
    ("lone high surrogate", "\ud800", {}, InvalidRequestError, "lone surrogate"),
    ("lone low surrogate at the end", "fine text\udfff", {}, InvalidRequestError, "fix its encoding"),
    ("surrogate pair as two code points", "\ud83d\ude00", {}, InvalidRequestError, "lone surrogate"),
    ("empty list", [], {}, InvalidRequestError, "at least one text"),
    ("nested list", [["a", "b"]], {}, InvalidRequestError, "nested lists"),
    ("nested tuple", (("a",),), {}, InvalidRequestError, "nested lists"),
    ("list with None", ["fine", None], {}, InvalidRequestError, "must be a string"),
    ("list with a surrogate", ["fine", "bad\udc80"], {}, InvalidRequestError, "lone surrogate"),
    ("pair missing text_pair", {"text": "a"}, {}, InvalidRequestError, r"missing field\(s\) \['text_pair'\]"),
    ("pair missing text", {"text_pair": "b"}, {}, InvalidRequestError, r"missing field\(s\) \['text'\]"),
    ("pair with wrong keys", {"sentence": "a", "sentence2": "b"}, {}, InvalidRequestError, "allowed"),
    ("pair with an extra key", {"text": "a", "text_pair": "b", "x": 1}, {}, InvalidRequestError, "unknown field"),
    ("pair with empty text_pair", {"text": "a", "text_pair": ""}, {}, InvalidRequestError, "text_pair is empty"),
    ("pair with None text_pair", {"text": "a", "text_pair": None}, {}, InvalidRequestError, "text_pair must be"),
    ("TextPair with a number", TextPair("a", 3), {}, InvalidRequestError, "text_pair must be a string"),  # type: ignore[arg-type]
    ("top_k 0", "text", {"top_k": 0}, InvalidRequestError, ">= 1"),
    ("top_k negative", "text", {"top_k": -3}, InvalidRequestError, ">= 1"),
    ("top_k float", "text", {"top_k": 1.5}, InvalidRequestError, "positive integer"),
    ("top_k integral float", "text", {"top_k": 2.0}, InvalidRequestError, "positive integer"),
    ("top_k NaN", "text", {"top_k": math.nan}, InvalidRequestError, "positive integer"),
    ("top_k True", "text", {"top_k": True}, InvalidRequestError, "positive integer"),
    ("top_k False", "text", {"top_k": False}, InvalidRequestError, "positive integer"),
    ("top_k string", "text", {"top_k": "2"}, InvalidRequestError, "positive integer"),
    ("unknown function_to_apply", "text", {"function_to_apply": "relu"}, InvalidRequestError, "'sigmoid'"),
    ("empty function_to_apply", "text", {"function_to_apply": ""}, InvalidRequestError, "must be one of"),
    ("function_to_apply a number", "text", {"function_to_apply": 1}, InvalidRequestError, "must be one of"),
    ("function_to_apply a list", "text", {"function_to_apply": ["softmax"]}, InvalidRequestError, "must be one of"),
    ("truncation a string", "text", {"truncation": "yes"}, InvalidRequestError, "true or false"),
    ("truncation None", "text", {"truncation": None}, InvalidRequestError, "true or false"),
    ("unknown truncation side", "text", {"truncation_direction": "middle"}, InvalidRequestError, "'right' or 'left'"),
    ("truncation side None", "text", {"truncation_direction": None}, InvalidRequestError, "'right' or 'left'"),
    (
        "over the window, truncation off",
        "word " * 200,
        {"truncation": False},
        TextTooLongError,
        "202 tokens, more than the model's window of 64; shorten it or turn truncation on",
    ),
    (
        "pair over the window, truncation off",
        {"text": "word " * 40, "text_pair": "word " * 40},
        {"truncation": False},
        TextTooLongError,
        "turn truncation on",
    ),
]


@pytest.mark.parametrize(
    ("case", "inputs", "kwargs", "error", "message"), BAD_CLASSIFY, ids=[c[0] for c in BAD_CLASSIFY]
)
def test_bad_classification_call(
    clf: TextClassifier, case: str, inputs: Any, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as info:
        clf(inputs, **kwargs)
    assert type(info.value) is error  # the exact class, not a bare ValueError or a wrapped crash


HUGE_BAD: list[tuple[str, Callable[[], Any]]] = [
    ("1 MB", lambda: huge(MB)),
    ("50 MB", lambda: huge(50 * MB)),
    ("50 MB text_pair", lambda: {"text": "short", "text_pair": huge(50 * MB)}),
    ("50 MB in a list", lambda: ["short", huge(50 * MB)]),
]


class TokenizerSpy:
    """Stands in for tokenizers.Tokenizer inside engine.runtime.tokenization: records the length of every string
    handed to it."""

    seen: ClassVar[list[int]] = []

    @classmethod
    def from_buffer(cls, json_bytes: bytes) -> Any:
        return _Recording(_REAL_TOKENIZER.from_buffer(json_bytes), cls.seen)


_REAL_TOKENIZER = engine.runtime.tokenization.Tokenizer


class _Recording:
    def __init__(self, real: Any, seen: list[int]) -> None:
        self._real, self._seen = real, seen

    def encode_batch(self, items: list[Any], *args: Any, **kwargs: Any) -> Any:
        self._seen.extend(len(x) if isinstance(x, str) else max(len(x[0]), len(x[1])) for x in items)
        return self._real.encode_batch(items, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def spied(exported: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[TextClassifier, ZeroShotClassifier, list[int]]:
    """Fresh models whose tokenizers report the length of every string they are given."""
    seen: list[int] = []
    monkeypatch.setattr(TokenizerSpy, "seen", seen)
    monkeypatch.setattr(engine.runtime.tokenization, "Tokenizer", TokenizerSpy)
    clf = TextClassifier.load(exported("bert", "fp32"), threads=1)
    zs = ZeroShotClassifier.load(exported("bert-nli", "fp32"), threads=1)
    seen.clear()
    return clf, zs, seen


@pytest.mark.parametrize(("case", "make"), HUGE_BAD, ids=[c[0] for c in HUGE_BAD])
def test_huge_text_with_truncation_off_is_refused_before_tokenizing(spied: Any, case: str, make: Any) -> None:
    clf, _, seen = spied
    with pytest.raises(TextTooLongError, match="turn truncation on"):
        clf(make(), truncation=False)
    assert seen == []  # refused by the character cap: the tokenizer never saw it


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize(("case", "make"), HUGE_BAD, ids=[c[0] for c in HUGE_BAD])
def test_huge_text_is_cut_before_tokenizing(spied: Any, case: str, make: Any, side: str) -> None:
    clf, _, seen = spied
    inputs = make()
    items = inputs if isinstance(inputs, list) else [inputs]
    items = [TextPair(**x) if isinstance(x, dict) else x for x in items]
    predictions = clf.predict(items, truncation_direction=side)
    cap = clf.model.tokenizer.max_chars
    assert seen
    assert max(seen) <= cap < MB
    assert predictions[-1].truncated
    assert predictions[-1].num_tokens <= clf.model.info.max_length
    assert all(0.0 <= p.outputs[0].score <= 1.0 for p in predictions)


def test_huge_zero_shot_premise_is_cut_and_huge_label_refused(spied: Any) -> None:
    _, zs, seen = spied
    (prediction,) = zs.predict([huge(50 * MB)], _zs_params(["news", "sport"]))
    assert prediction.truncated
    assert max(seen) <= zs.model.tokenizer.max_chars
    seen.clear()
    with pytest.raises(TextTooLongError, match="shorten the candidate label"):
        zs("short text", ["news", huge(50 * MB)])
    with pytest.raises(TextTooLongError, match="shorten the candidate label"):
        zs("short text", ["news"], hypothesis_template="{} " + huge(MB))
    assert seen == []


def _zs_params(labels: list[str], **kwargs: Any) -> Any:
    from engine import ZeroShotClassificationParameters

    return ZeroShotClassificationParameters(tuple(labels), **kwargs)


BAD_JSON: list[tuple[str, Callable[[Any], Any], Any, str]] = [
    ("body a list", TextClassificationInput.from_dict, ["a"], "must be a JSON object"),
    ("body a string", TextClassificationInput.from_dict, "a", "must be a JSON object"),
    ("no inputs", TextClassificationInput.from_dict, {"parameters": {}}, r"missing field\(s\) \['inputs'\]"),
    ("unknown top-level key", TextClassificationInput.from_dict, {"inputs": "a", "options": {}}, "unknown field"),
    ("parameters a list", TextClassificationInput.from_dict, {"inputs": "a", "parameters": []}, "must be an object"),
    ("top_k all", TextClassificationInput.from_dict, {"inputs": "a", "parameters": {"top_k": "all"}}, "top_k"),
    ("misspelt parameter", TextClassificationInput.from_dict, {"inputs": "a", "parameters": {"topk": 2}}, "top_k"),
    ("inputs null", TextClassificationInput.from_dict, {"inputs": None}, "must be a string"),
    ("inputs pair missing text_pair", TextClassificationInput.from_dict, {"inputs": {"text": "a"}}, "text_pair"),
    ("cloudflare empty text", CloudflareTextClassificationInput.from_dict, {"text": ""}, "empty"),
    ("cloudflare list text", CloudflareTextClassificationInput.from_dict, {"text": ["a"]}, "must be a string"),
    ("cloudflare inputs key", CloudflareTextClassificationInput.from_dict, {"inputs": "a"}, "unknown field"),
    ("zero-shot without labels", ZeroShotClassificationInput.from_dict, {"inputs": "a"}, "candidate_labels"),
    (
        "zero-shot old shape without labels",
        ZeroShotClassificationInput.from_dict,
        {"inputs": {"text": "a"}},
        "candidateLabels",
    ),
    (
        "zero-shot labels twice",
        ZeroShotClassificationInput.from_dict,
        {"inputs": "a", "parameters": {"candidate_labels": ["x"], "candidateLabels": ["y"]}},
        "give one",
    ),
    (
        "zero-shot pair input",
        ZeroShotClassificationInput.from_dict,
        {"inputs": {"text": "a", "text_pair": "b"}, "parameters": {"candidate_labels": ["x"]}},
        "unknown field",
    ),
]


@pytest.mark.parametrize(("case", "parse", "body", "message"), BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_bad_json_request(case: str, parse: Callable[[Any], Any], body: Any, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        parse(body)


BAD_ZERO_SHOT: list[tuple[str, Any, Any, dict[str, Any], type[EngineError], str]] = [
    ("no labels", "text", None, {}, InvalidRequestError, "needs candidate_labels"),
    ("empty label list", "text", [], {}, InvalidRequestError, "give at least one label"),
    ("empty label string", "text", "", {}, InvalidRequestError, "give at least one label"),
    ("only commas", "text", " , ,, ", {}, InvalidRequestError, "give at least one label"),
    ("empty label", "text", ["news", ""], {}, InvalidRequestError, "non-empty string"),
    ("blank label", "text", ["news", "  "], {}, InvalidRequestError, "non-empty string"),
    ("None label", "text", ["news", None], {}, InvalidRequestError, "non-empty string"),
    ("number label", "text", ["news", 3], {}, InvalidRequestError, "non-empty string"),
    ("labels a number", "text", 3, {}, InvalidRequestError, "list of strings or a comma-separated string"),
    ("duplicate labels", "text", ["news", "sport", "news"], {}, InvalidRequestError, "give each label once"),
    ("label with a lone surrogate", "text", ["news", "x\ud800"], {}, InvalidRequestError, "lone surrogate"),
    (
        "template without {}",
        "text",
        ["news"],
        {"hypothesis_template": "This is a label."},
        InvalidRequestError,
        r"has no \{\} for the label",
    ),
    (
        "template {label}",
        "text",
        ["news"],
        {"hypothesis_template": "This is {label}."},
        InvalidRequestError,
        r"use a plain \{\}",
    ),
    (
        "template reaching into the label",
        "text",
        ["news"],
        {"hypothesis_template": "{0.__class__}"},
        InvalidRequestError,
        "not allowed",
    ),
    (
        "template indexing the label",
        "text",
        ["news"],
        {"hypothesis_template": "{0[x]}"},
        InvalidRequestError,
        "not allowed",
    ),
    (
        "template with two fields",
        "text",
        ["news"],
        {"hypothesis_template": "{} or {}"},
        InvalidRequestError,
        r"use a plain \{\}",
    ),
    (
        "template with a lone brace",
        "text",
        ["news"],
        {"hypothesis_template": "This is {"},
        InvalidRequestError,
        "cannot be formatted",
    ),
    (
        "template with escaped braces only",
        "text",
        ["news"],
        {"hypothesis_template": "This is {{}}."},
        InvalidRequestError,
        r"has no \{\}",
    ),
    ("template None", "text", ["news"], {"hypothesis_template": None}, InvalidRequestError, "must be a string"),
    ("multi_label a string", "text", ["news"], {"multi_label": "yes"}, InvalidRequestError, "true or false"),
    ("multi_label 1", "text", ["news"], {"multi_label": 1}, InvalidRequestError, "true or false"),
    ("empty text", "", ["news"], {}, InvalidRequestError, "give some text"),
    ("text pair", {"text": "a", "text_pair": "b"}, ["news"], {}, InvalidRequestError, "must be a string"),
    ("empty text list", [], ["news"], {}, InvalidRequestError, "at least one text"),
    ("hypothesis over the window", "text", ["word " * 100], {}, TextTooLongError, "shorten it"),
    (
        "premise over the window, truncation off",
        "word " * 100,
        ["news"],
        {"truncation": False},
        TextTooLongError,
        "turn truncation on",
    ),
]


@pytest.mark.parametrize(
    ("case", "inputs", "labels", "kwargs", "error", "message"), BAD_ZERO_SHOT, ids=[c[0] for c in BAD_ZERO_SHOT]
)
def test_bad_zero_shot_call(
    zs: ZeroShotClassifier,
    case: str,
    inputs: Any,
    labels: Any,
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message) as info:
        zs(inputs, labels, **kwargs)
    assert type(info.value) is error


# Unusual but valid inputs: answered, with finite scores ---------------------------------------------------------

VALID: list[tuple[str, Any]] = [
    ("NUL inside", "before\x00after"),
    ("NUL only", "\x00"),
    ("emoji", "😀 great 🎉🎉 👍🏽"),
    ("emoji family with ZWJ", "👨\u200d👩\u200d👧\u200d👦"),
    ("Arabic (right to left)", "مرحبا بالعالم، هذا رائع"),
    ("Hebrew with a right-to-left override", "\u202eשלום עולם\u202c hello"),
    ("combining marks", "e\u0301e\u0301 Zalgo: Z\u0351\u034ba\u0352\u0359l\u0363g\u036co"),
    ("CJK", "这部电影非常好看"),
    ("zero-width space only", "\u200b"),
    ("byte order mark", "\ufeffhello"),
    ("control characters", "\x1b[31mred\x1b[0m\r\n\x07"),
    ("one very long word", "a" * 10_000),
    ("only punctuation", "?!...,;:"),
    ("private use and noncharacters", "\ue000\uffff\U0010ffff"),
    ("1 MB", huge(MB)),
    ("pair of emoji", {"text": "😀", "text_pair": "🎉"}),
]


@pytest.mark.parametrize(("case", "inputs"), VALID, ids=[c[0] for c in VALID])
def test_unusual_valid_input_gets_finite_scores(clf: TextClassifier, case: str, inputs: Any) -> None:
    outputs = clf(inputs, top_k=None)
    scores = [o.score for o in outputs]
    assert sorted(o.label for o in outputs) == sorted(clf.labels)
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores)
    assert math.isclose(sum(scores), 1.0, abs_tol=1e-5)
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    ("case", "inputs"), [c for c in VALID if isinstance(c[1], str)], ids=[c[0] for c in VALID if isinstance(c[1], str)]
)
def test_unusual_valid_text_in_zero_shot(zs: ZeroShotClassifier, case: str, inputs: str) -> None:
    outputs = zs(inputs, ["news", "😀 emoji", "שלום", "a\x00b"])
    assert all(math.isfinite(o.score) for o in outputs)
    assert math.isclose(sum(o.score for o in outputs), 1.0, abs_tol=1e-5)


VALID_PARAMETERS: list[tuple[str, dict[str, Any], int]] = [
    ("top_k far above the label count", {"top_k": 10**9}, 2),
    ("top_k a numpy integer", {"top_k": np.int64(1)}, 1),
    ("top_k None", {"top_k": None}, 2),
    ("function_to_apply in odd case", {"function_to_apply": " SoftMax "}, 1),
    ("truncation side in capitals", {"truncation_direction": "LEFT"}, 1),
]


@pytest.mark.parametrize(("case", "kwargs", "count"), VALID_PARAMETERS, ids=[c[0] for c in VALID_PARAMETERS])
def test_unusual_valid_parameters(clf: TextClassifier, case: str, kwargs: dict[str, Any], count: int) -> None:
    outputs = clf("a fine text", **kwargs)
    assert len(outputs) == count
    assert all(0.0 <= o.score <= 1.0 for o in outputs)


def test_thousand_candidate_labels_are_answered(zs: ZeroShotClassifier) -> None:
    """Decision: no cap on the number of labels. Cost is one pair per label, batched by the token budget."""
    labels = [f"topic {i}" for i in range(1000)]
    outputs = zs(["first text", "second text"], labels)
    for row in outputs:
        scores = np.array([o.score for o in row])
        assert sorted(o.label for o in row) == sorted(labels)
        assert np.isfinite(scores).all()
        assert math.isclose(scores.sum(), 1.0, abs_tol=1e-4)
    multi = zs("first text", labels, multi_label=True)
    assert len(multi) == 1000
    assert all(0.0 <= o.score <= 1.0 for o in multi)


# Numerics through a full call ------------------------------------------------------------------------------------


def fake_run(row: list[float]) -> Callable[[Batch], np.ndarray]:
    def run(batch: Batch) -> np.ndarray:
        return np.tile(np.asarray(row, dtype=np.float32), (len(batch.index), 1))

    return run


EXTREME = [[1e4, -1e4], [-1e4, -1e4], [1e4, 1e4], [3e38, -3e38], [-3e38, 3e38], [0.0, 1e-30]]
NON_FINITE = [[math.nan, 0.0], [math.inf, 0.0], [-math.inf, 0.0], [math.nan, math.nan], [math.inf, -math.inf]]


@pytest.mark.filterwarnings("error")  # not even an overflow warning
@pytest.mark.parametrize("function", ["softmax", "sigmoid"])
@pytest.mark.parametrize("row", EXTREME, ids=str)
def test_extreme_logits_give_finite_bounded_scores(
    clf: TextClassifier, monkeypatch: pytest.MonkeyPatch, row: list[float], function: str
) -> None:
    monkeypatch.setattr(clf.model.session, "run", fake_run(row))
    outputs = clf(["one", "two words"], top_k=None, function_to_apply=function)
    for result in outputs:
        scores = [o.score for o in result]
        assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores)
        if function == "softmax":
            assert math.isclose(sum(scores), 1.0, abs_tol=1e-6)


@pytest.mark.parametrize("function", ["softmax", "sigmoid", "none"])
@pytest.mark.parametrize("row", NON_FINITE, ids=str)
def test_non_finite_logits_are_an_inference_error(
    clf: TextClassifier, monkeypatch: pytest.MonkeyPatch, row: list[float], function: str
) -> None:
    monkeypatch.setattr(clf.model.session, "run", fake_run(row))
    with pytest.raises(InferenceError, match="re-export"):
        clf("text", function_to_apply=function)


@pytest.mark.filterwarnings("error")  # not even an overflow warning
@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("row", [[1e4, 0.0, -1e4], [-1e4, 0.0, 1e4], [3e38, 0.0, -3e38], [math.nan, 0.0, 0.0]], ids=str)
def test_zero_shot_logits_extremes(
    zs: ZeroShotClassifier, monkeypatch: pytest.MonkeyPatch, row: list[float], multi_label: bool
) -> None:
    monkeypatch.setattr(zs.model.session, "run", fake_run(row))
    if not all(math.isfinite(x) for x in row):
        with pytest.raises(InferenceError):
            zs("text", ["a", "b", "c"], multi_label=multi_label)
        return
    scores = [o.score for o in zs("text", ["a", "b", "c"], multi_label=multi_label)]
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores)
    if not multi_label:
        assert math.isclose(sum(scores), 1.0, abs_tol=1e-6)
