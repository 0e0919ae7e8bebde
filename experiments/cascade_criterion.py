"""Which rows the near-tie cascade should re-score: by the int8 probability margin (what the engine does) or by the
int8 logit margin (top-1 minus top-2 logit).

    python -m experiments.cascade_criterion EXPORT_DIR --model minilm [--out FILE.md]

EXPORT_DIR: an int8 export that keeps its fp32 reference (the default `engine export`; the harness's are
~/.cache/offline-textclf-engine/benchmarks/full-trained/engine-int8-<model>). The probability margin shrinks when
a model spreads its probability over many labels, as it does out of its domain, although the logit gap an int8
error must cross to flip the decision is unchanged; the logit margin measures that gap directly. For each
criterion and threshold: decisions still flipped after the cascade, and the share of rows re-scored, on three
sets of texts: the export's built-in verification texts (generic, what the gate sees), the harness's timing
corpus (512 CPython-docs sentences, out of domain) and the model's held-out texts (its own domain, from the
harness's data.json). Both graphs run through the engine's run time, batched as it batches. Results:
experiments/results/cascade_criterion.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks import corpus, models
from benchmarks.models import cpu_line
from engine.export.verify import verification_inputs
from engine.model.manifest import FP32_REFERENCE_FILE, MODEL_FILE, read
from engine.runtime import batching
from engine.runtime.postprocess import margins
from engine.runtime.session import OnnxSession
from engine.runtime.tokenization import Strategy, TextTokenizer, Truncation

DATA = Path.home() / ".cache" / "offline-textclf-engine" / "benchmarks" / "full-trained" / "data.json"
PROBABILITY = (0.05, 0.1, 0.2)
LOGIT = (0.25, 0.5, 0.75, 1.0, 1.5)


def graph_logits(export: Path, graph: Path, texts: list[str]) -> np.ndarray:
    """The logits of `texts` by one graph of `export` alone (no cascade), batched as the engine batches."""
    info = read(export).info
    tokenizer = TextTokenizer((export / "tokenizer.json").read_text("utf-8"), info.max_length, info.pad_id)
    encoded = tokenizer.encode(texts, Truncation(strategy=Strategy.LONGEST_FIRST))
    session = OnnxSession(graph, info.num_labels)
    x = np.empty((len(texts), info.num_labels), dtype=np.float32)
    for batch in batching.batches(encoded, info.pad_id, pooled_id=info.pooled_token_id):
        x[batch.index] = session.run(batch)
    return x


def logits(export: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(fp32, int8) logits of `texts`, each graph alone (no cascade)."""
    fp32, int8 = (graph_logits(export, export / g, texts) for g in (FP32_REFERENCE_FILE, MODEL_FILE))
    return fp32, int8


def logit_margins(x: np.ndarray) -> np.ndarray:
    top = np.sort(x.astype(np.float64), axis=1)
    return np.asarray(top[:, -1] - top[:, -2])


def row(fp32: np.ndarray, int8: np.ndarray, near: np.ndarray) -> str:
    answered = np.where(near[:, None], fp32, int8)
    flips = int((answered.argmax(1) != fp32.argmax(1)).sum())
    return f"{flips}/{len(fp32)} ({near.mean():.1%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path)
    parser.add_argument("--model", choices=models.FIDELITY_MODELS, required=True, help="whose held-out texts")
    parser.add_argument("--data", type=Path, default=DATA, help="the harness's data.json")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    data = json.loads(args.data.read_text("utf-8"))
    sets = {
        "built-in (generic)": [str(t) for t in verification_inputs(None, pairs=False, nli=False)],
        "timing corpus (docs)": corpus.sample(512),
        "held-out (own domain)": [t for t, _ in models.held_out(data, args.model)],
    }
    computed = {name: logits(args.export, list(texts)) for name, texts in sets.items()}
    flips = {name: int((i.argmax(1) != f.argmax(1)).sum()) for name, (f, i) in computed.items()}
    lines = [
        f"`python -m experiments.cascade_criterion {args.export.name} --model {args.model}`; CPU: {cpu_line()}" + ".",
        "",
        "Decisions flipped after the cascade / texts (share of rows re-scored in fp32). int8 alone flips: "
        + "; ".join(f"{name} {n}/{len(computed[name][0])}" for name, n in flips.items())
        + ".",
        "",
        "| re-score rows whose int8 ... | " + " | ".join(sets) + " |",
        "|---|" + "---|" * len(sets),
    ]
    for name, measure, thresholds in (
        ("probability margin", margins, PROBABILITY),
        ("logit margin", logit_margins, LOGIT),
    ):
        for t in thresholds:
            cells = [row(f, i, measure(i) < t) for f, i in computed.values()]
            lines.append(f"| {name} < {t} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
