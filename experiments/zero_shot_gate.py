"""The zero-shot ranking gate of NLI int8 exports, before and after: each tiny NLI test checkpoint
(tests/checkpoints.py, fixed seed) exported at int8 gated on pair top-1 only (--min-zero-shot-agreement 0, the
old gate) and with the zero-shot gate (the default), one Markdown row per model and gate from the manifests.

    .venv/bin/python -m experiments.zero_shot_gate
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NLI = ["bart-nli", "deberta-nli", "bert-nli"]


def main() -> int:
    sys.path[:0] = [str(ROOT / "tests")]
    import checkpoints

    from engine.export import export as export_models

    print(
        "| model | gate | pair top-1 | zero-shot top-1 (premises x label sets) | zero-shot max score diff | "
        "MatMuls kept fp32 |\n|---|---|---:|---:|---:|---:|"
    )
    with tempfile.TemporaryDirectory(prefix="zero-shot-gate-") as tmp:
        for name in NLI:
            ckpt = checkpoints.build(name, Path(tmp) / f"ckpt-{name}")
            for gate, bound in (("pair only (before)", 0.0), ("pair + zero-shot (after)", None)):
                kw = {} if bound is None else {"min_zero_shot_agreement": bound}
                out = Path(tmp) / f"{name}-{bound}"
                m = export_models.export(str(ckpt), out, "int8", log=lambda _msg: None, **kw)
                v, q = m["verification"], m["quantization"]
                n = v["int8_zero_shot_texts"] * len(v["int8_zero_shot_label_sets"])
                print(
                    f"| {name} | {gate} | {v['int8_top1_agreement']:.2%} | {v['int8_zero_shot_top1_agreement']:.2%} "
                    f"of {n} | {v['int8_zero_shot_max_score_diff']:.3f} | "
                    f"{len(q['kept_fp32'])}/{q['int8_matmuls'] + len(q['kept_fp32'])} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
