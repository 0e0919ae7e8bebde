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
from collections.abc import Callable, Sequence
from pathlib import Path

CACHE = Path.home() / ".cache" / "offline-textclf-engine" / "benchmarks" / "full-trained"
VARIANTS = ("engine, cascade", "engine, cascade off", "onnxruntime dynamic int8")
KEYS = ("own texts", "docs")  # the figures each child reports


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


def alternating(
    module: str, variants: Sequence[str], rounds: int, extra: Sequence[str] = ()
) -> dict[str, list[dict[str, float]]]:
    """Each variant measured `rounds` times, each time in a fresh process (`python -m module --variant V *extra`,
    whose last line of output is its figures as JSON), the order reversed every other round so that a shared
    machine's slower and faster phases fall on every variant."""
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for r in range(rounds):
        for variant in variants[:: -1 if r % 2 else 1]:
            cmd = [sys.executable, "-m", module, "--variant", variant, *extra]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            runs[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


def speed_table(runs: dict[str, list[dict[str, float]]]) -> list[str]:
    """`alternating`'s sentences/s ("own texts", "docs") as a table: medians over rounds, and each round's figure
    over the same round's first variant (a round's variants run back to back, so a phase falls on both sides)."""
    first = next(iter(runs))
    lines = [
        f"| variant | own texts, sent/s | docs, sent/s | ratio to `{first}` (own / docs) | rounds (own / docs) |",
        "|---|---:|---:|---:|---|",
    ]
    for variant, got in runs.items():
        own, docs = (statistics.median(r[k] for r in got) for k in KEYS)
        ratio = [statistics.median(r[k] / b[k] for r, b in zip(got, runs[first], strict=True)) for k in KEYS]
        each = ", ".join(f"{r[KEYS[0]]:.0f} / {r[KEYS[1]]:.0f}" for r in got)
        lines.append(f"| {variant} | {own:.0f} | {docs:.0f} | {ratio[0]:.2f} / {ratio[1]:.2f} | {each} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # the child's own run
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant)))
        return
    print("\n".join(speed_table(alternating("experiments.cascade_overhead", VARIANTS, args.rounds))))


if __name__ == "__main__":
    main()
