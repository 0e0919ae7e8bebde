"""Text -> token ids, with the model's window enforced here and nowhere else.

The tokenizer.json's own padding and truncation are ignored (some files carry a fixed padding of 128):
we truncate to the model's window ourselves and pad per batch in `batching`. A configured `tokenizers.Tokenizer`
is never mutated after construction, so one instance can be shared by threads; each truncation setting gets
its own instance, built once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from tokenizers import Encoding, Tokenizer

from .errors import InvalidRequestError, ModelLoadError, TextTooLongError

# Texts are cut to this many characters per window token before tokenizing (TEI does the same), so that a
# 50 MB string is never handed to the tokenizer. Far more than any window needs: a token covers >= 1 character.
CHARS_PER_TOKEN_CAP = 64


class Side(str, Enum):
    """Which end of a too-long text is cut."""

    RIGHT = "right"
    LEFT = "left"


class Strategy(str, Enum):
    LONGEST_FIRST = "longest_first"  # text classification pairs: the reference's truncation=True
    ONLY_FIRST = "only_first"  # NLI: cut the premise, never the hypothesis


@dataclass(frozen=True)
class Truncation:
    """How to fit a text into the window. enabled=False turns a too-long text into TextTooLongError."""

    enabled: bool = True
    side: Side = Side.RIGHT
    strategy: Strategy = Strategy.LONGEST_FIRST

    @classmethod
    def parse(cls, enabled: object, side: object, strategy: Strategy) -> Truncation:
        if not isinstance(enabled, bool):
            raise InvalidRequestError(f"truncation must be true or false, got {enabled!r}")
        try:
            parsed_side = Side(side.lower() if isinstance(side, str) else side)
        except ValueError:
            raise InvalidRequestError(f"truncation_direction must be 'right' or 'left', got {side!r}") from None
        return cls(enabled, parsed_side, strategy)


@dataclass(frozen=True)
class Encoded:
    """One tokenized input; `truncated` tells the caller the model did not see the whole text."""

    ids: list[int]
    type_ids: list[int]
    truncated: bool


class TextTokenizer:
    """tokenizer.json wrapper: encode single texts or pairs, within `max_length` tokens."""

    def __init__(self, tokenizer_json: str, max_length: int, pad_id: int) -> None:
        try:
            base = Tokenizer.from_str(tokenizer_json)
        except Exception as exc:  # tokenizers raises bare Exception
            raise ModelLoadError(f"tokenizer.json could not be parsed: {exc}. Re-export the model.") from exc
        self.max_length = max_length
        self.pad_id = pad_id
        self.max_chars = max_length * CHARS_PER_TOKEN_CAP
        self._json = tokenizer_json
        self._plain = self._configured(base, None)
        self._by_truncation: dict[Truncation, Tokenizer] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path, max_length: int, pad_id: int) -> TextTokenizer:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"cannot read {path}: {exc}. Re-export the model.") from exc
        return cls(text, max_length, pad_id)

    def _configured(self, tok: Tokenizer, trunc: Truncation | None) -> Tokenizer:
        tok.no_padding()
        if trunc is None or not trunc.enabled:
            tok.no_truncation()
        else:
            tok.enable_truncation(self.max_length, stride=0, strategy=trunc.strategy.value, direction=trunc.side.value)
        return tok

    def _tokenizer_for(self, trunc: Truncation) -> Tokenizer:
        if not trunc.enabled:
            return self._plain
        tok = self._by_truncation.get(trunc)
        if tok is None:
            with self._lock:
                tok = self._by_truncation.get(trunc)
                if tok is None:
                    tok = self._configured(Tokenizer.from_str(self._json), trunc)
                    self._by_truncation[trunc] = tok
        return tok

    def _cap(self, text: str, trunc: Truncation) -> tuple[str, bool]:
        """Cut a huge text by characters before tokenizing it (or refuse it when truncation is off)."""
        if len(text) <= self.max_chars:
            return text, False
        if not trunc.enabled:
            raise TextTooLongError(
                f"text of {len(text)} characters is far longer than the model's window of {self.max_length} "
                "tokens; shorten it or turn truncation on"
            )
        return (text[: self.max_chars] if trunc.side is Side.RIGHT else text[-self.max_chars :]), True

    def encode(self, items: Sequence[str | tuple[str, str]], trunc: Truncation) -> list[Encoded]:
        """Tokenize a batch of validated texts and (text, text_pair) tuples, in order."""
        capped: list[tuple[str | tuple[str, str], bool]] = []
        for item in items:
            if isinstance(item, tuple):
                (a, cut_a), (b, cut_b) = self._cap(item[0], trunc), self._cap(item[1], trunc)
                capped.append(((a, b), cut_a or cut_b))
            else:
                capped.append(self._cap(item, trunc))
        tok = self._tokenizer_for(trunc)
        try:
            encodings: list[Encoding] = tok.encode_batch([c for c, _ in capped], add_special_tokens=True)
        except Exception as exc:  # tokenizers raises bare Exception
            raise self._error(exc) from exc
        return [self._checked(i, enc, cut, trunc) for i, (enc, (_, cut)) in enumerate(zip(encodings, capped))]

    def _error(self, exc: Exception) -> InvalidRequestError:
        if "too short" in str(exc):
            return TextTooLongError(
                "the second text of a pair (e.g. the zero-shot hypothesis) does not fit the model's "
                f"window of {self.max_length} tokens on its own; shorten it"
            )
        return InvalidRequestError(f"the tokenizer rejected the input: {exc}")

    def _checked(self, i: int, enc: Encoding, cut: bool, trunc: Truncation) -> Encoded:
        if not trunc.enabled and len(enc.ids) > self.max_length:
            raise TextTooLongError(
                f"input {i} has {len(enc.ids)} tokens, more than the model's window of {self.max_length}; "
                "shorten it or turn truncation on"
            )
        return Encoded(enc.ids, enc.type_ids, cut or bool(enc.overflowing))

    def encode_product(self, premises: Sequence[str], hypotheses: Sequence[str], trunc: Truncation) -> list[Encoded]:
        """Every (premise, hypothesis) pair, premise-major: premises and hypotheses are each tokenized once and
        joined by the tokenizer's own post-processor (special tokens, type ids, truncation), which is what
        encoding the pair as one input does, without re-tokenizing a premise for every label."""
        capped = [self._cap(p, trunc) for p in premises]
        for hypothesis in hypotheses:  # never cut, so a huge one is refused before it reaches the tokenizer
            if len(hypothesis) > self.max_chars:
                raise TextTooLongError(
                    f"a hypothesis of {len(hypothesis)} characters cannot fit the model's window of "
                    f"{self.max_length} tokens; shorten the candidate label or the hypothesis_template"
                )
        tok = self._tokenizer_for(trunc)
        try:
            firsts = tok.encode_batch([p for p, _ in capped], add_special_tokens=False)
            seconds = tok.encode_batch(list(hypotheses), add_special_tokens=False)
            pairs = [
                (tok.post_process(f, s, add_special_tokens=True), cut)
                for f, (_, cut) in zip(firsts, capped)
                for s in seconds
            ]
        except Exception as exc:  # tokenizers raises bare Exception
            raise self._error(exc) from exc
        return [self._checked(i, enc, cut, trunc) for i, (enc, cut) in enumerate(pairs)]
