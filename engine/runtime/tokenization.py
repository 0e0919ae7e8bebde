"""Text -> token ids, with the model's window enforced here and nowhere else.

The tokenizer.json's own padding and truncation are ignored (some files carry a fixed padding of 128):
we truncate to the model's window ourselves and pad per batch in `batching`. One `tokenizers.Tokenizer` per model,
set for each call's truncation under a lock (`TextTokenizer._using`): threads take turns instead of each
truncation setting holding its own copy of the vocabulary.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import cast

from tokenizers import Encoding, Tokenizer

from engine.errors import InvalidRequestError, ModelLoadError, TextTooLongError, first_error
from engine.runtime.chunking import TRUNCATE, LongText

# Texts are cut to this many characters per window token before tokenizing (TEI does the same), so that a
# 50 MB string is never handed to the tokenizer. Far more than any window needs: a token covers >= 1 character.
CHARS_PER_TOKEN_CAP = 64
# long_text="chunk" reads a text whole; past this many characters it is refused (never cut): split it first
CHUNK_CHARS_CAP = 1_000_000


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


@dataclass(frozen=True)
class Premise:
    """A zero-shot premise's rows: `windows` windows x its hypotheses, window-major (windows=1 unless chunked)."""

    rows: list[Encoded]
    windows: int


class TextTokenizer:
    """tokenizer.json wrapper: encode single texts or pairs, within `max_length` tokens."""

    def __init__(self, tokenizer_json: str, max_length: int, pad_id: int) -> None:
        try:
            # from bytes, not from the str: tokenizers 0.23 (PyO3) reading a str keeps a UTF-8 copy of it inside
            # the str object for as long as the str lives (tests/test_model_files.py measures load-time memory)
            self._tok = Tokenizer.from_buffer(tokenizer_json.encode("utf-8"))
        except Exception as exc:  # tokenizers raises bare Exception
            raise ModelLoadError(f"tokenizer.json could not be parsed: {exc}. Re-export the model.") from exc
        self.max_length = max_length
        self.pad_id = pad_id
        self.max_chars = max_length * CHARS_PER_TOKEN_CAP
        self._tok.no_padding()
        self._tok.no_truncation()
        self._truncation: Truncation | None = None  # what self._tok is set to (None: no truncation)
        self._lock = threading.Lock()
        self.specials_single = self._tok.num_special_tokens_to_add(False)
        self.specials_pair = self._tok.num_special_tokens_to_add(True)

    @contextmanager
    def _using(self, trunc: Truncation | None) -> Iterator[Tokenizer]:
        """The one Tokenizer, set for `trunc` (None or disabled: no truncation) and held by the caller until the
        block ends. Truncation is a setting of the instance, and an instance per setting cost a second copy of the
        vocabulary (10 MB for BERT's); tokenizing is fast next to a model run, so callers take turns."""
        wanted = trunc if trunc is not None and trunc.enabled else None
        with self._lock:
            if wanted != self._truncation:
                if wanted is None:
                    self._tok.no_truncation()
                else:
                    self._tok.enable_truncation(
                        self.max_length, stride=0, strategy=wanted.strategy.value, direction=wanted.side.value
                    )
                self._truncation = wanted
            yield self._tok

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
        """Tokenize a batch of validated texts and (text, text_pair) tuples, in order; a row that does not fit
        the window with truncation off raises TextTooLongError."""
        return first_error(self._encode(items, trunc, per_row=False))

    def encode_rows(
        self, items: Sequence[str | tuple[str, str]], trunc: Truncation
    ) -> list[Encoded | TextTooLongError]:
        """Like `encode`, but a row that does not fit comes back as its error and the other rows are encoded."""
        return self._encode(items, trunc, per_row=True)

    def _encode(
        self, items: Sequence[str | tuple[str, str]], trunc: Truncation, per_row: bool
    ) -> list[Encoded | TextTooLongError]:
        errors: dict[int, TextTooLongError] = {}
        capped: list[tuple[int, str | tuple[str, str], bool]] = []
        for i, item in enumerate(items):
            try:
                if isinstance(item, tuple):
                    (a, cut_a), (b, cut_b) = self._cap(item[0], trunc), self._cap(item[1], trunc)
                    capped.append((i, (a, b), cut_a or cut_b))
                else:
                    text, cut = self._cap(item, trunc)
                    capped.append((i, text, cut))
            except TextTooLongError as exc:
                if not per_row:  # refused before the tokenizer sees anything
                    raise TextTooLongError(f"input {i}: {exc}") from None
                errors[i] = exc
        try:
            with self._using(trunc) as tok:
                encodings: list[Encoding] = tok.encode_batch([c for _, c, _ in capped], add_special_tokens=True)
        except Exception as exc:  # tokenizers raises bare Exception
            raise self._error(exc) from exc
        done = {i: self._checked(enc, cut, trunc) for (i, _, cut), enc in zip(capped, encodings)}
        return [errors[i] if i in errors else done[i] for i in range(len(items))]

    def _error(self, exc: Exception) -> InvalidRequestError:
        if "too short" in str(exc):
            return TextTooLongError(
                "the second text of a pair (e.g. the zero-shot hypothesis) does not fit the model's "
                f"window of {self.max_length} tokens on its own; shorten it"
            )
        return InvalidRequestError(f"the tokenizer rejected the input: {exc}")

    def _checked(self, enc: Encoding, cut: bool, trunc: Truncation) -> Encoded | TextTooLongError:
        if not trunc.enabled and len(enc.ids) > self.max_length:
            return TextTooLongError(
                f"the text has {len(enc.ids)} tokens, more than the model's window of {self.max_length}; "
                "shorten it or turn truncation on"
            )
        return Encoded(enc.ids, enc.type_ids, cut or bool(enc.overflowing))

    def encode_chunks(self, texts: Sequence[str], long_text: LongText) -> list[list[Encoded] | TextTooLongError]:
        """Every window of each single text, special tokens added to each: what long_text="chunk" scores. A text
        that fits gives exactly the one row `encode` gives; a text too long to chunk comes back as its error."""
        budget = self.max_length - self.specials_single
        firsts = self._tokenized(texts)
        out: list[list[Encoded] | TextTooLongError] = []
        try:
            with self._using(None) as plain:
                for first in firsts:
                    if isinstance(first, TextTooLongError):
                        out.append(first)
                        continue
                    windows = self._windows(first, budget, long_text.stride)
                    out.append([self._encoded(plain.post_process(w, None, add_special_tokens=True)) for w in windows])
        except InvalidRequestError:
            raise
        except Exception as exc:  # tokenizers raises bare Exception
            raise self._error(exc) from exc
        return out

    def encode_pairs(
        self,
        premises: Sequence[str],
        hypotheses: Sequence[Sequence[str]],
        trunc: Truncation,
        long_text: LongText = TRUNCATE,
    ) -> list[Premise | TextTooLongError]:
        """Each premise paired with each of its own hypotheses (`hypotheses[i]` for `premises[i]`); with
        long_text="chunk", each window of the premise with each hypothesis, window-major.

        Premises and distinct hypotheses are each tokenized once and joined by the tokenizer's own post-processor
        (special tokens, type ids, truncation), which is what encoding the pair as one input does. Only the
        premise is ever cut or chunked. A premise that does not fit with truncation off comes back as its error; a
        hypothesis that can never fit raises."""
        if len(premises) != len(hypotheses):
            raise InvalidRequestError(f"{len(premises)} texts but {len(hypotheses)} label lists; give one per text")
        distinct = list(dict.fromkeys(h for hs in hypotheses for h in hs))
        for hypothesis in distinct:  # never cut, so a huge one is refused before it reaches the tokenizer
            if len(hypothesis) > self.max_chars:
                raise TextTooLongError(
                    f"a hypothesis of {len(hypothesis)} characters cannot fit the model's window of "
                    f"{self.max_length} tokens; shorten the candidate label or the hypothesis_template"
                )
        try:
            with self._using(None) as plain:
                encoded_h = dict(zip(distinct, plain.encode_batch(distinct, add_special_tokens=False)))
        except Exception as exc:  # tokenizers raises bare Exception
            raise self._error(exc) from exc
        firsts: list[Encoding | tuple[Encoding, bool] | TextTooLongError]  # whole premises, or (premise, cut)
        firsts = list(self._tokenized(premises)) if long_text.chunk else list(self._capped_premises(premises, trunc))
        specials = self.specials_pair
        out: list[Premise | TextTooLongError] = []
        try:
            with self._using(None if long_text.chunk else trunc) as tok:
                for first, hs in zip(firsts, hypotheses):
                    if isinstance(first, TextTooLongError):
                        out.append(first)
                        continue
                    seconds = [encoded_h[h] for h in hs]
                    if not long_text.chunk:
                        enc, cut = cast(tuple[Encoding, bool], first)  # typed since tokenizers 0.23
                        joined = [tok.post_process(enc, h, add_special_tokens=True) for h in seconds]
                        rows = [self._checked(pair, cut, trunc) for pair in joined]
                        error = next((r for r in rows if isinstance(r, TextTooLongError)), None)
                        out.append(error or Premise([r for r in rows if isinstance(r, Encoded)], 1))
                        continue
                    budget = self.max_length - specials - max(len(h.ids) for h in seconds)
                    if budget < 1:
                        raise TextTooLongError(
                            f"a hypothesis leaves no room for the text in the model's window of {self.max_length} "
                            "tokens; shorten the candidate label or the hypothesis_template"
                        )
                    windows = self._windows(cast(Encoding, first), budget, long_text.stride)
                    pairs = [tok.post_process(w, h, add_special_tokens=True) for w in windows for h in seconds]
                    out.append(Premise([self._encoded(p) for p in pairs], len(windows)))
        except InvalidRequestError:
            raise
        except Exception as exc:  # tokenizers raises bare Exception
            raise self._error(exc) from exc
        return out

    def _capped_premises(
        self, premises: Sequence[str], trunc: Truncation
    ) -> list[tuple[Encoding, bool] | TextTooLongError]:
        """Premises tokenized without special tokens (truncated by the pair's post-process), after the character cap."""
        capped: list[tuple[str, bool] | TextTooLongError] = []
        for p in premises:
            try:
                capped.append(self._cap(p, trunc))
            except TextTooLongError as exc:
                capped.append(exc)
        fitting = [c for c in capped if not isinstance(c, TextTooLongError)]
        try:
            with self._using(trunc) as tok:
                encodings = iter(tok.encode_batch([p for p, _ in fitting], add_special_tokens=False))
        except Exception as exc:  # tokenizers raises bare Exception
            raise self._error(exc) from exc
        return [c if isinstance(c, TextTooLongError) else (next(encodings), c[1]) for c in capped]

    def _tokenized(self, texts: Sequence[str]) -> list[Encoding | TextTooLongError]:
        """Whole texts, no special tokens, nothing cut: the input of `_windows`."""
        out: list[Encoding | TextTooLongError] = []
        fitting = [t for t in texts if len(t) <= CHUNK_CHARS_CAP]
        try:
            with self._using(None) as plain:
                encodings = iter(plain.encode_batch(fitting, add_special_tokens=False))
        except Exception as exc:  # tokenizers raises bare Exception
            raise self._error(exc) from exc
        for t in texts:
            if len(t) > CHUNK_CHARS_CAP:
                out.append(
                    TextTooLongError(
                        f"text of {len(t)} characters is over the {CHUNK_CHARS_CAP} characters long_text='chunk' "
                        "takes; split it into documents first"
                    )
                )
            else:
                out.append(next(encodings))
        return out

    @staticmethod
    def _windows(encoding: Encoding, budget: int, stride: int | None) -> list[Encoding]:
        """`budget`-token windows of a tokenized text, each repeating `stride` tokens of the previous one: the
        tokenizer's own overflow (Encoding.truncate with a stride), so windows are slices of one tokenization."""
        stride = budget // 4 if stride is None else stride
        if stride >= budget:
            raise InvalidRequestError(
                f"chunk_stride {stride} must be smaller than the {budget} text tokens a window holds here"
            )
        encoding.truncate(budget, stride=stride)
        return [encoding, *encoding.overflowing]

    @staticmethod
    def _encoded(enc: Encoding) -> Encoded:
        return Encoded(enc.ids, enc.type_ids, False)
