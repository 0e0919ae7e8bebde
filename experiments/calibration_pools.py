"""Does the calibration text decide what a fully static int8 graph keeps in the model's own domain?

    python -m experiments.calibration_pools CHECKPOINT_DIR [--task classifier|fortunes] [--out FILE.md]

Every MatMul int8 on static scales (plain and smoothed, engine/export/quantize), the ranges taken from one pool of
texts at a time: the gate's built-in search split (what `engine export` uses with no `--calibration-file`); CPython
docs sentences (benchmarks/corpus.py); those of them the fp32 model calls with probability >= 0.9 (texts
that look like its domain to it, chosen without labels); the harness's in-domain calibration texts (the best a
user's `--calibration-file` can give); and unions. Measured against the fused fp32 graph: the gate's confirm split
(clear decisions, and every one), the model's held-out texts (every decision: what issue 29 counts), and the same
after the near-tie cascade at the export's margin (rows whose int8 margin is below it re-scored by fp32), with the
share of rows it re-scores there and on docs sentences no pool used. CHECKPOINT_DIR and the texts are the
harness's (benchmarks/models.py, ~/.cache/offline-textclf-engine/benchmarks/full-trained). Results:
experiments/results/calibration_pools.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.corpus import all_sentences
from benchmarks.models import cpu_line
from engine.export import gate, quantize
from engine.export.verify import RESCORE_MARGIN
from engine.runtime.postprocess import softmax
from experiments.headroom import emit, prepare

DATA = Path.home() / ".cache/offline-textclf-engine/benchmarks/full-trained/data.json"
POOL = 800  # texts per pool (the search split has 801)
CONFIDENT = 0.9  # fp32 top-1 probability that puts a docs sentence in the "looks like its domain" pool


def flips(ref: np.ndarray, got: np.ndarray) -> tuple[int, int]:
    """(clear decisions flipped, every decision flipped)."""
    same = quantize.decisions(ref) == quantize.decisions(got)
    return int((~same[quantize.counted(ref)]).sum()), int((~same).sum())


def cascade(ref: np.ndarray, got: np.ndarray) -> tuple[int, float]:
    """Decisions flipped after the run time's near-tie cascade at RESCORE_MARGIN (engine.export.gate.cascade), and
    the share of rows it re-scored."""
    final, rescored = gate.cascade(got, ref, RESCORE_MARGIN)
    return flips(ref, final)[1], rescored / len(ref)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--task", default="classifier")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    data = json.loads(DATA.read_text())[args.task]
    held_out = [t for t, _ in data["test"]]
    docs = all_sentences()
    np.random.default_rng(0).shuffle(docs)
    pool, unseen = docs[:POOL], docs[POOL:]
    with tempfile.TemporaryDirectory() as tmp:
        p = prepare(args.checkpoint, Path(tmp))
        rt, graph = p.runtime, p.graph
        names = sorted({t.input for t in quantize.targets(graph)})
        ref = {k: rt.logits(p.fp32, v) for k, v in (("confirm", p.confirm), ("held", held_out), ("unseen", unseen))}
        probs = softmax(rt.logits(p.fp32, pool))
        confident = [t for t, q in zip(pool, probs.max(axis=1), strict=True) if q >= CONFIDENT]

        def union(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
            return {k: quantize.Range(np.minimum(a[k].lo, b[k].lo), np.maximum(a[k].hi, b[k].hi)) for k in a}

        search = rt.ranges(graph, names, p.search)
        mine = rt.ranges(graph, names, data["calibration"])
        sure = rt.ranges(graph, names, confident)
        pools = {
            "built-in search split (the default)": search,
            f"docs sentences ({len(pool)})": rt.ranges(graph, names, pool),
            f"docs sentences fp32 calls with p >= {CONFIDENT} ({len(confident)})": sure,
            "search split + those": union(search, sure),
            f"in-domain calibration texts ({len(data['calibration'])})": mine,
            "search split + in-domain": union(search, mine),
        }
        rows = []
        for name, ranges in pools.items():
            for smooth in (False, True):
                candidate = quantize.rewrite(graph, (), ranges, smooth).SerializeToString()
                got = {k: rt.logits(candidate, v) for k, v in (("confirm", p.confirm), ("held", held_out))}
                got["unseen"] = rt.logits(candidate, unseen)
                (cc, ca), (hc, ha) = flips(ref["confirm"], got["confirm"]), flips(ref["held"], got["held"])
                (after, share), (_, docs_share) = (
                    cascade(ref["held"], got["held"]),
                    cascade(ref["unseen"], got["unseen"]),
                )
                row = (
                    f"| {name}{', smoothed' if smooth else ''} | {cc}/{int(quantize.counted(ref['confirm']).sum())} "
                    f"({ca}/{len(p.confirm)}) | {ha}/{len(held_out)} ({hc} clear) | {after}/{len(held_out)} "
                    f"({share:.1%}) | {docs_share:.1%} |"
                )
                print(row, flush=True)
                rows.append(row)
    lines = [
        f"`python -m experiments.calibration_pools {args.checkpoint} --task {args.task}`; {cpu_line()}",
        "",
        "| static ranges from | confirm split: clear flipped / clear (every decision) | held-out: every decision "
        f"flipped (clear) | held-out after the cascade at {RESCORE_MARGIN} (rows re-scored) | docs rows re-scored |",
        "|---|---|---|---|---|",
        *rows,
    ]
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
