"""How much int8 the benchmark's NLI model can take before zero-shot rankings change: every MatMul static
(calibrated; plain, and after per-channel smoothing), and every MatMul per-token, against the fp32 export,
counted as the share of premises whose winning label stays fp32's. Label sets: the model's own topics (its first
4 and all 20, as the benchmark scores them) and the export gate's generic sets.

    python -m experiments.zero_shot_int8_forms [--cache DIR]

Premises: the export's calibration texts for the NLI model (never the benchmark's held-out texts). Needs the full
benchmark's cache (`python -m benchmarks` builds it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.run import DEFAULT_CACHE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE / "full-trained")
    args = parser.parse_args(argv)
    import onnx

    from engine.export import quantize
    from engine.export.verify import ZERO_SHOT_LABEL_SETS
    from experiments.int8_levers import cpu

    root = args.cache
    fp32_dir = root / "engine-fp32-nli"
    manifest = json.loads((fp32_dir / "manifest.json").read_text())
    data = json.loads((root / "data.json").read_text())
    topics, template = data["nli"]["topics"], data["nli"]["template"]
    premises = (root / "calibration-engine-int8-nli.txt").read_text(encoding="utf-8").splitlines()
    runtime = quantize.Runtime(
        (fp32_dir / "tokenizer.json").read_text(), manifest["max_length"], manifest["pad_token_id"], 2, nli=True
    )
    entail = manifest["entailment_id"]
    fp32 = onnx.load(str(fp32_dir / "model.onnx"))
    groups = [g for g in quantize.groups(fp32) if g[0] in quantize.targets(fp32)]
    calibration = [(p, template.format(t)) for p in premises for t in topics[:4]]
    ranges = runtime.ranges(fp32, [g[0].input for g in groups], calibration)
    label_sets = {"own 4 topics": topics[:4], "own 20 topics": topics}
    label_sets |= {f"gate set {i + 1}": list(s) for i, s in enumerate(ZERO_SHOT_LABEL_SETS)}

    def winners(graph: bytes, labels: list[str]) -> list[int]:
        grid = [(p, template.format(label)) for p in premises for label in labels]
        return runtime.logits(graph, grid)[:, entail].reshape(len(premises), -1).argmax(axis=1).tolist()

    reference = {name: winners(fp32.SerializeToString(), labels) for name, labels in label_sets.items()}
    print(cpu())
    print(f"\n{len(premises)} premises; share of fp32's winning labels kept\n")
    print("| int8 form | " + " | ".join(label_sets) + " |")
    print("|---|" + "---:|" * len(label_sets))
    forms = {
        "every MatMul static": quantize.rewrite(fp32, (), ranges),
        "every MatMul static, smoothed": quantize.rewrite(fp32, (), ranges, smooth=True),
        "every MatMul per-token": quantize.rewrite(fp32),
    }
    for name, graph in forms.items():
        data_bytes = graph.SerializeToString()
        kept = [
            sum(a == b for a, b in zip(winners(data_bytes, labels), reference[s])) / len(premises)
            for s, labels in label_sets.items()
        ]
        print(f"| {name} | " + " | ".join(f"{k:.1%}" for k in kept) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
