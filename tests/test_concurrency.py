"""One loaded model serves many threads: 8 threads x 1,000 requests give exactly the serial results, and loading
the same model from several threads at once is safe.

Every request is a single input, as in the serial run, so each thread's padding and batch shapes are those of the
serial run and the results must be bit-identical (not merely close).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from engine import ClassificationOutput, TextClassifier, TextPair, ZeroShotClassifier

THREADS = 8
REQUESTS = 1_000
LONG = "the quick brown fox jumps over the lazy dog " * 20  # over the 64-token window: exercises truncation
TEXTS: list[Any] = [
    "I like you. I love you",
    "This movie was a complete waste of time.",
    "Meh.",
    "😀 emoji and مرحبا",
    LONG,
    TextPair("What is Paris?", "Paris is the capital of France."),
]
# (input, keyword arguments): varied so threads build the lazily made per-truncation tokenizers at the same time
REQUEST_KINDS: list[tuple[Any, dict[str, Any]]] = [
    (text, kwargs)
    for text in TEXTS
    for kwargs in ({}, {"top_k": None}, {"truncation_direction": "left"}, {"function_to_apply": "sigmoid"})
]


def as_plain(outputs: list[ClassificationOutput]) -> list[tuple[str, float]]:
    return [(o.label, o.score) for o in outputs]


def run_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Start `count` threads together (a barrier), return their results in thread order; errors propagate."""
    barrier = threading.Barrier(count)

    def start(i: int) -> Any:
        barrier.wait()
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(start, range(count)))


def test_eight_threads_give_the_serial_results(exported: Any) -> None:
    path = exported("bert", "fp32")
    serial_model = TextClassifier.load(path, threads=1)
    expected = [as_plain(serial_model(text, **kwargs)) for text, kwargs in REQUEST_KINDS]

    shared = TextClassifier.load(path, threads=1)  # fresh: no per-truncation tokenizer made yet

    def work(thread: int) -> list[tuple[int, list[tuple[str, float]]]]:
        out = []
        for n in range(REQUESTS):
            k = (n * 7 + thread * 13) % len(REQUEST_KINDS)  # each thread its own order
            text, kwargs = REQUEST_KINDS[k]
            out.append((k, as_plain(shared(text, **kwargs))))
        return out

    results = run_threads(THREADS, work)
    assert sum(len(r) for r in results) == THREADS * REQUESTS
    mismatches = [(k, got) for per_thread in results for k, got in per_thread if got != expected[k]]
    assert mismatches == []


def test_loading_the_same_model_from_several_threads(exported: Any) -> None:
    path = exported("bert", "fp32")
    expected = as_plain(TextClassifier.load(path, threads=1)("I like you. I love you", top_k=None))
    models = run_threads(4, lambda _: TextClassifier.load(path, threads=1))
    assert len({id(m) for m in models}) == 4
    for model in models:
        assert as_plain(model("I like you. I love you", top_k=None)) == expected


@pytest.fixture(scope="module")
def nli_path(exported: Any) -> Any:
    return exported("bert-nli", "fp32")


def test_zero_shot_from_several_threads(nli_path: Any) -> None:
    labels = ["news", "sport", "politics", "refund"]
    texts = ["The match ended in a draw.", LONG, "I want my money back!"]
    expected = [as_plain(ZeroShotClassifier.load(nli_path, threads=1)(t, labels)) for t in texts]
    shared = ZeroShotClassifier.load(nli_path, threads=1)

    def work(thread: int) -> list[bool]:
        return [as_plain(shared(texts[(n + thread) % 3], labels)) == expected[(n + thread) % 3] for n in range(100)]

    assert all(all(ok) for ok in run_threads(4, work))
