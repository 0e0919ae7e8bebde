"""What the near-tie cascade costs in speed: the calibrated MiniLM export with its cascade, the same export with
the cascade off, and onnxruntime's dynamic int8, each in a fresh process, alternating over rounds.

    python -m experiments.cascade_overhead [--rounds 3]

Uses the harness's cached files (~/.cache/offline-textclf-engine/benchmarks/full-trained: run `python -m
benchmarks` once). Texts: the model's own 600 held-out glosses and the 512 CPython-docs sentences (out of domain).
Figures: sentences/s over each set in one call, median of 3 repetitions, then the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

CACHE = Path.home() / ".cache" / "offline-textclf-engine" / "benchmarks" / "full-trained"
VARIANTS = ("engine, cascade", "engine, cascade off", "onnxruntime dynamic int8")


def measure(variant: str) -> dict[str, float]:
    """In this (fresh) process: sentences/s of `variant` on each set of texts."""
    from benchmarks import corpus, peers
    from engine import TextClassifier

    data = json.loads((CACHE / "data.json").read_text("utf-8"))
    sets = {"own texts": [t for t, _ in data["classifier"]["test"][:600]], "docs": corpus.sample(512)}
    if variant == VARIANTS[2]:
        peer = peers.load("ort-int8", str(CACHE / "onnx-minilm-avx512_vnni"), 256)
        run = peer.predict
    else:
        clf = TextClassifier.load(CACHE / "engine-int8-calibrated-minilm")
        if variant == VARIANTS[1]:
            object.__setattr__(clf.model, "near_ties", None)
        run = clf
    return rates(run, sets)


def rates(run: Callable[[list[str]], object], sets: dict[str, list[str]]) -> dict[str, float]:
    """Sentences/s of `run` over each set of texts in one call, median of 3 repetitions after a warm-up."""
    out = {}
    for name, texts in sets.items():
        run(texts[:32])
        each = []
        for _ in range(3):
            start = time.perf_counter()
            run(texts)
            each.append(len(texts) / (time.perf_counter() - start))
        out[name] = statistics.median(each)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # the child's own run
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant)))
        return
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for r in range(args.rounds):
        for variant in VARIANTS[:: -1 if r % 2 else 1]:
            cmd = [sys.executable, "-m", "experiments.cascade_overhead", "--variant", variant]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            results[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("| variant | own texts, sent/s | docs, sent/s | rounds (own / docs) |\n|---|---:|---:|---|")
    for variant, rounds in results.items():
        own, docs = (statistics.median(r[k] for r in rounds) for k in ("own texts", "docs"))
        each = ", ".join(f"{r['own texts']:.0f} / {r['docs']:.0f}" for r in rounds)
        print(f"| {variant} | {own:.0f} | {docs:.0f} | {each} |")


if __name__ == "__main__":
    main()
