"""Could a weight-only int8 graph re-score the near-ties instead of the fp32 one? Decisions, speed and memory.

    python -m experiments.weight_only_reference EXPORT_DIR --model minilm [--rounds 5] [--out FILE.md]

EXPORT_DIR: a default int8 export with its fp32 reference (the harness's are
~/.cache/offline-textclf-engine/benchmarks/full-trained/engine-int8-<model>). The cascade's cost out of a
model's domain is the fp32 graph: a fifth to a third of the rows re-scored at fp32 speed, and its weights held
beside the int8 graph's (experiments/results/margin_or_per_token.md). A weight-only int8 graph keeps fp32
activations (so no activation scale can clip) and stores each MatMul's weights 8-bit in blocks of 32 with their
own scale (onnxruntime's MatMulNBits, fp32 compute; `onnxruntime.quantization.matmul_nbits_quantizer`), and the
embedding tables the same way (GatherBlockQuantized). Measured here, on the built-in confirm split (generic),
the docs sentences (out of domain) and the model's held-out texts (own domain):

1. decisions: the weight-only graph alone against the fp32 reference, and the cascade (int8, near-ties below the
   export's margin re-scored by each) against the fp32 reference;
2. speed of each re-scorer on the docs rows the cascade sends it, batched as the engine batches, alternating;
3. peak RSS of a fresh process holding the int8 graph and the re-scorer and running the docs through the cascade.

Not a format: the gate would have to confirm the weight-only cascade, and ARM64 would need checking.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

CACHE = Path.home() / ".cache" / "offline-textclf-engine" / "benchmarks" / "full-trained"
RESCORERS = ("fp32 reference", "weight-only int8")


def weight_only(export: Path) -> Path:
    """The export's fp32 reference with MatMul weights and embedding tables 8-bit per block of 32 (cached)."""
    out = CACHE.parent / "weight-only" / export.name / "model.w8.onnx"
    if out.exists():
        return out
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from engine.export.quantize.rewrite import rewrite
    from engine.export.quantize.scheme import embedding_targets, targets
    from engine.model.manifest import FP32_REFERENCE_FILE

    model = onnx.load(str(export / FP32_REFERENCE_FILE))
    # the engine's own 8-bit embedding tables (GatherBlockQuantized), every MatMul left fp32 for the next step
    tables = tuple(dict.fromkeys(t.weight for t in embedding_targets(model)))
    model = rewrite(model, tuple(t.node for t in targets(model)), {}, False, tables)
    config = DefaultWeightOnlyQuantConfig(
        block_size=32,
        is_symmetric=True,
        accuracy_level=0,
        bits=8,
        op_types_to_quantize=("MatMul",),
        quant_axes=(("MatMul", 0),),
    )
    quantizer = MatMulNBitsQuantizer(model, bits=8, block_size=32, is_symmetric=True, algo_config=config)
    quantizer.process()
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(quantizer.model.model, str(out), save_as_external_data=True, location="model.w8.onnx.data")
    return out


def decisions(export: Path, w8: Path, model: str) -> list[str]:
    from engine.export import gate
    from engine.model.manifest import FP32_REFERENCE_FILE, MODEL_FILE, read
    from experiments.cascade_criterion import graph_logits
    from experiments.margin_or_per_token import sets

    margin = read(export).info.rescore_margin or 0.2
    lines = [
        f"| texts | weight-only alone: flips, max logit diff | cascade at {margin}, fp32 re-scorer: flips "
        "| cascade, weight-only re-scorer: flips | re-scored |",
        "|---|---|---|---|---:|",
    ]
    for name, texts in sets(model).items():
        graphs = (export / FP32_REFERENCE_FILE, export / MODEL_FILE, w8)
        fp32, int8, w = (graph_logits(export, g, texts) for g in graphs)
        (by_fp32, rescored), (by_w8, _) = gate.cascade(int8, fp32, margin), gate.cascade(int8, w, margin)
        truth = fp32.argmax(1)
        flips = [int((x.argmax(1) != truth).sum()) for x in (w, by_fp32, by_w8)]
        lines.append(
            f"| {name} ({len(texts)}) | {flips[0]}, {np.abs(w - fp32).max():.1e} | {flips[1]} | {flips[2]} "
            f"| {rescored / len(texts):.1%} |"
        )
    return lines


def child(export: Path, rescorer: str) -> dict[str, float]:
    """In a fresh process: the docs through the cascade with `rescorer`; sentences/s of the re-scoring alone
    (median of 3) and the process's peak RSS."""
    from benchmarks import corpus
    from engine import TextClassifier
    from engine.runtime.postprocess import margins
    from engine.runtime.session import OnnxSession
    from engine.runtime.tokenization import Strategy, Truncation

    clf = TextClassifier.load(export)
    near_ties = clf.model.near_ties
    assert near_ties is not None
    if rescorer == RESCORERS[1]:
        near_ties._session = OnnxSession(weight_only(export), clf.model.info.num_labels, spinning=False)
    texts = corpus.sample(512)
    encoded = clf.model.tokenizer.encode(texts, Truncation(strategy=Strategy.LONGEST_FIRST))
    clf.model.logits(encoded)  # the cascade, as a user runs it: loads the re-scorer on the first near-tie
    object.__setattr__(clf.model, "near_ties", None)
    int8 = clf.model.logits(encoded)  # the int8 graph alone: which rows the cascade sent to the re-scorer
    near = np.flatnonzero(margins(int8) < near_ties.margin)
    rows = [encoded[i] for i in near.tolist()]
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        near_ties.rescore(np.zeros((len(rows), clf.model.info.num_labels), np.float32), rows, clf.model.batch_tokens)
        rates.append(len(rows) / (time.perf_counter() - start))
    peak = Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]
    return {"rows_per_s": statistics.median(rates), "rows": len(rows), "peak_mb": int(peak) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "weight_only_reference.md")
    parser.add_argument("--variant", choices=RESCORERS, help=argparse.SUPPRESS)  # the child's own run
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(child(args.export, args.variant)))
        return
    from benchmarks.models import cpu_line
    from experiments.cascade_overhead import alternating

    w8 = weight_only(args.export)
    sizes = {
        RESCORERS[0]: sum(p.stat().st_size for p in (args.export / "reference").iterdir()),
        RESCORERS[1]: sum(p.stat().st_size for p in w8.parent.iterdir()),
    }
    runs = alternating("experiments.weight_only_reference", RESCORERS, args.rounds, [str(args.export)])
    lines = [
        f"# A weight-only int8 re-scorer: {args.export.name}",
        "",
        f"`python -m experiments.weight_only_reference {args.export.name} --model {args.model} --rounds "
        f"{args.rounds}`; CPU: {cpu_line()}.",
        "",
        "## Decisions against the fp32 reference",
        "",
        *decisions(args.export, w8, args.model),
        "",
        "## Re-scoring the docs' near-ties (fresh process per run, alternating)",
        "",
        "| re-scorer | on disk | rows/s (median) | ratio to fp32, paired | process peak RSS |",
        "|---|---:|---:|---:|---:|",
    ]
    base = runs[RESCORERS[0]]
    for rescorer, got in runs.items():
        ratio = statistics.median(r["rows_per_s"] / b["rows_per_s"] for r, b in zip(got, base))
        lines.append(
            f"| {rescorer} ({got[0]['rows']} rows) | {sizes[rescorer] / 2**20:.0f} MB | "
            f"{statistics.median(r['rows_per_s'] for r in got):.0f} | {ratio:.2f} | "
            f"{statistics.median(r['peak_mb'] for r in got):.0f} MB |"
        )
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
