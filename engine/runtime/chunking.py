"""Long texts: cut to the window (the default, as the reference pipelines) or scored whole, window by window.

`LongText` is the caller's choice, parsed once; the windows are made in engine.runtime.tokenization (the tokenizer's own
overflow with a stride, never by re-tokenizing strings) and their scores are aggregated in engine.runtime.postprocess.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from engine.errors import InvalidRequestError
from engine.runtime.postprocess import Aggregation


class LongTextMode(str, Enum):
    TRUNCATE = "truncate"  # one window: the text is cut (and the caller told)
    CHUNK = "chunk"  # every window of the text is scored, and the windows' scores aggregated


@dataclass(frozen=True)
class LongText:
    """`stride`: tokens each window repeats from the previous one (None: a quarter of the window).
    `aggregation`: None = the model's natural choice (see postprocess.default_aggregation)."""

    mode: LongTextMode = LongTextMode.TRUNCATE
    stride: int | None = None
    aggregation: Aggregation | None = None

    @property
    def chunk(self) -> bool:
        return self.mode is LongTextMode.CHUNK

    @classmethod
    def parse(
        cls, long_text: object = "truncate", chunk_stride: object = None, chunk_aggregation: object = None
    ) -> LongText:
        if isinstance(long_text, LongText):
            return long_text
        mode = _enum(LongTextMode, long_text, "long_text")
        if chunk_stride is not None and (
            isinstance(chunk_stride, bool) or not isinstance(chunk_stride, int) or chunk_stride < 0
        ):
            raise InvalidRequestError(f"chunk_stride must be a non-negative integer (tokens), got {chunk_stride!r}")
        aggregation = None if chunk_aggregation is None else _enum(Aggregation, chunk_aggregation, "chunk_aggregation")
        if mode is LongTextMode.TRUNCATE and (chunk_stride is not None or aggregation is not None):
            raise InvalidRequestError('chunk_stride and chunk_aggregation need long_text="chunk"')
        return cls(mode, chunk_stride, aggregation)

    def to_dict(self) -> dict[str, Any]:
        """Empty for the default, so requests and job states that do not chunk keep their old shape."""
        if not self.chunk:
            return {}
        out: dict[str, Any] = {"long_text": self.mode.value}
        if self.stride is not None:
            out["chunk_stride"] = self.stride
        if self.aggregation is not None:
            out["chunk_aggregation"] = self.aggregation.value
        return out


TRUNCATE = LongText()


def _enum(kind: type[Enum], value: object, name: str) -> Any:
    try:
        return kind(value.strip().lower() if isinstance(value, str) else value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in kind)
        raise InvalidRequestError(f"{name} must be one of {allowed}, got {value!r}") from None
