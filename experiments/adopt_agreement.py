"""Published-style int8 files against `engine adopt --requantize`: top-1 agreement with fp32 and max score change.

    python -m experiments.adopt_agreement [--models distilbert,bert,...] [--trained /work/cache/trained-minilm]

For each model: its fp32 graph is exported once (the project's export), laid out as a transformers.js repository
with int8 files made as those repositories make them (onnxruntime quantize_dynamic, per-tensor weights, no
reduce_range: QUInt8 weights in onnx/model_quantized.onnx, QInt8 in onnx/model_int8.onnx; tests/published.py),
then adopted three ways through `engine adopt` (no torch in that step): the published QUInt8 file, the published
QInt8 file, and --requantize (the engine's accuracy-aware per-token recipe, gate 99%). Every figure is measured by
adopt itself on the 240 built-in verification texts (pairs too for NLI and one-logit models) through the engine's
run time on this CPU: the published files' integer kernels differ by CPU (u8s8 saturates on AVX2 without VNNI),
so print the CPU flags beside the table. Models: the tests' tiny random checkpoints, the real MiniLM-L6 encoder
with a spread 3-way head, and (--trained) a fine-tuned checkpoint directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = "distilbert,bert,roberta,bert-single,bart-nli,deberta-nli,minilm-spread"


def cpu() -> str:
    from benchmarks.models import cpu_line

    return cpu_line()


def measure(name: str, checkpoint: Path, work: Path) -> dict[str, Any]:
    import published

    from engine.export import adopt, export

    def quiet(_msg: str) -> None:
        pass

    export.export(str(checkpoint), work / "fp32", "fp32", log=quiet)
    layout = published.transformers_js_layout(checkpoint, work / "fp32" / "model.onnx", work / "published")
    requantized = adopt.adopt(str(layout), work / "requantized", requantize=True, log=quiet)
    signed = adopt.adopt(str(layout), work / "int8", file="onnx/model_int8.onnx", min_agreement=0.0, log=quiet)
    v, s = requantized["verification"], signed["verification"]
    return {
        "model": name,
        "inputs": v["inputs"],
        "quint8": (v["published_int8"]["top1_agreement"], v["published_int8"]["max_score_diff"]),
        "qint8": (s["int8_top1_agreement"], s["int8_max_score_diff"]),
        "requantized": (v["int8_top1_agreement"], v["int8_max_score_diff"]),
        "matmuls": f"{requantized['quantization']['int8_matmuls']}/"
        f"{requantized['quantization']['int8_matmuls'] + len(requantized['quantization']['kept_fp32'])}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=DEFAULT_MODELS, help="tests/checkpoints.py names, and minilm-spread")
    parser.add_argument(
        "--trained", type=Path, help="also a fine-tuned checkpoint directory (e.g. a MiniLM classifier)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path[:0] = [str(ROOT / "tests")]
    import checkpoints

    print(f"CPU: {cpu()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="adopt-agreement-") as tmp:
        sources: list[tuple[str, Any]] = [(n, n) for n in args.models.split(",") if n]
        if args.trained:
            sources.append((args.trained.name, args.trained))
        for name, what in sources:
            work = Path(tmp) / name
            if isinstance(what, Path):
                ckpt = what
            elif what == "minilm-spread":
                ckpt = checkpoints.minilm_spread(work / "ckpt")
            else:
                ckpt = checkpoints.build(what, work / "ckpt")
            rows.append(measure(name, ckpt, work))
            print(f"done {name}", file=sys.stderr, flush=True)
    print()
    print(
        "| model | inputs | published QUInt8 (model_quantized) | published QInt8 (model_int8) | --requantize | "
        "int8 MatMuls (requantize) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [f"{a:.1%} ({d:.3f})" for a, d in (r["quint8"], r["qint8"], r["requantized"])]
        print(f"| {r['model']} | {r['inputs']} | {' | '.join(cells)} | {r['matmuls']} |")
    print("\ncells: top-1 agreement with fp32 (max score change under the model's default activation)")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
