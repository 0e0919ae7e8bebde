"""Length-sorted token-budget batches: every row exactly once, budget kept, and rows grouped by pooled-token count."""

from __future__ import annotations

import numpy as np

from engine.runtime import batching
from engine.runtime.tokenization import Encoded


def enc(ids: list[int]) -> Encoded:
    return Encoded(ids, [0] * len(ids), False)


def test_plan_covers_every_row_once_longest_first_within_budget() -> None:
    lengths = [5, 40, 3, 40, 17, 9, 1, 30]
    groups = list(batching.plan(lengths, batch_tokens=64))
    flat = np.concatenate(groups)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert all(len(g) * max(lengths[i] for i in g) <= 64 or len(g) == 1 for g in groups)


def test_a_row_longer_than_the_budget_still_gets_a_batch_of_its_own() -> None:
    assert [g.tolist() for g in batching.plan([100, 2], batch_tokens=10)] == [[0], [1]]


def test_pad_fills_pad_id_and_masks_padding() -> None:
    batch = batching.pad([enc([7, 8, 9]), enc([7])], np.array([0, 1]), pad_id=1)
    assert batch.input_ids.tolist() == [[7, 8, 9], [7, 1, 1]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_pooled_token_count_splits_batches() -> None:
    eos = 2
    rows = [enc([0, 5, 2, 2, 6, 2]), enc([0, 5, 2, 7, 2, 2, 6, 2]), enc([0, 9, 2, 2, 6, 2]), enc([0, 2, 2, 2, 2])]
    together = list(batching.batches(rows, pad_id=1, batch_tokens=10_000))
    assert len(together) == 1
    split = list(batching.batches(rows, pad_id=1, batch_tokens=10_000, pooled_id=eos))
    for batch in split:
        counts = {(batch.input_ids[r] == eos).sum() for r in range(len(batch.index))}
        assert len(counts) == 1
    assert sorted(i for b in split for i in b.index.tolist()) == [0, 1, 2, 3]
    assert len(split) == 2
