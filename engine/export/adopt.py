"""Adopt a ready-made ONNX export as an engine model directory: no torch, no transformers.

    engine adopt SOURCE --output DIR [--file onnx/model_quantized.onnx] [--requantize] [--revision REV]

SOURCE is a local directory or a Hugging Face Hub id (engine/export/sources.py). Two layouts are understood, with
config.json, tokenizer.json and tokenizer_config.json at the root:
- optimum: model.onnx (fp32), model_quantized.onnx at the root;
- transformers.js: onnx/model.onnx, onnx/model_quantized.onnx and the _int8, _uint8, _fp16, _q4, ... variants.

Without --file the fp32 model.onnx is adopted (several graphs and no model.onnx: refused, listing them). The graph
is checked as a load checks it (engine.model.onnx_scan), then verified through the engine's own run time on the
built-in texts: an 8-bit graph against its fp32 sibling, with the export's 99% top-1 gate; --requantize replaces
the published int8 by the engine's own (engine/export/pipeline.py, the export's sequence; needs the `adopt` extra:
onnx) and reports the published file beside it. The labels, window and NLI ids come from config.json with the
export's own rules (engine/export/describe.py), so an adopted directory and an exported one of the same weights
agree.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

from engine.errors import ExportError, ModelLoadError
from engine.export import pipeline, quantize, support
from engine.export.describe import Description, describe
from engine.export.sources import (
    FP32_GRAPH,
    PUBLISHED_INT8,
    VARIANTS,
    Source,
    choose,
    open_source,
    read_graph,
    read_json,
    sibling,
)
from engine.export.verify import (
    MIN_INT8_AGREEMENT,
    MIN_ZERO_SHOT_AGREEMENT,
    RESCORE_MARGIN,
    ZeroShotGrid,
    verification_inputs,
)
from engine.export.writer import tool_versions, write_directory
from engine.model.fileio import read_regular
from engine.model.manifest import FP32_REFERENCE_FILE, ModelInfo
from engine.model.onnx_scan import check_graph

REFUSAL = (
    "int8 kept {point:.2%} of the held-out decisions (lower bound {lower:.2%}) even with every search-split "
    "decision kept; adopt model.onnx without --requantize"
)


def adopt(
    source: str,
    output: Path,
    file: str | None = None,
    requantize: bool = False,
    revision: str | None = None,
    calibration_file: Path | None = None,
    min_agreement: float = MIN_INT8_AGREEMENT,
    log: Callable[[str], Any] = print,
    rescore_margin: float | None = None,
) -> dict[str, Any]:
    """Check, verify and write the model directory; returns the manifest. Raises ExportError on failure.
    `rescore_margin` (with `requantize`, a text classifier of two or more labels): keep the fp32 graph and re-score
    near-ties with it, as `engine export --rescore-near-ties` does."""
    if not 0.0 <= min_agreement <= 1.0:
        raise ExportError(f"--min-agreement must be between 0 and 1, got {min_agreement!r}")
    src = open_source(source, revision)
    chosen = choose(src.files, file)
    precision = VARIANTS.get(PurePosixPath(chosen).name, "unknown")
    if requantize and precision != "fp32":
        raise ExportError(f"--requantize starts from the fp32 graph (model.onnx), not {chosen}")
    if requantize and importlib.util.find_spec("onnx") is None:
        raise ExportError("--requantize rewrites the graph with onnx: pip install 'offline-textclf-engine[adopt]'")
    config = read_json(src, "config.json", required=True)
    if "tokenizer.json" not in src.files:
        raise ExportError(
            f"{src.name} has no tokenizer.json (the run time reads only that format); save the tokenizer with "
            "transformers' save_pretrained next to config.json, or use `engine export` on the checkpoint"
        )
    try:
        tokenizer_json = read_regular(src.fetch("tokenizer.json"))[0].decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"cannot read tokenizer.json of {src.name}: {exc}") from exc
    graph = read_graph(src, chosen)
    desc = describe(config, read_json(src, "tokenizer_config.json", required=False), tokenizer_json, graph)
    if (warning := support.untested(desc.model_type)) is not None:
        log(f"warning: {warning}")
    try:
        check_graph(graph, len(desc.labels), Path(chosen))
    except ModelLoadError as exc:
        raise ExportError(f"{chosen} is not a graph the engine can serve: {exc}") from None

    entail = desc.entailment_id
    items = verification_inputs(
        calibration_file, pairs=entail is not None or len(desc.labels) == 1, nli=entail is not None
    )
    runtime = quantize.Runtime(
        tokenizer_json, desc.max_length, desc.pad_id, len(desc.labels), entail is not None, desc.pooled_id
    )
    if not (requantize and entail is None and len(desc.labels) > 1):
        rescore_margin = None
    with tempfile.TemporaryDirectory(prefix="adopt-") as tmp:
        check = Verification(src, chosen, desc, config, items, runtime, Path(tmp), min_agreement, log, rescore_margin)
        final, precision, recipe, verification = check.run(graph, precision, requantize)
        info = ModelInfo(
            path=output,
            task="text-classification" if entail is None else "zero-shot-classification",
            model_type=desc.model_type,
            labels=desc.labels,
            problem_type=desc.problem_type,
            max_length=desc.max_length,
            pad_id=desc.pad_id,
            precision=precision,
            entailment_id=desc.entailment_id,
            contradiction_id=desc.contradiction_id,
            source=src.name,
            pooled_token_id=desc.pooled_id,
            rescore_margin=rescore_margin,
        )
        extra = {} if rescore_margin is None else {FP32_REFERENCE_FILE: (Path(tmp) / "fp32.onnx").read_bytes()}
        adopted = {"file": chosen, "revision": src.revision, "requantized": requantize}
        return write_directory(
            output,
            final,
            tokenizer_json,
            {
                **info.to_dict(),
                "source_revision": src.revision,
                "adopted": adopted,
                "quantization": recipe,
                "verification": verification,
                "tools": tool_versions(),
            },
            extra,
        )


@dataclass(frozen=True)
class Verification:
    """The checks of an adopted graph against its fp32 sibling, through the engine's own run time."""

    source: Source
    chosen: str
    desc: Description
    config: dict[str, Any]
    items: Sequence[quantize.Item]
    runtime: quantize.Runtime
    workdir: Path
    min_agreement: float
    log: Callable[[str], Any]
    rescore_margin: float | None = None

    def run(self, graph: bytes, precision: str, requantize: bool) -> tuple[bytes, str, dict[str, Any], dict[str, Any]]:
        """(graph to write, its precision, the quantization recipe, the verification figures)."""
        files, chosen, entail = self.source.files, self.chosen, self.desc.entailment_id
        recipe: dict[str, Any] = {"name": f"as published ({chosen})"}
        verification: dict[str, Any] = {"inputs": len(self.items)}
        fp32_rel = chosen if precision == "fp32" else sibling(files, chosen, [FP32_GRAPH])
        if fp32_rel is None:
            if self.min_agreement > 0:
                raise ExportError(
                    f"{chosen} has no fp32 model.onnx beside it to be verified against; "
                    "adopt it unverified with --min-agreement 0"
                )
            self.log(f"{chosen}: no fp32 graph to verify against; adopted unverified (--min-agreement 0)")
            return graph, precision, recipe, {**verification, "unverified": "no fp32 graph in the source"}
        fp32_path = self.workdir / "fp32.onnx"
        fp32_path.write_bytes(graph if fp32_rel == chosen else read_graph(self.source, fp32_rel))
        reference = self.runtime.logits(fp32_path.read_bytes(), self.items)
        verification["fp32_reference"] = fp32_rel
        if precision != "fp32":  # a published 8-bit (or other) graph: the export's gate
            verification.update(gated(self.measure(reference, graph, chosen), self.min_agreement))
            if entail is not None:
                (self.workdir / "chosen.onnx").write_bytes(graph)
                verification.update(self.zero_shot(fp32_path, self.workdir / "chosen.onnx", entail))
            return graph, precision, recipe, verification
        published = sibling(files, chosen, PUBLISHED_INT8)
        if published:  # what the published int8 file would have cost, beside the fp32 or requantized graph
            verification["published_int8"] = self.measure(reference, read_graph(self.source, published), published)
        if not requantize:
            return graph, precision, recipe, verification
        # the export's sequence (engine/export/pipeline.py), held to the published fp32 graph as export holds it
        # to torch; quantize.search reads only `problem_type` of the config, fusion its sizes and model type
        int8 = pipeline.Int8Gate(self.min_agreement, REFUSAL, entail, rescore_margin=self.rescore_margin)
        made = pipeline.make(
            fp32_path,
            reference,
            self.items,
            self.runtime,
            SimpleNamespace(**self.config),
            self.workdir,
            self.log,
            int8,
            reference=("the published fp32 graph", "published"),
        )
        return made.path.read_bytes(), "int8", made.recipe, {**verification, **made.verification}

    def measure(self, reference: Any, graph: bytes, name: str) -> dict[str, Any]:
        """Top-1 agreement and max score change of a graph against the fp32 logits."""
        try:
            check_graph(graph, len(self.desc.labels), Path(name))
        except ModelLoadError as exc:
            raise ExportError(f"{name} is not a graph the engine can serve: {exc}") from None
        logits = self.runtime.logits(graph, self.items)
        agreement, diff = quantize.compare(reference, logits, self.desc.problem_type)
        self.log(
            f"{name} vs fp32 on {len(self.items)} inputs: top-1 agreement {agreement:.2%}, max score diff {diff:.4f}"
        )
        return {"file": name, "top1_agreement": agreement, "max_score_diff": diff}

    def zero_shot(self, fp32_path: Path, int8_path: Path, entail: int) -> dict[str, Any]:
        """The zero-shot ranking figures of a published quantized NLI graph (reported beside the pair gate)."""
        grid = ZeroShotGrid(self.runtime, fp32_path, self.items, entail)
        return grid.figures(int8_path, MIN_ZERO_SHOT_AGREEMENT, self.log)


def gated(figures: dict[str, Any], min_agreement: float) -> dict[str, Any]:
    """The export's gate on an adopted quantized graph: refuse it below `min_agreement`."""
    if figures["top1_agreement"] < min_agreement:
        raise ExportError(
            f"{figures['file']} agrees with fp32 on {figures['top1_agreement']:.2%} of decisions, below the "
            f"{min_agreement:.0%} gate; adopt model.onnx, or make a better int8 with --requantize "
            "(or accept it with a lower --min-agreement)"
        )
    return {
        "int8_top1_agreement": figures["top1_agreement"],
        "int8_max_score_diff": figures["max_score_diff"],
        "int8_min_agreement": min_agreement,
    }


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="engine adopt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="an optimum or transformers.js export: a directory or a Hugging Face Hub id")
    parser.add_argument("--output", "-o", type=Path, required=True, help="model directory to write")
    parser.add_argument("--file", help="the graph to adopt, e.g. onnx/model_quantized.onnx (default: model.onnx)")
    parser.add_argument(
        "--requantize", action="store_true", help="replace the graph by the engine's own int8 of the fp32 graph"
    )
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit; default main)")
    parser.add_argument("--calibration-file", type=Path, help="verification texts, one per line")
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=MIN_INT8_AGREEMENT,
        help=f"gate on a quantized graph's top-1 agreement with fp32 (default {MIN_INT8_AGREEMENT}); 0 accepts "
        "a graph with no fp32 sibling unverified",
    )
    parser.add_argument(
        "--rescore-near-ties",
        type=float,
        default=RESCORE_MARGIN,
        metavar="MARGIN",
        help="with --requantize, a text classifier: keep the fp32 graph and re-score with it the rows whose int8 "
        f"margin is below MARGIN, as `engine export` does (default {RESCORE_MARGIN}); 0: int8 answers every row",
    )
    args = parser.parse_args(argv)
    if not 0.0 <= args.rescore_near_ties <= 1.0:
        parser.error(f"--rescore-near-ties must be between 0 and 1, got {args.rescore_near_ties!r}")
    try:
        manifest = adopt(
            args.source,
            args.output,
            args.file,
            args.requantize,
            args.revision,
            args.calibration_file,
            args.min_agreement,
            log=lambda msg: print(msg, file=sys.stderr),
            rescore_margin=args.rescore_near_ties or None,
        )
    except ExportError as exc:
        print(f"adopt failed: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({manifest['precision']}, from {manifest['adopted']['file']})")
    for line in summary(manifest["verification"]):
        print(line)
    return 0


def summary(v: dict[str, Any]) -> list[str]:
    """The verification figures, published and requantized int8 side by side when both exist."""
    rows = []
    if "published_int8" in v:
        p = v["published_int8"]
        rows.append((f"published {p['file']}", p["top1_agreement"], p["max_score_diff"]))
    if "int8_top1_agreement" in v:
        name = "requantized (engine recipe)" if "int8_recipes_tried" in v else "adopted int8"
        rows.append((name, v["int8_top1_agreement"], v["int8_max_score_diff"]))
    if not rows:
        return []
    lines = [f"{'int8 vs fp32':40s} {'top-1 agreement':>16s} {'max score diff':>15s}"]
    lines += [f"{name:40s} {agree:16.2%} {diff:15.4f}" for name, agree, diff in rows]
    return lines
