"""The texts a task takes, validated before anything is tokenized: one text, a pair, a zero-shot text with its own
labels, candidate labels and the hypothesis template. Every entry point (Python call, batch file, HTTP) refuses the
same inputs with the same messages, because they all come through here.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidRequestError


@dataclass(frozen=True)
class TextPair:
    """Two texts classified together (cross-encoders, rerankers, NLI)."""

    text: str
    text_pair: str


TextInput = str | TextPair


def check_text(value: object, what: str = "text") -> str:
    """A usable text: a str, not blank, valid Unicode (no lone surrogates)."""
    if not isinstance(value, str):
        kind = "bytes (decode it to str first)" if isinstance(value, (bytes, bytearray)) else type(value).__name__
        raise InvalidRequestError(f"{what} must be a string, got {kind}")
    if not value.strip():
        raise InvalidRequestError(f"{what} is empty or only whitespace; give some text to classify")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{what} is not valid Unicode (lone surrogate at position {exc.start}); fix its encoding"
        ) from None
    return value


def check_keys(obj: Mapping[str, Any], allowed: set[str], required: set[str], what: str) -> None:
    extra = set(obj) - allowed
    if extra:
        raise InvalidRequestError(f"{what} has unknown field(s) {sorted(extra)}; allowed: {sorted(allowed)}")
    missing = required - set(obj)
    if missing:
        raise InvalidRequestError(f"{what} is missing field(s) {sorted(missing)}")


def parse_text_input(value: object) -> TextInput:
    """One input: a string, or a text pair given as TextPair or {"text": ..., "text_pair": ...}."""
    if isinstance(value, TextPair):
        return TextPair(check_text(value.text, "text"), check_text(value.text_pair, "text_pair"))
    if isinstance(value, Mapping):
        check_keys(value, {"text", "text_pair"}, {"text", "text_pair"}, "a text pair")
        return TextPair(check_text(value["text"], "text"), check_text(value["text_pair"], "text_pair"))
    if isinstance(value, (list, tuple)):
        raise InvalidRequestError(
            "nested lists are not inputs: pass a string, a list of strings, or "
            '{"text": ..., "text_pair": ...} objects for text pairs'
        )
    return check_text(value, "input text")


def parse_inputs(inputs: object) -> tuple[list[TextInput], bool]:
    """Normalize `inputs` to a list; the flag says whether the caller passed a list (a batch)."""
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise InvalidRequestError("inputs is an empty list; give at least one text")
        return [parse_text_input(v) for v in inputs], True
    return [parse_text_input(inputs)], False


def parse_candidate_labels(value: object) -> tuple[str, ...]:
    """A list of labels, or one comma-separated string (split, stripped, empties dropped, as the reference does).

    Duplicates are refused: each label is one hypothesis, and a repeated one would be scored twice and, without
    multi_label, would take a double share of the softmax.
    """
    if isinstance(value, str):
        labels: list[object] = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, (list, tuple)):
        labels = list(value)
    else:
        raise InvalidRequestError(
            f"candidate_labels must be a list of strings or a comma-separated string, got {type(value).__name__}"
        )
    if not labels:
        raise InvalidRequestError("candidate_labels is empty; give at least one label")
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise InvalidRequestError(f"every candidate label must be a non-empty string, got {label!r}")
        check_text(label, "candidate label")
    if len(set(labels)) != len(labels):
        dupes = sorted({str(x) for x in labels if labels.count(x) > 1})
        raise InvalidRequestError(f"candidate_labels has duplicates {dupes}; give each label once")
    return tuple(str(label) for label in labels)


def check_template(template: object, label: str) -> str:
    """The template must take the label through `{}`; anything else would score the same hypothesis for every label."""
    if not isinstance(template, str):
        raise InvalidRequestError(f"hypothesis_template must be a string, got {type(template).__name__}")
    try:
        # a request-supplied format string may only take the label itself: "{0.__class__}" or "{0[x]}" would reach
        # into the label's attributes (and raise AttributeError or TypeError on bad names)
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        bad = next((f"field {{{name}}} is not allowed" for name in names if name not in ("", "0")), None)
        formatted = template.format(label) if bad is None else ""
    except (IndexError, KeyError, ValueError) as exc:
        bad = repr(exc)
    if bad is not None:
        raise InvalidRequestError(
            f"hypothesis_template {template!r} cannot be formatted ({bad}); use a plain {{}} where the label goes, "
            'e.g. "This example is {}."'
        )
    if not names:  # "{{}}" formats to "{}" but takes no label: every hypothesis would be the same
        raise InvalidRequestError(
            f'hypothesis_template {template!r} has no {{}} for the label; e.g. "This example is {{}}."'
        )
    check_text(formatted, "hypothesis_template")
    return template


@dataclass(frozen=True)
class LabeledText:
    """A zero-shot text with its own candidate labels (an extension: the reference takes one list for all texts)."""

    text: str
    candidate_labels: tuple[str, ...]

    @classmethod
    def parse(cls, text: object, candidate_labels: object) -> LabeledText:
        return cls(check_text(text, "input text"), parse_candidate_labels(candidate_labels))


ZeroShotText = str | LabeledText


def labeled_text(value: object) -> LabeledText:
    if not isinstance(value, Mapping):
        raise InvalidRequestError(
            'when one input carries its own labels, every input must: {"text": ..., "candidate_labels": [...]}'
        )
    check_keys(value, {"text", "candidate_labels", "candidateLabels"}, {"text"}, "an input")
    if "candidate_labels" in value and "candidateLabels" in value:
        raise InvalidRequestError("an input has both 'candidate_labels' and 'candidateLabels'; give one")
    labels = value.get("candidate_labels", value.get("candidateLabels"))
    if labels is None:
        raise InvalidRequestError("an input is missing its candidate_labels")
    return LabeledText.parse(value["text"], labels)


def parse_texts(inputs: object) -> list[str]:
    """One text or a list of texts (zero-shot takes no pairs)."""
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise InvalidRequestError("inputs is an empty list; give at least one text")
        return [check_text(t, "input text") for t in inputs]
    return [check_text(inputs, "input text")]
