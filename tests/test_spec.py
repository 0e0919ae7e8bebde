"""Request shapes and validation: every bad input named in spec-notes gets a typed error."""

from __future__ import annotations

from typing import Any

import pytest

from engine import (
    ClassificationOutput,
    CloudflareTextClassificationInput,
    InvalidRequestError,
    TextClassificationInput,
    TextClassificationParameters,
    TextClassifier,
    TextPair,
    TextTooLongError,
)
from engine.tasks.params import outputs_to_json

BAD_CALLS: list[tuple[str, Any, dict[str, Any], type[Exception]]] = [
    ("empty text", "", {}, InvalidRequestError),
    ("whitespace only", "  \n\t ", {}, InvalidRequestError),
    ("None", None, {}, InvalidRequestError),
    ("number", 42, {}, InvalidRequestError),
    ("bytes", b"abc", {}, InvalidRequestError),
    ("empty list", [], {}, InvalidRequestError),
    ("nested list", [["a", "b"]], {}, InvalidRequestError),
    ("lone surrogate", "abc\udc80def", {}, InvalidRequestError),
    ("pair without text_pair", {"text": "a"}, {}, InvalidRequestError),
    ("pair with unknown key", {"text": "a", "text_pair": "b", "label": "c"}, {}, InvalidRequestError),
    ("pair with empty second text", {"text": "a", "text_pair": ""}, {}, InvalidRequestError),
    ("list with a bad item", ["fine", None], {}, InvalidRequestError),
    ("top_k 0", "text", {"top_k": 0}, InvalidRequestError),
    ("top_k negative", "text", {"top_k": -2}, InvalidRequestError),
    ("top_k bool", "text", {"top_k": True}, InvalidRequestError),
    ("top_k float", "text", {"top_k": 1.5}, InvalidRequestError),
    ("unknown function_to_apply", "text", {"function_to_apply": "relu"}, InvalidRequestError),
    ("truncation not a bool", "text", {"truncation": "yes"}, InvalidRequestError),
    ("unknown truncation side", "text", {"truncation_direction": "middle"}, InvalidRequestError),
    ("too long, truncation off", "word " * 500, {"truncation": False}, TextTooLongError),
    ("huge, truncation off", "x" * 5_000_000, {"truncation": False}, TextTooLongError),
]


@pytest.fixture(scope="module")
def clf(exported: Any) -> TextClassifier:
    return TextClassifier.load(exported("bert", "fp32"))


@pytest.mark.parametrize(("case", "inputs", "kwargs", "error"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_gets_typed_error(
    clf: TextClassifier, case: str, inputs: Any, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        clf(inputs, **kwargs)
    assert str(info.value)  # a message that says what is wrong


BAD_REQUESTS: list[Any] = [
    "just a string",
    {},
    {"inputs": "a", "extra": 1},
    {"inputs": "a", "parameters": "top_k=2"},
    {"inputs": "a", "parameters": {"top_k": 0}},
    {"inputs": "a", "parameters": {"topk": 2}},
    {"inputs": [], "parameters": {}},
    {"inputs": {"text": "a"}},
]


@pytest.mark.parametrize("request_json", BAD_REQUESTS)
def test_bad_json_request_is_invalid_request(request_json: Any) -> None:
    with pytest.raises(InvalidRequestError):
        TextClassificationInput.from_dict(request_json)


def test_top_k_absent_vs_null_in_json() -> None:
    assert TextClassificationInput.from_dict({"inputs": "a"}).parameters.top_k == 1
    assert TextClassificationInput.from_dict({"inputs": "a", "parameters": {"top_k": None}}).parameters.top_k is None


def test_cloudflare_request_returns_every_label_sorted(clf: TextClassifier) -> None:
    request = CloudflareTextClassificationInput.from_dict({"text": "I like you. I love you"}).to_request()
    result = clf(request)
    assert sorted(o.label for o in result) == sorted(clf.labels)
    assert [o.score for o in result] == sorted((o.score for o in result), reverse=True)
    with pytest.raises(InvalidRequestError):
        CloudflareTextClassificationInput.from_dict({"text": ""})
    with pytest.raises(InvalidRequestError):
        CloudflareTextClassificationInput.from_dict({"inputs": "x"})


def test_outputs_convert_to_plain_json() -> None:
    nested = [[ClassificationOutput("a", 0.75)], [ClassificationOutput("b", 0.25)]]
    assert outputs_to_json(nested) == [[{"label": "a", "score": 0.75}], [{"label": "b", "score": 0.25}]]
    params = TextClassificationParameters.parse(function_to_apply="SIGMOID", top_k=None)
    assert params.to_dict() == {"function_to_apply": "sigmoid", "top_k": None}
    assert TextClassificationInput(TextPair("a", "b")).to_dict()["inputs"] == {"text": "a", "text_pair": "b"}


@pytest.mark.parametrize("text", ["😀 emoji only 🎉", "مرحبا بالعالم", "NUL\x00inside", "a" * 1_000_000])
def test_unusual_but_valid_text_is_classified(clf: TextClassifier, text: str) -> None:
    (prediction,) = clf.predict([text])
    assert 0.0 <= prediction.outputs[0].score <= 1.0
