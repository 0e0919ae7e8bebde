"""Whether onnxruntime's spin-waiting threads cost the near-tie cascade: one int8 export with rescore_margin, its
fp32 session built with spinning on and off, measured in one process, variants alternating.

    python -m experiments.cascade_spinning EXPORT_DIR [--rounds 3] [--out FILE.md]

EXPORT_DIR: an int8 export with near-tie re-scoring (the default `engine export`; the harness's is
~/.cache/offline-textclf-engine/benchmarks/full-trained/engine-int8-minilm). Texts: the harness's timing corpus
(512 CPython-docs sentences, out of the trained models' domains, so near-ties are common). Figures: sentences/s over
the corpus in one call, and the median latency of 200 single-text calls. Results: experiments/results/
cascade_spinning.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from benchmarks import corpus
from benchmarks.models import cpu_line
from engine import TextClassifier
from engine.runtime.session import OnnxSession


def load(export: Path, spinning: bool) -> TextClassifier:
    clf = TextClassifier.load(export)
    near = clf.model.near_ties
    if near is None:
        sys.exit(f"{export} re-scores no near-ties (its manifest has no rescore_margin)")
    assert near.files.reference_path is not None
    near._session = OnnxSession(near.files.reference_path, clf.model.info.num_labels, near.threads, spinning)
    return clf


def measure(clf: TextClassifier, texts: list[str]) -> tuple[float, float, float]:
    """(sentences/s, batch-1 p50 ms, share of rows re-scored)"""
    clf(texts[:32])
    near = clf.model.near_ties
    assert near is not None
    before = near.rescored
    start = time.perf_counter()
    clf(texts)
    rate = len(texts) / (time.perf_counter() - start)
    share = (near.rescored - before) / len(texts)
    latencies = []
    for text in texts[:200]:
        start = time.perf_counter()
        clf(text)
        latencies.append((time.perf_counter() - start) * 1e3)
    return rate, statistics.median(latencies), share


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    texts = corpus.sample(512)
    variants = {"fp32 session spinning (onnxruntime's default)": True, "fp32 session not spinning": False}
    models = {name: load(args.export, spin) for name, spin in variants.items()}
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, clf in models.items():
            figures[name].append(measure(clf, texts))
    lines = [
        f"CPU: {cpu_line()}",
        "",
        f"`python -m experiments.cascade_spinning {args.export.name}`: {args.rounds} rounds, variants alternating in "
        "one process, medians. The int8 session spins as onnxruntime's default in both.",
        "",
        "| fp32 near-tie session | sent/s | batch-1 p50 ms | rows re-scored |",
        "|---|---:|---:|---:|",
    ]
    for name, rows in figures.items():
        rate, p50, share = (statistics.median(r[i] for r in rows) for i in range(3))
        lines.append(f"| {name} | {rate:.0f} | {p50:.2f} | {share:.0%} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
