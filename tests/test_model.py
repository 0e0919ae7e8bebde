"""engine.runtime.loaded: the batched forward pass, one batch at a time or `concurrent_batches` at once.

Running batches at once must not change a single score: each batch is the same padded rows, run by one session
with the same per-run thread count, whichever worker runs it. Errors surface, and the batches waiting stay bounded.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from engine import InferenceError, InvalidRequestError, TextClassifier
from engine.runtime import batching
from engine.runtime.loaded import LoadedModel
from engine.runtime.tokenization import Truncation

# lengths from 1 to ~60 words: with a 256-token budget these make many batches of different widths
TEXTS = [" ".join(["word"] * (1 + (i * 7) % 60)) + f" number {i}" for i in range(120)]


def encoded(model: LoadedModel) -> list[Any]:
    return model.tokenizer.encode(TEXTS, Truncation())


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_batches_at_once_give_the_one_at_a_time_scores_bit_for_bit(exported: Any, precision: str) -> None:
    path = exported("bert", precision)
    serial = LoadedModel.load(path, threads=1)
    concurrent = LoadedModel.load(path, threads=2, concurrent_batches=2)  # 1 thread per run, as `serial`
    assert concurrent.session.threads == 1
    assert concurrent.concurrent_batches == 2
    rows = encoded(serial)
    assert sum(1 for _ in batching.batches(rows, serial.info.pad_id, serial.batch_tokens)) > 4
    np.testing.assert_array_equal(concurrent.logits(rows), serial.logits(rows))


def test_the_public_api_takes_concurrent_batches(exported: Any) -> None:
    path = exported("bert", "fp32")
    one = TextClassifier.load(path, threads=1)
    many = TextClassifier.load(path, threads=3, concurrent_batches=3)
    assert many.model.session.threads == 1
    assert many(TEXTS, top_k=None) == one(TEXTS, top_k=None)


def test_threads_are_split_between_the_runs(exported: Any) -> None:
    path = exported("bert", "fp32")
    assert LoadedModel.load(path, threads=4, concurrent_batches=2).session.threads == 2
    assert LoadedModel.load(path, threads=2, concurrent_batches=4).session.threads == 1  # never below one
    assert LoadedModel.load(path, threads=3).session.threads == 3


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2", None])
def test_concurrent_batches_must_be_a_positive_integer(exported: Any, bad: object) -> None:
    with pytest.raises(InvalidRequestError, match="concurrent_batches"):
        LoadedModel.load(exported("bert", "fp32"), concurrent_batches=bad)  # type: ignore[arg-type]


class Tracing:
    """A session stand-in that records how many runs overlap, sleeping so that they can; fails on one batch."""

    def __init__(self, real: Any, fail_on: int | None = None) -> None:
        self.real, self.fail_on = real, fail_on
        self.lock = threading.Lock()
        self.running = self.most = self.calls = 0
        self.second_started = threading.Event()

    def run(self, batch: Any) -> np.ndarray:
        with self.lock:
            self.calls += 1
            call = self.calls
            self.running += 1
            self.most = max(self.most, self.running)
        if call == 2:
            self.second_started.set()
        try:
            if call == 1:  # the first run waits for the second to start: overlap by state, not by sleeping
                self.second_started.wait(timeout=30)
            if call == self.fail_on:
                raise InferenceError("boom")
            return self.real.run(batch)
        finally:
            with self.lock:
                self.running -= 1


def test_runs_overlap_up_to_the_setting_and_batches_wait_in_a_bounded_queue(
    exported: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = LoadedModel.load(exported("bert", "fp32"), threads=2, concurrent_batches=2)
    tracing = Tracing(model.session)
    object.__setattr__(model, "session", tracing)
    made = []  # batches padded so far, recorded as each is made
    ahead = []  # padded batches not yet run to the end, when each new one is made

    original = batching.batches

    def counting(*args: Any, **kwargs: Any) -> Any:
        for batch in original(*args, **kwargs):
            made.append(batch)
            ahead.append(len(made) - (tracing.calls - tracing.running))
            yield batch

    monkeypatch.setattr("engine.runtime.loaded.batching.batches", counting)
    model.logits(encoded(model))
    assert tracing.most == 2
    assert tracing.calls == len(made) > 4
    assert max(ahead) <= 2 * 2 + 1


def test_a_failing_batch_raises_its_error(exported: Any) -> None:
    model = LoadedModel.load(exported("bert", "fp32"), threads=2, concurrent_batches=2)
    object.__setattr__(model, "session", Tracing(model.session, fail_on=3))
    with pytest.raises(InferenceError, match="boom"):
        model.logits(encoded(model))


def test_a_call_smaller_than_the_runs_is_cut_so_its_rows_share_the_cores(exported: Any) -> None:
    path = exported("bert", "fp32")
    serial = LoadedModel.load(path, threads=1)
    model = LoadedModel.load(path, threads=2, concurrent_batches=2)
    few = serial.tokenizer.encode(["one short text", "another short one", "a third", "and a fourth text"], Truncation())
    assert sum(1 for _ in batching.batches(few, serial.info.pad_id, serial.batch_tokens)) == 1  # one batch alone
    tracing = Tracing(model.session)
    object.__setattr__(model, "session", tracing)
    np.testing.assert_array_equal(model.logits(few), serial.logits(few))
    assert tracing.calls >= 2
    assert tracing.most == 2
    tracing.calls = tracing.most = 0
    model.logits(few[:1])  # one row cannot be cut
    assert tracing.calls == 1
