"""Request and response shapes of the HF Inference API task spec and of Cloudflare Workers AI, as dataclasses.

`from_dict` validates a plain JSON object into a request (raising InvalidRequestError, never KeyError or
TypeError); `to_dict` gives back the JSON the hosted APIs speak. Validation of single texts also lives here,
so every entry point (Python call, batch file, HTTP) refuses the same inputs with the same messages.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidRequestError
from engine.runtime.chunking import TRUNCATE, LongText
from engine.runtime.postprocess import Activation, parse_top_k


@dataclass(frozen=True)
class TextPair:
    """Two texts classified together (cross-encoders, rerankers, NLI)."""

    text: str
    text_pair: str


TextInput = str | TextPair


@dataclass(frozen=True)
class ClassificationOutput:
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score}


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


def _check_keys(obj: Mapping[str, Any], allowed: set[str], required: set[str], what: str) -> None:
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
        _check_keys(value, {"text", "text_pair"}, {"text", "text_pair"}, "a text pair")
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


@dataclass(frozen=True)
class TextClassificationParameters:
    """`top_k`: best label only by default (1); None returns every label. `function_to_apply`: None = model default.
    `long_text`: cut to the window (default) or score every window (an extension of the spec)."""

    function_to_apply: Activation | None = None
    top_k: int | None = 1
    long_text: LongText = TRUNCATE

    @classmethod
    def parse(
        cls,
        function_to_apply: object = None,
        top_k: object = 1,
        long_text: object = "truncate",
        chunk_stride: object = None,
        chunk_aggregation: object = None,
    ) -> TextClassificationParameters:
        """From caller-supplied values: function_to_apply as a string in any case, top_k an int >= 1 or None."""
        chunking = LongText.parse(long_text, chunk_stride, chunk_aggregation)
        return cls(Activation.parse(function_to_apply), parse_top_k(top_k), chunking)

    @classmethod
    def from_dict(cls, obj: object) -> TextClassificationParameters:
        if obj is None:
            return cls()
        if not isinstance(obj, Mapping):
            raise InvalidRequestError(f"parameters must be an object, got {type(obj).__name__}")
        _check_keys(obj, {"function_to_apply", "top_k", *LONG_TEXT_KEYS}, set(), "parameters")
        return cls.parse(obj.get("function_to_apply"), obj.get("top_k", 1), *_long_text_values(obj))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"top_k": self.top_k}
        if self.function_to_apply is not None:
            out["function_to_apply"] = self.function_to_apply.value
        return {**out, **self.long_text.to_dict()}


LONG_TEXT_KEYS = ("long_text", "chunk_stride", "chunk_aggregation")  # the engine's extension of both tasks' spec


def _long_text_values(obj: Mapping[str, Any]) -> tuple[object, object, object]:
    return obj.get("long_text") or "truncate", obj.get("chunk_stride"), obj.get("chunk_aggregation")


@dataclass(frozen=True)
class TextClassificationInput:
    """`{"inputs": ..., "parameters": {...}}`; inputs is a text, a text pair, or a list of them."""

    inputs: TextInput | list[TextInput]
    parameters: TextClassificationParameters = field(default_factory=TextClassificationParameters)

    @classmethod
    def from_dict(cls, obj: object) -> TextClassificationInput:
        if not isinstance(obj, Mapping):
            raise InvalidRequestError(f"the request must be a JSON object, got {type(obj).__name__}")
        _check_keys(obj, {"inputs", "parameters"}, {"inputs"}, "the request")
        items, is_batch = parse_inputs(obj["inputs"])
        return cls(items if is_batch else items[0], TextClassificationParameters.from_dict(obj.get("parameters")))

    def to_dict(self) -> dict[str, Any]:
        def one(v: TextInput) -> Any:
            return {"text": v.text, "text_pair": v.text_pair} if isinstance(v, TextPair) else v

        inputs = [one(v) for v in self.inputs] if isinstance(self.inputs, list) else one(self.inputs)
        return {"inputs": inputs, "parameters": self.parameters.to_dict()}


@dataclass(frozen=True)
class CloudflareTextClassificationInput:
    """Cloudflare Workers AI `{"text": str}`: answered with every label, sorted."""

    text: str

    @classmethod
    def from_dict(cls, obj: object) -> CloudflareTextClassificationInput:
        if not isinstance(obj, Mapping):
            raise InvalidRequestError(f"the request must be a JSON object, got {type(obj).__name__}")
        _check_keys(obj, {"text"}, {"text"}, "the request")
        return cls(check_text(obj["text"], "text"))

    def to_request(self) -> TextClassificationInput:
        return TextClassificationInput(self.text, TextClassificationParameters(top_k=None))


def outputs_to_json(outputs: Sequence[ClassificationOutput] | Sequence[Sequence[ClassificationOutput]]) -> Any:
    """Nested lists of ClassificationOutput -> the same nesting of {"label", "score"} dicts."""
    return [o.to_dict() if isinstance(o, ClassificationOutput) else outputs_to_json(o) for o in outputs]


# Zero-shot classification ---------------------------------------------------------------------------------------

DEFAULT_HYPOTHESIS_TEMPLATE = "This example is {}."


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


@dataclass(frozen=True)
class ZeroShotClassificationParameters:
    """`candidate_labels` empty: every input is a LabeledText carrying its own. `long_text` as for text
    classification: the premise is chunked, each window paired with every hypothesis (an extension)."""

    candidate_labels: tuple[str, ...]
    hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE
    multi_label: bool = False
    long_text: LongText = TRUNCATE

    @classmethod
    def parse(
        cls,
        candidate_labels: object,
        hypothesis_template: object = DEFAULT_HYPOTHESIS_TEMPLATE,
        multi_label: object = False,
        long_text: object = "truncate",
        chunk_stride: object = None,
        chunk_aggregation: object = None,
    ) -> ZeroShotClassificationParameters:
        """From caller-supplied values: labels as a list or one comma-separated string (None: each input carries
        its own), a template taking `{}`."""
        labels = () if candidate_labels is None else parse_candidate_labels(candidate_labels)
        template = check_template(hypothesis_template, labels[0] if labels else "label")
        if not isinstance(multi_label, bool):
            raise InvalidRequestError(f"multi_label must be true or false, got {multi_label!r}")
        return cls(labels, template, multi_label, LongText.parse(long_text, chunk_stride, chunk_aggregation))

    def labels_of(self, item: ZeroShotText) -> tuple[str, ...]:
        if isinstance(item, LabeledText):
            return item.candidate_labels
        if not self.candidate_labels:
            raise InvalidRequestError("zero-shot classification needs candidate_labels (for every text)")
        return self.candidate_labels

    @classmethod
    def from_dict(
        cls, obj: object, candidate_labels: object = None, per_text: bool = False
    ) -> ZeroShotClassificationParameters:
        """The spec's snake_case parameters, or the older camelCase ones (labels may come from `inputs`, or from
        each input when `per_text`)."""
        if obj is None:
            obj = {}
        if not isinstance(obj, Mapping):
            raise InvalidRequestError(f"parameters must be an object, got {type(obj).__name__}")
        names = {
            "candidate_labels": "candidateLabels",
            "hypothesis_template": "hypothesisTemplate",
            "multi_label": "multiLabel",
        }
        _check_keys(obj, set(names) | set(names.values()) | set(LONG_TEXT_KEYS), set(), "parameters")
        values: dict[str, Any] = {}
        for snake, camel in names.items():
            if snake in obj and camel in obj:
                raise InvalidRequestError(f"parameters has both {snake!r} and {camel!r}; give one")
            if snake in obj or camel in obj:
                values[snake] = obj.get(snake, obj.get(camel))
        if candidate_labels is not None:
            if "candidate_labels" in values:
                raise InvalidRequestError("candidate labels are given twice (in inputs and in parameters)")
            values["candidate_labels"] = candidate_labels
        if per_text and "candidate_labels" in values:
            raise InvalidRequestError("each input carries its own candidate_labels; drop parameters.candidate_labels")
        if not per_text and "candidate_labels" not in values:
            raise InvalidRequestError("zero-shot classification needs parameters.candidate_labels")
        for key in ("hypothesis_template", "multi_label"):  # explicit null means the default
            if key in values and values[key] is None:
                del values[key]
        return cls.parse(
            values.pop("candidate_labels", None), **values, **dict(zip(LONG_TEXT_KEYS, _long_text_values(obj)))
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"candidate_labels": list(self.candidate_labels)} if self.candidate_labels else {}
        return {
            **out,
            "hypothesis_template": self.hypothesis_template,
            "multi_label": self.multi_label,
            **self.long_text.to_dict(),
        }


@dataclass(frozen=True)
class ZeroShotClassificationInput:
    """`{"inputs": str, "parameters": {"candidate_labels": [...], ...}}`, or the older
    `{"inputs": {"text": str, "candidateLabels": [...]}, "parameters": {"hypothesisTemplate", "multiLabel"}}`.
    Extension: `inputs` may be a list of `{"text": str, "candidate_labels": [...]}`, one label list per text."""

    inputs: str | list[str] | list[LabeledText]
    parameters: ZeroShotClassificationParameters

    @classmethod
    def from_dict(cls, obj: object) -> ZeroShotClassificationInput:
        if not isinstance(obj, Mapping):
            raise InvalidRequestError(f"the request must be a JSON object, got {type(obj).__name__}")
        _check_keys(obj, {"inputs", "parameters"}, {"inputs"}, "the request")
        inputs, labels = obj["inputs"], None
        if isinstance(inputs, (list, tuple)) and any(isinstance(x, Mapping) for x in inputs):  # labels per text
            items = [_labeled(x) for x in inputs]
            return cls(items, ZeroShotClassificationParameters.from_dict(obj.get("parameters"), per_text=True))
        if isinstance(inputs, Mapping):  # the older spec shape
            _check_keys(inputs, {"text", "candidateLabels", "candidate_labels"}, {"text"}, "inputs")
            labels = inputs.get("candidateLabels", inputs.get("candidate_labels"))
            if labels is None:
                raise InvalidRequestError("inputs.candidateLabels is missing")
            inputs = inputs["text"]
        texts = parse_texts(inputs)
        params = ZeroShotClassificationParameters.from_dict(obj.get("parameters"), labels)
        return cls(texts if isinstance(inputs, (list, tuple)) else texts[0], params)

    def to_dict(self) -> dict[str, Any]:
        def one(x: str | LabeledText) -> Any:
            return {"text": x.text, "candidate_labels": list(x.candidate_labels)} if isinstance(x, LabeledText) else x

        inputs = [one(x) for x in self.inputs] if isinstance(self.inputs, list) else self.inputs
        return {"inputs": inputs, "parameters": self.parameters.to_dict()}


def _labeled(value: object) -> LabeledText:
    if not isinstance(value, Mapping):
        raise InvalidRequestError(
            'when one input carries its own labels, every input must: {"text": ..., "candidate_labels": [...]}'
        )
    _check_keys(value, {"text", "candidate_labels", "candidateLabels"}, {"text"}, "an input")
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


@dataclass(frozen=True)
class ZeroShotPipelineOutput:
    """The transformers pipeline's shape: labels and scores sorted by score, descending."""

    sequence: str
    labels: list[str]
    scores: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "labels": self.labels, "scores": self.scores}
