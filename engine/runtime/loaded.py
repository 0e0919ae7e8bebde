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

An int8 export may keep its fp32 graph to re-score near-ties (the manifest's `rescore_margin`, `engine export
--rescore-near-ties`): a row whose int8 decision margin is below it is computed again by the fp32 graph, loaded
on the first such row. The choice rests on the row's own int8 logits and the fp32 answer on the row alone, so rows
stay independent; the int8 gate measures this cascade's output (engine/export/gate.py).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import InvalidRequestError
from engine.model import files as model_files
from engine.model.fileio import read_regular
from engine.model.files import ModelFiles
from engine.model.manifest import ModelInfo, cannot_read
from engine.model.onnx_scan import check_graph
from engine.runtime import batching, postprocess
from engine.runtime.session import OnnxSession, resolve_threads
from engine.runtime.tokenization import Encoded, TextTokenizer

if TYPE_CHECKING:  # concurrent.futures is imported only by a model with concurrent batches (0.8 MB resident)
    from concurrent.futures import Future, ThreadPoolExecutor


class NearTies:
    """The fp32 graph that re-scores the rows an int8 graph decides by less than `margin`; its session is built on
    the first such row (a model whose rows are all clear never holds the fp32 weights in memory)."""

    def __init__(self, files: ModelFiles, margin: float, threads: int) -> None:
        self.files, self.margin, self.threads = files, margin, threads
        self._session: OnnxSession | None = None
        self._lock = threading.Lock()
        self.rescored = 0  # rows re-scored so far

    def session(self) -> OnnxSession:
        """The fp32 session, built once. Its graph (and weights file) were hashed at load; here the graph is
        scanned as model.onnx was (engine.model.onnx_scan: external data only in ranges of its own weights file, a
        classifier's inputs and outputs), its bytes released, and onnxruntime reads it from its path and maps the
        weights; a file changed since load is an IntegrityError."""
        with self._lock:
            if self._session is None:
                path = self.files.reference_path
                assert path is not None, "ModelFiles without the fp32 reference"
                self.files.check_unchanged(reference=True)
                try:
                    graph, _ = read_regular(path)
                except OSError as exc:
                    raise cannot_read(path, exc) from exc
                weights, weights_identity = self.files.reference_data_path, self.files.reference_data_identity
                if weights is None or weights_identity is None:  # a reference kept in one file (older exports)
                    check_graph(graph, self.files.info.num_labels, path)
                else:  # its weights file beside it, mapped by onnxruntime
                    check_graph(graph, self.files.info.num_labels, path, weights.name, weights_identity[2])
                del graph
                session = OnnxSession(path, self.files.info.num_labels, self.threads, spinning=False)
                self.files.check_unchanged(reference=True)
                self._session = session
            return self._session

    def rescore(self, out: np.ndarray, encoded: Sequence[Encoded], batch_tokens: int) -> None:
        """Replace, in place, the rows of `out` (int8 logits of `encoded`) whose margin is below `margin` by the
        fp32 graph's logits of the same rows."""
        near = np.flatnonzero(postprocess.margins(out) < self.margin)
        if not near.size:
            return
        session = self.session()
        info = self.files.info
        for batch in batching.batches(
            [encoded[i] for i in near.tolist()], info.pad_id, batch_tokens, info.pooled_token_id
        ):
            out[near[batch.index]] = session.run(batch)
        self.rescored += int(near.size)


@dataclass(frozen=True)
class LoadedModel:
    info: ModelInfo
    tokenizer: TextTokenizer
    session: OnnxSession
    batch_tokens: int
    manifest_sha256: str = ""  # identifies the export (scoring jobs record it)
    concurrent_batches: int = 1
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False, compare=False)
    near_ties: NearTies | None = field(default=None, repr=False, compare=False)

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
        near_ties = None if info.rescore_margin is None else NearTies(files, info.rescore_margin, cores)
        return cls(info, tokenizer, session, batch_tokens, files.manifest_sha256, concurrent_batches, pool, near_ties)

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
        if self.near_ties is not None:
            self.near_ties.rescore(out, encoded, self.batch_tokens)
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
