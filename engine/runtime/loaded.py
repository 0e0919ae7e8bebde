"""A loaded model: verified files + tokenizer + session, and the batched forward pass both tasks share.

Two ways to spend the cores on a call's batches. One batch at a time with every core inside each operator
(TextClassifier's default): the lowest latency for one text. Or `concurrent_batches` batches at once, the cores
split between them (ZeroShotClassifier's default, two at once: engine.tasks.base): no threads wait at each operator's
end, so more texts per second on calls of many batches (2 cores, `python -m benchmarks`, run G: MiniLM-L6 +28%,
DistilBERT-base +17%, zero-shot +35%, in the shared machine's slow phase, when handing each operator's work
between the cores costs most; level in its fast phase, scratch); a lone text gets fewer cores.
A call with fewer tokens than `concurrent_batches` full batches is cut into smaller batches, one per run, so a
few texts (or one text's zero-shot pairs) still spread over the cores; a single row runs on one run's cores.
Either way every batch is computed exactly as it would be alone, so rows stay independent of their neighbours.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import InvalidRequestError
from engine.model import files as model_files
from engine.model.manifest import ModelInfo
from engine.runtime import batching
from engine.runtime.session import OnnxSession, resolve_threads
from engine.runtime.tokenization import Encoded, TextTokenizer

if TYPE_CHECKING:  # concurrent.futures is imported only by a model with concurrent batches (0.8 MB resident)
    from concurrent.futures import Future, ThreadPoolExecutor


@dataclass(frozen=True)
class LoadedModel:
    info: ModelInfo
    tokenizer: TextTokenizer
    session: OnnxSession
    batch_tokens: int
    manifest_sha256: str = ""  # identifies the export (scoring jobs record it)
    concurrent_batches: int = 1
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        threads: int | None = None,
        batch_tokens: int = batching.DEFAULT_BATCH_TOKENS,
        verify: bool = True,
        concurrent_batches: int = 1,
    ) -> LoadedModel:
        """`threads`: the cores to use (default: all this process may use); `concurrent_batches`: how many
        batches run at once, each on threads // concurrent_batches of them (see the module doc)."""
        for name, value in (("batch_tokens", batch_tokens), ("concurrent_batches", concurrent_batches)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequestError(f"{name} must be a positive integer, got {value!r}")
        cores = resolve_threads(threads)
        files = model_files.load(path, verify=verify)
        info = files.info
        tokenizer = TextTokenizer(files.tokenizer_json, info.max_length, info.pad_id)
        per_run = max(1, cores // concurrent_batches)
        session = OnnxSession(files.onnx_path, info.num_labels, per_run)
        files.check_unchanged()
        pool = None
        if concurrent_batches > 1:
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(concurrent_batches, "engine-batch")
        return cls(info, tokenizer, session, batch_tokens, files.manifest_sha256, concurrent_batches, pool)

    def logits(self, encoded: Sequence[Encoded]) -> np.ndarray:
        """Raw logits (len(encoded), num_labels) in input order, computed in length-sorted token-budget batches."""
        out = np.empty((len(encoded), self.info.num_labels), dtype=np.float32)
        budget = self.batch_tokens
        if self._pool is not None:  # a call too small to fill every run is cut finer, so its rows share the cores
            budget = max(1, min(budget, -(-sum(len(e.ids) for e in encoded) // self.concurrent_batches)))
        batches = batching.batches(encoded, self.info.pad_id, budget, self.info.pooled_token_id)
        if self._pool is None:
            for batch in batches:
                out[batch.index] = self.session.run(batch)
        else:
            for batch, logits in self._concurrently(batches, self._pool):
                out[batch.index] = logits
        return out

    def _concurrently(self, batches: Iterator[batching.Batch], pool: ThreadPoolExecutor) -> Iterator[tuple[Any, ...]]:
        """(batch, logits) with up to `concurrent_batches` runs under way and as many padded batches waiting, so
        memory stays bounded whatever the call's size; an error is raised once the runs before it are done."""
        pending: deque[tuple[batching.Batch, Future[np.ndarray]]] = deque()
        for batch in batches:
            pending.append((batch, pool.submit(self.session.run, batch)))
            if len(pending) >= 2 * self.concurrent_batches:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
