"""Request and response shapes of the HF Inference API task spec and of Cloudflare Workers AI, as dataclasses.

`from_dict` validates a plain JSON object into a request (raising InvalidRequestError, never KeyError or
TypeError); `to_dict` gives back the JSON the hosted APIs speak. Validation of single texts also lives here,
so every entry point (Python call, batch file, HTTP) refuses the same inputs with the same messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequestError
from .postprocess import Activation, parse_top_k


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
    """`top_k`: best label only by default (1); None returns every label. `function_to_apply`: None = model default."""

    function_to_apply: Activation | None = None
    top_k: int | None = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "function_to_apply", Activation.parse(self.function_to_apply))
        object.__setattr__(self, "top_k", parse_top_k(self.top_k))

    @classmethod
    def from_dict(cls, obj: object) -> TextClassificationParameters:
        if obj is None:
            return cls()
        if not isinstance(obj, Mapping):
            raise InvalidRequestError(f"parameters must be an object, got {type(obj).__name__}")
        _check_keys(obj, {"function_to_apply", "top_k"}, set(), "parameters")
        return cls(function_to_apply=obj.get("function_to_apply"), top_k=obj.get("top_k", 1))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"top_k": self.top_k}
        if self.function_to_apply is not None:
            out["function_to_apply"] = self.function_to_apply.value
        return out


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
