"""Each task's parameters, its request (the HF task spec's `{"inputs", "parameters"}` as a dataclass, which the
Python API also takes) and its outputs. `from_dict` validates a plain JSON object into a request (raising
InvalidRequestError, never KeyError or TypeError); `to_dict` gives back the JSON the hosted APIs speak.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidRequestError
from engine.runtime.chunking import TRUNCATE, LongText
from engine.runtime.postprocess import Activation, parse_top_k
from engine.tasks.inputs import (
    LabeledText,
    TextInput,
    TextPair,
    ZeroShotText,
    check_keys,
    check_template,
    labeled_text,
    parse_candidate_labels,
    parse_inputs,
    parse_texts,
)


@dataclass(frozen=True)
class ClassificationOutput:
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score}


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
        check_keys(obj, {"function_to_apply", "top_k", *LONG_TEXT_KEYS}, set(), "parameters")
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
        check_keys(obj, {"inputs", "parameters"}, {"inputs"}, "the request")
        items, is_batch = parse_inputs(obj["inputs"])
        return cls(items if is_batch else items[0], TextClassificationParameters.from_dict(obj.get("parameters")))

    def to_dict(self) -> dict[str, Any]:
        def one(v: TextInput) -> Any:
            return {"text": v.text, "text_pair": v.text_pair} if isinstance(v, TextPair) else v

        inputs = [one(v) for v in self.inputs] if isinstance(self.inputs, list) else one(self.inputs)
        return {"inputs": inputs, "parameters": self.parameters.to_dict()}


def outputs_to_json(outputs: Sequence[ClassificationOutput] | Sequence[Sequence[ClassificationOutput]]) -> Any:
    """Nested lists of ClassificationOutput -> the same nesting of {"label", "score"} dicts."""
    return [o.to_dict() if isinstance(o, ClassificationOutput) else outputs_to_json(o) for o in outputs]


DEFAULT_HYPOTHESIS_TEMPLATE = "This example is {}."


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
        check_keys(obj, set(names) | set(names.values()) | set(LONG_TEXT_KEYS), set(), "parameters")
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
        check_keys(obj, {"inputs", "parameters"}, {"inputs"}, "the request")
        inputs, labels = obj["inputs"], None
        if isinstance(inputs, (list, tuple)) and any(isinstance(x, Mapping) for x in inputs):  # labels per text
            items = [labeled_text(x) for x in inputs]
            return cls(items, ZeroShotClassificationParameters.from_dict(obj.get("parameters"), per_text=True))
        if isinstance(inputs, Mapping):  # the older spec shape
            check_keys(inputs, {"text", "candidateLabels", "candidate_labels"}, {"text"}, "inputs")
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


@dataclass(frozen=True)
class ZeroShotPipelineOutput:
    """The transformers pipeline's shape: labels and scores sorted by score, descending."""

    sequence: str
    labels: list[str]
    scores: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"sequence": self.sequence, "labels": self.labels, "scores": self.scores}
