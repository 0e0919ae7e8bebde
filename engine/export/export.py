"""Export a Hugging Face sequence classifier to a self-contained, verified ONNX model directory.

    engine export SOURCE --output DIR [--precision int8|fp32] [--calibration-file F] [--zero-shot-labels A,B,...]
    engine export --list

SOURCE is a short alias (see --list), a Cloudflare model id, a Hugging Face model id, or a local checkpoint
directory. Steps: load the checkpoint and export its fp32 graph (checkpoint.py), describe it (describe.py), then
the model-making sequence shared with `engine adopt --requantize` (pipeline.py: fuse, check fp32 against torch,
int8 recipe search and held-out gate, prune), checked on the verification texts (verify.py), and write the
directory atomically (writer.py).

Needs the export extra: pip install "offline-textclf-engine[export]" (transformers 5; `[export-transformers4]` for
4.57 with optimum).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import ExportError
from engine.export import pipeline, quantize, support
from engine.export.checkpoint import export_fp32, load_checkpoint, resolve, torch_logits
from engine.export.describe import EOS_POOLED_MODELS, nli_ids, window
from engine.export.verify import (
    MIN_INT8_AGREEMENT,
    MIN_ZERO_SHOT_AGREEMENT,
    RESCORE_MARGIN,
    check_label_sets,
    verification_inputs,
)
from engine.export.writer import tool_versions, write_directory
from engine.model.aliases import ALIASES
from engine.model.manifest import FP32_REFERENCE_FILE, ModelInfo

REFUSAL = (
    "int8 kept {point:.2%} of the held-out decisions (lower bound {lower:.2%}) even with every search-split "
    "decision kept; export with --precision fp32, or --calibration-file with your texts"
)


def export(
    source: str,
    output: Path,
    precision: str = "int8",
    calibration_file: Path | None = None,
    log: Any = print,
    min_agreement: float = MIN_INT8_AGREEMENT,
    min_zero_shot_agreement: float = MIN_ZERO_SHOT_AGREEMENT,
    zero_shot_labels: Sequence[Sequence[str]] | None = None,
    keep_fp32: bool = False,
    rescore_near_ties: float = RESCORE_MARGIN,
) -> dict[str, Any]:
    """Export, verify, and write the model directory; returns the manifest. Raises ExportError on failure.

    `min_agreement` is the int8 gate (top-1 agreement with fp32); lowering it trades decisions for speed, and
    the manifest records the bound used. NLI models are also gated on zero-shot top-1 agreement (the winning label
    of each premise x label set) reaching `min_zero_shot_agreement` (0 turns that gate off). `zero_shot_labels`
    replaces the gate's generic label sets with the ones the model will rank (at least two labels each), so
    the gate holds int8 to the decisions its users will see. `keep_fp32` writes the verified fp32 graph beside
    an int8 one (FP32_REFERENCE_FILE, recorded in the manifest), the reference `engine check` needs.
    `rescore_near_ties`: an int8 text classifier of two or more labels keeps that graph and re-scores with it the
    rows whose int8 margin is below this (engine.runtime.loaded; 0: the int8 graph answers every row alone)."""
    for name, bound in (
        ("--min-agreement", min_agreement),
        ("--min-zero-shot-agreement", min_zero_shot_agreement),
        ("--rescore-near-ties", rescore_near_ties),
    ):
        if not 0.0 <= bound <= 1.0:
            raise ExportError(f"{name} must be between 0 and 1, got {bound!r}")
    label_sets = check_label_sets(zero_shot_labels)
    hub_id, alias = resolve(source)
    if alias and alias.precision:
        precision = alias.precision
    if precision not in ("int8", "fp32"):
        raise ExportError(f"--precision must be int8 or fp32, got {precision!r}")
    config, tokenizer, model = load_checkpoint(hub_id)
    if (warning := support.untested(config.model_type)) is not None:
        log(f"warning: {warning}")
    max_length = window(
        config.model_type,
        getattr(config, "max_position_embeddings", None),
        config.pad_token_id,
        tokenizer.model_max_length,
    )
    entail, contra = nli_ids(config.label2id, config.num_labels)
    if zero_shot_labels is not None and entail is None:
        raise ExportError("--zero-shot-labels is for NLI models (entailment/contradiction labels); this one is not")
    pairs = bool(alias and alias.pairs) or entail is not None
    items = verification_inputs(calibration_file, pairs, nli=entail is not None)
    labels = tuple(config.id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (config.pad_token_id or 0)
    pooled_id = int(config.eos_token_id) if config.model_type in EOS_POOLED_MODELS else None
    cascade = precision == "int8" and entail is None and config.num_labels > 1 and rescore_near_ties > 0
    rescore_margin = rescore_near_ties if cascade else None
    int8 = pipeline.Int8Gate(min_agreement, REFUSAL, entail, label_sets, min_zero_shot_agreement, rescore_margin)

    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        workdir = Path(tmp)
        tokenizer.save_pretrained(workdir / "tok")
        tokenizer_json = (workdir / "tok" / "tokenizer.json").read_text(encoding="utf-8")
        fp32_path = export_fp32(model, workdir)
        runtime = quantize.Runtime(
            tokenizer_json, max_length, pad_id, config.num_labels, nli=entail is not None, pooled_id=pooled_id
        )
        reference = torch_logits(model, tokenizer, items, max_length)
        made = pipeline.make(
            fp32_path, reference, items, runtime, config, workdir, log, int8 if precision == "int8" else None
        )
        info = ModelInfo(
            path=output,
            task="zero-shot-classification" if entail is not None else "text-classification",
            model_type=config.model_type,
            labels=labels,
            problem_type=getattr(config, "problem_type", None),
            max_length=max_length,
            pad_id=int(pad_id),
            precision=precision,
            entailment_id=entail,
            contradiction_id=contra,
            source=hub_id,
            pooled_token_id=pooled_id,
            rescore_margin=rescore_margin,
        )
        keep = (keep_fp32 or cascade) and precision == "int8"
        extra = {FP32_REFERENCE_FILE: made.fp32_path.read_bytes()} if keep else {}
        manifest = write_directory(
            output,
            made.path.read_bytes(),
            tokenizer_json,
            {
                **info.to_dict(),
                "quantization": made.recipe,
                "verification": made.verification,
                "tools": tool_versions(),
            },
            extra,
        )
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="engine export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", nargs="?", help="alias, Cloudflare id, Hugging Face id or local checkpoint dir")
    parser.add_argument("--output", "-o", type=Path, help="model directory to write")
    parser.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    parser.add_argument("--calibration-file", type=Path, help="verification texts, one per line")
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=MIN_INT8_AGREEMENT,
        help=f"int8 gate: top-1 agreement with fp32 on the verification texts (default {MIN_INT8_AGREEMENT}); "
        "MatMuls stay fp32 until it holds. 0 quantizes every MatMul whatever it costs",
    )
    parser.add_argument(
        "--min-zero-shot-agreement",
        type=float,
        default=MIN_ZERO_SHOT_AGREEMENT,
        help="int8 gate of NLI models: zero-shot top-1 agreement with fp32 (the winning label of each verification "
        f"premise x label set; default {MIN_ZERO_SHOT_AGREEMENT}); 0 gates on pair top-1 only",
    )
    parser.add_argument(
        "--zero-shot-labels",
        action="append",
        metavar="A,B,...",
        help="NLI models: a comma-separated label set the model will rank, checked by the zero-shot gate instead of "
        "its generic sets (repeat for several sets; hypotheses use 'This example is {}.')",
    )
    parser.add_argument(
        "--keep-fp32",
        action="store_true",
        help=f"int8: also write the verified fp32 graph ({FP32_REFERENCE_FILE}), so that `engine check DIR --texts F` "
        "can measure int8 against it on your own texts, torch-free (kept anyway while near-ties are re-scored)",
    )
    parser.add_argument(
        "--rescore-near-ties",
        type=float,
        default=RESCORE_MARGIN,
        metavar="MARGIN",
        help="int8 text classifiers: keep the verified fp32 graph and re-score with it the rows whose int8 margin "
        f"(top-1 minus top-2 probability) is below MARGIN (default {RESCORE_MARGIN}); the gate measures that "
        "output. 0: the int8 graph answers every row (no fp32 graph on disk or in memory)",
    )
    parser.add_argument("--list", action="store_true", help="show the known aliases")
    args = parser.parse_args(argv)
    if args.list:
        for name, alias in ALIASES.items():
            extra = f" (precision {alias.precision})" if alias.precision else ""
            print(f"{name:40s} {alias.hub_id}{extra}")
        return 0
    if not args.source or not args.output:
        parser.error("SOURCE and --output are required (or --list)")
    try:
        manifest = export(
            args.source,
            args.output,
            args.precision,
            args.calibration_file,
            min_agreement=args.min_agreement,
            min_zero_shot_agreement=args.min_zero_shot_agreement,
            zero_shot_labels=None if args.zero_shot_labels is None else [s.split(",") for s in args.zero_shot_labels],
            keep_fp32=args.keep_fp32,
            rescore_near_ties=args.rescore_near_ties,
        )
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    v = manifest["verification"]
    print(f"wrote {args.output} ({manifest['precision']}, recipe: {manifest['quantization']['name']})")
    if "int8_top1_agreement" in v:
        print(
            f"int8 vs fp32: top-1 agreement {v['int8_top1_agreement']:.2%} on the search split "
            f"({v['int8_gate']['search_inputs']} inputs), {v['int8_confirm_top1_agreement']:.2%} on the held-out "
            f"confirm split ({v['int8_gate']['confirm_inputs']}; lower bound {v['int8_confirm_lower_bound']:.2%}, "
            f"{v['int8_gate']['bound']}), max score diff {v['int8_max_score_diff']:.4f}"
        )
    if manifest.get("rescore_margin") is not None:
        print(
            f"near-ties (int8 margin < {manifest['rescore_margin']}) are re-scored by the fp32 graph kept beside: "
            f"{v['int8_gate']['confirm_rescored_in_fp32']} of the confirm split's {v['int8_gate']['confirm_inputs']}"
        )
    if "int8_zero_shot_top1_agreement" in v:
        print(
            f"int8 vs fp32 zero-shot ranking: top-1 agreement {v['int8_zero_shot_top1_agreement']:.2%}, "
            f"max score diff {v['int8_zero_shot_max_score_diff']:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
