"""Two batches at once on one session that has every core, against the engine's two ways to spend the cores.

    python -m experiments.shared_pool EXPORT_DIR [--rounds 3]

The engine runs one batch at a time with every core inside each operator (TextClassifier's default: the lowest
latency for one text), or `concurrent_batches` batches at once on a session with cores // concurrent_batches
threads each (more texts per second, a lone text on fewer cores). A third way keeps one session with every core
and submits two batches at once from two threads: onnxruntime's Run is thread-safe and the calling thread works
inside its own run, so each run has a core and the pool's threads help whichever run has work. If that matched
the second way's throughput, one session could serve both a lone text (all cores) and a large call (two runs).
Texts: the harness's timing corpus (512 CPython-docs sentences); the int8 graph alone (no near-tie re-scoring).
Figures: sentences/s over the corpus in one call, median of repetitions, variants alternating per round.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import corpus
from benchmarks.models import cpu_line
from engine.model.manifest import MODEL_FILE, read
from engine.runtime import batching
from engine.runtime.session import OnnxSession, resolve_threads
from engine.runtime.tokenization import Encoded, Strategy, TextTokenizer, Truncation


def run(session: OnnxSession, encoded: list[Encoded], pad: int, pooled: int | None, at_once: int) -> np.ndarray:
    out = np.empty((len(encoded), session.num_labels), dtype=np.float32)
    batches = batching.batches(encoded, pad, batching.DEFAULT_BATCH_TOKENS, pooled)
    if at_once == 1:
        for b in batches:
            out[b.index] = session.run(b)
        return out
    with ThreadPoolExecutor(at_once) as pool:
        pending: deque[tuple[batching.Batch, Future[np.ndarray]]] = deque()
        for b in batches:
            pending.append((b, pool.submit(session.run, b)))
            if len(pending) >= 2 * at_once:
                done, fut = pending.popleft()
                out[done.index] = fut.result()
        while pending:
            done, fut = pending.popleft()
            out[done.index] = fut.result()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    info = read(args.export).info
    tokenizer = TextTokenizer((args.export / "tokenizer.json").read_text("utf-8"), info.max_length, info.pad_id)
    texts = corpus.sample(512)
    encoded = tokenizer.encode(texts, Truncation(strategy=Strategy.LONGEST_FIRST))
    cores = resolve_threads(None)
    graph = args.export / MODEL_FILE
    variants = {
        f"one batch at a time, {cores} threads (default)": (OnnxSession(graph, info.num_labels, cores), 1),
        f"{cores} batches at once, 1 thread each (concurrent_batches)": (OnnxSession(graph, info.num_labels, 1), cores),
        f"{cores} batches at once, one {cores}-thread session": (OnnxSession(graph, info.num_labels, cores), cores),
    }
    reference = run(next(iter(variants.values()))[0], encoded, info.pad_id, info.pooled_token_id, 1)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name in list(variants)[:: -1 if r % 2 else 1]:
            session, at_once = variants[name]
            run(session, encoded[:32], info.pad_id, info.pooled_token_id, at_once)
            reps = []
            for _ in range(args.reps):
                start = time.perf_counter()
                out = run(session, encoded, info.pad_id, info.pooled_token_id, at_once)
                reps.append(len(texts) / (time.perf_counter() - start))
            assert np.array_equal(out.argmax(1), reference.argmax(1)), name
            rates[name].append(statistics.median(reps))
    print(f"CPU: {cpu_line()}; {cores} cores")
    print("| variant | sentences/s (median of rounds) | rounds |\n|---|---:|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.0f} | {' / '.join(f'{v:.0f}' for v in values)} |")


if __name__ == "__main__":
    main()
