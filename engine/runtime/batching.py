"""Length-sorted, token-budget batches: similar lengths share a batch, so little compute goes to padding.

A batch is padded to its own longest row; the attention mask hides the padding, so a row's scores do not
depend on its neighbours (up to float rounding in fp32; int8 graphs quantize per row, see the export script).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from engine.runtime.tokenization import Encoded

# Small batches keep activations in cache: 256 padded tokens per batch was the fastest setting measured, for int8
# and fp32 alike. Measure it on your machine with `python -m experiments.levers` (results: benchmarks/results/).
DEFAULT_BATCH_TOKENS = 256
DEFAULT_MAX_ROWS = 256


@dataclass(frozen=True)
class Batch:
    """Padded model inputs for the rows `index` (positions in the caller's list)."""

    index: np.ndarray
    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray


def plan(lengths: Sequence[int], batch_tokens: int, max_rows: int = DEFAULT_MAX_ROWS) -> Iterator[np.ndarray]:
    """Group row indices, longest first, so that rows x longest length stays within `batch_tokens`."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    start = 0
    while start < len(order):
        longest = lengths[order[start]]
        rows = max(1, min(max_rows, batch_tokens // max(longest, 1)))
        yield order[start : start + rows]
        start += rows


def pad(encoded: Sequence[Encoded], index: np.ndarray, pad_id: int) -> Batch:
    width = max(len(encoded[i].ids) for i in index)
    ids = np.full((len(index), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(index), width), dtype=np.int64)
    types = np.zeros((len(index), width), dtype=np.int64)
    for row, i in enumerate(index):
        enc = encoded[i]
        n = len(enc.ids)
        ids[row, :n] = enc.ids
        mask[row, :n] = 1
        types[row, :n] = enc.type_ids
    return Batch(index, ids, mask, types)


def batches(
    encoded: Sequence[Encoded],
    pad_id: int,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    pooled_id: int | None = None,
) -> Iterator[Batch]:
    """Padded batches covering every row once. With `pooled_id` (BART-family heads, which read the last
    occurrence of that token and reshape by its count per row), rows only share a batch with rows holding the
    same number of it: a text with a literal "</s>" in it would otherwise shift its neighbours' pooled rows."""
    if pooled_id is None:
        parts = [np.arange(len(encoded))]
    else:
        counts = np.array([e.ids.count(pooled_id) for e in encoded], dtype=np.int64)
        parts = [np.flatnonzero(counts == c) for c in np.unique(counts)]
    for part in parts:
        for index in plan([len(encoded[int(i)].ids) for i in part], batch_tokens):
            yield pad(encoded, part[index], pad_id)
