"""`engine check MODEL --texts FILE`: does an int8 export keep fp32's decisions on your own texts? Torch-free.

The export's gate measures int8 on the built-in texts (engine/export/gate.py); a user's domain can move the
activation ranges its static scales were calibrated on. This runs both graphs of a model directory exported with
`--keep-fp32` (the int8 model.onnx and the verified fp32 reference beside it) through the engine's own run time on
the texts of FILE (one per line), and reports the top-1 agreement, its lower confidence bound (the gate's own,
one-sided Wilson 95%) and every text whose decision int8 changed. Exit 0 when the bound reaches --min-agreement,
1 when it does not (--recalibrate below, or re-export with `--calibration-file FILE`), 2 when the check cannot
run.

--recalibrate OUT writes a new model directory OUT whose int8 graph is made from MODEL's fp32 reference with
FILE's texts as its calibration and gate texts (`engine adopt --requantize`'s pipeline: no torch, the onnx of the
adopt extra), keeps that reference and records its provenance (`recalibrated_from` in its manifest). MODEL is
never changed; an existing non-empty OUT is refused. The texts of the gate's search split chose and calibrated
the new recipe, so they are not held out: the headline is the other texts (the gate's confirm split), MODEL and
OUT side by side; all texts are reported too, labelled. Exit 0 when OUT's held-out bound reaches
--min-agreement, 1 when it does not (OUT is still written when the gate passed on its point estimate: too few
texts for a bound), 2 when nothing was written (no reference, a zero-shot model, OUT taken, the gate failed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import EXIT_REFUSED, EngineError
from engine.export.gate import cascade
from engine.model.fileio import hash_regular, read_regular
from engine.model.manifest import (
    FP32_REFERENCE_DATA_FILE,
    FP32_REFERENCE_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    read,
)
from engine.runtime import batching
from engine.runtime.postprocess import activate, default_activation
from engine.runtime.session import OnnxSession
from engine.runtime.tokenization import Strategy, TextTokenizer, Truncation

CONFIDENCE = 0.95
MIN_AGREEMENT = 0.99


class CheckError(EngineError):
    """The check cannot run: no fp32 reference, unreadable texts, a mismatched file."""


@dataclass(frozen=True)
class Flip:
    index: int  # line of the texts (0-based, among the non-empty lines)
    text: str
    fp32: str
    int8: str
    fp32_score: float
    int8_score: float


@dataclass(frozen=True)
class Report:
    texts: int
    agreed: int
    agreement: float
    lower_bound: float
    confidence: float
    max_score_diff: float
    flips: tuple[Flip, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "texts": self.texts,
            "agreed": self.agreed,
            "top1_agreement": self.agreement,
            "lower_bound": self.lower_bound,
            "bound": f"Wilson score, one-sided {self.confidence:.0%}",
            "max_score_diff": self.max_score_diff,
            "flipped": [f.__dict__ for f in self.flips],
        }


def wilson_lower(agreed: int, n: int, confidence: float) -> float:
    """The gate's bound (engine/export/gate.py's lower_bound), here without importing the export package."""
    from math import sqrt
    from statistics import NormalDist

    if n <= 0:
        return 0.0
    z = NormalDist().inv_cdf(confidence)
    p = agreed / n
    spread = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (p + z * z / (2 * n) - spread) / (1 + z * z / n))


def reference_path(model_dir: Path) -> Path:
    """The fp32 graph kept beside the int8 one, its digest (and its weights file's) checked against the manifest."""
    manifest = json.loads(read_regular(model_dir / MANIFEST_FILE)[0])
    extras = manifest.get("extra_files") or {}
    if manifest.get("precision") != "int8":
        raise CheckError(f"{model_dir} is a {manifest.get('precision')} export: there is no int8 graph to check")
    if FP32_REFERENCE_FILE not in extras:
        raise CheckError(
            f"{model_dir} has no fp32 reference beside its int8 graph, and `engine check` runs without torch: "
            f"re-export it with `engine export SOURCE --output {model_dir} --keep-fp32`"
        )
    for rel in (FP32_REFERENCE_FILE, FP32_REFERENCE_DATA_FILE):
        if rel not in extras:  # the weights file: exports that keep one
            continue
        path = model_dir / rel
        try:
            digest = hash_regular(path)[0]
        except OSError as exc:
            raise CheckError(f"cannot read the fp32 reference {path}: {exc}; re-export with --keep-fp32") from exc
        if digest != extras[rel]:
            raise CheckError(f"{path} does not match the manifest's sha256; re-export with --keep-fp32")
    return model_dir / FP32_REFERENCE_FILE


def read_texts(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckError(f"cannot read texts from {path}: {exc}") from exc
    texts = [t.strip() for t in lines if t.strip()]
    if not texts:
        raise CheckError(f"{path} has no texts (one per line)")
    return texts


@dataclass(frozen=True)
class Comparison:
    """Both graphs' decisions and scores on every text; `report` measures any subset of them."""

    texts: tuple[str, ...]
    labels: tuple[str, ...]  # names of the decisions
    fp32_top: np.ndarray
    int8_top: np.ndarray
    fp32_scores: np.ndarray  # of each decision (the positive side's score for a one-logit model)
    int8_scores: np.ndarray
    score_diff: np.ndarray  # the largest score change of each text

    def report(self, indices: Sequence[int] | None = None, confidence: float = CONFIDENCE) -> Report:
        rows = np.arange(len(self.texts)) if indices is None else np.asarray(sorted(indices), dtype=np.int64)
        flipped = [int(i) for i in rows if self.fp32_top[i] != self.int8_top[i]]
        flips = tuple(
            Flip(
                i,
                self.texts[i],
                self.labels[int(self.fp32_top[i])],
                self.labels[int(self.int8_top[i])],
                float(self.fp32_scores[i]),
                float(self.int8_scores[i]),
            )
            for i in flipped
        )
        n = len(rows)
        agreed = n - len(flips)
        diff = float(self.score_diff[rows].max()) if n else 0.0
        return Report(n, agreed, agreed / n if n else 0.0, wilson_lower(agreed, n, confidence), confidence, diff, flips)


def compare(model_dir: str | Path, texts: Sequence[str]) -> Comparison:
    """Both graphs of `model_dir` on `texts`, through the engine's run time (rows batched as it batches them)."""
    model_dir = Path(model_dir)
    fp32 = reference_path(model_dir)
    manifest = read(model_dir)
    info = manifest.info
    if info.task != "text-classification":
        raise CheckError(f"{model_dir} is a {info.task} model; `engine check` measures text classifiers")
    tokenizer_json = read_regular(model_dir / TOKENIZER_FILE)[0].decode("utf-8")
    tokenizer = TextTokenizer(tokenizer_json, info.max_length, info.pad_id)
    encoded = tokenizer.encode(list(texts), Truncation(strategy=Strategy.LONGEST_FIRST))
    logits = []
    for graph in (fp32, model_dir / MODEL_FILE):
        session = OnnxSession(graph, info.num_labels)
        out = np.empty((len(texts), info.num_labels), dtype=np.float32)
        for batch in batching.batches(encoded, info.pad_id, pooled_id=info.pooled_token_id):
            out[batch.index] = session.run(batch)
        logits.append(out)
    logits[1] = cascade(logits[1], logits[0], info.rescore_margin)[0]  # what the run time answers
    act = default_activation(info.problem_type, info.num_labels)
    ref, got = (activate(x, act) for x in logits)
    if info.num_labels == 1:
        return Comparison(
            tuple(texts),
            ("negative", "positive"),
            (logits[0][:, 0] > 0).astype(np.int64),
            (logits[1][:, 0] > 0).astype(np.int64),
            ref[:, 0],
            got[:, 0],
            np.abs(ref - got).max(axis=1),
        )
    return Comparison(
        tuple(texts),
        info.labels,
        logits[0].argmax(axis=1),
        logits[1].argmax(axis=1),
        ref.max(axis=1),
        got.max(axis=1),
        np.abs(ref - got).max(axis=1),
    )


def check(model_dir: str | Path, texts: Sequence[str], confidence: float = CONFIDENCE) -> Report:
    """int8 against the fp32 reference of `model_dir` on every one of `texts`."""
    return compare(model_dir, texts).report(confidence=confidence)


def summary(report: Report, min_agreement: float) -> str:
    return (
        f"top-1 agreement {report.agreement:.2%} ({len(report.flips)} flipped), lower bound "
        f"{report.lower_bound:.2%} (Wilson, one-sided {report.confidence:.0%}; gate {min_agreement:.0%}), "
        f"max score diff {report.max_score_diff:.4f}"
    )


def flip_line(f: Flip, note: str = "") -> str:
    scores = f"fp32 {f.fp32} ({f.fp32_score:.3f}) -> int8 {f.int8} ({f.int8_score:.3f})"
    return f"  line {f.index + 1}{note}: {scores}: {f.text}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="engine check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir", type=Path, help="an int8 export written with --keep-fp32")
    parser.add_argument("--texts", type=Path, required=True, help="your texts, one per line")
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=MIN_AGREEMENT,
        help="bound the lower bound must reach (and the gate of --recalibrate)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--show", type=int, default=20, help="flipped texts to print (default 20; --json: all)")
    parser.add_argument(
        "--recalibrate",
        type=Path,
        metavar="OUT",
        help="write a new model directory OUT, int8 re-made from MODEL's fp32 reference calibrated and gated on "
        "the texts (MODEL is not changed), and check it on the held-out ones",
    )
    args = parser.parse_args(argv)
    if args.recalibrate is not None:
        return main_recalibrate(args)
    try:
        report = check(args.model_dir, read_texts(args.texts))
    except EngineError as exc:
        print(f"check failed: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    ok = report.lower_bound >= args.min_agreement
    if args.json:
        print(json.dumps({**report.to_dict(), "min_agreement": args.min_agreement, "passed": ok}, ensure_ascii=False))
    else:
        print(f"int8 vs fp32 on {report.texts} texts: {summary(report, args.min_agreement)}")
        for f in report.flips[: args.show]:
            print(flip_line(f))
        if not ok:
            print(
                f"below the gate: `engine check {args.model_dir} --texts {args.texts} --recalibrate NEW_DIR` makes "
                "an int8 calibrated on texts like these (or re-export with `--calibration-file`)"
            )
    return 0 if ok else 1


def main_recalibrate(args: argparse.Namespace) -> int:
    """Recalibrate into OUT, then MODEL and OUT side by side on the held-out texts (the headline) and on all."""
    try:
        from engine.export.recalibrate import recalibrate  # the export package: onnx for the int8 rewrite

        texts = read_texts(args.texts)
        done = recalibrate(
            args.model_dir,
            args.texts,
            args.recalibrate,
            args.min_agreement,
            log=lambda msg: print(msg, file=sys.stderr),
        )
        before, after = compare(args.model_dir, texts), compare(done.output, texts)
    except ModuleNotFoundError as exc:
        print(
            f"check failed: --recalibrate needs the adopt extra (missing module {exc.name!r}): "
            "pip install 'offline-textclf-engine[adopt]'",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    except EngineError as exc:
        print(f"check failed, nothing written: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    held = [i for i, t in enumerate(texts) if t not in done.seen_texts]
    reports = {
        "held_out": {"before": before.report(held), "after": after.report(held)},
        "all_texts": {"before": before.report(), "after": after.report()},
    }
    headline = reports["held_out"]["after"]
    ok = headline.texts > 0 and headline.lower_bound >= args.min_agreement
    provenance = done.manifest["recalibrated_from"]
    v = done.manifest["verification"]
    if args.json:
        out = {
            "output": str(done.output),
            "recalibrated_from": provenance,
            "quantization": done.manifest["quantization"].get("name"),
            "gate": {k: v.get(k) for k in ("int8_confirm_top1_agreement", "int8_confirm_lower_bound", "int8_gate")},
            **{k: {side: r.to_dict() for side, r in pair.items()} for k, pair in reports.items()},
            "min_agreement": args.min_agreement,
            "passed": ok,
        }
        print(json.dumps(out, ensure_ascii=False))
        return 0 if ok else 1
    n, m = len(texts), headline.texts
    print(
        f"wrote {done.output}: int8 recalibrated from {args.model_dir}'s fp32 reference on {args.texts} ({n} texts), "
        f"recipe: {done.manifest['quantization'].get('name')}"
    )
    print(
        f"held out: {m} of the {n} texts, which neither the recipe search nor its calibration saw (the gate's "
        "confirm split)"
    )
    for side, name in (("before", args.model_dir), ("after", done.output)):
        print(f"  {name}: {summary(reports['held_out'][side], args.min_agreement)}")
    print(f"all {n} texts, not held out ({n - m} of them chose and calibrated the new recipe):")
    for side, name in (("before", args.model_dir), ("after", done.output)):
        print(f"  {name}: {summary(reports['all_texts'][side], args.min_agreement)}")
    held_set = set(held)
    flips = reports["all_texts"]["after"].flips
    if flips:
        print(f"flipped by {done.output}:")
    for f in flips[: args.show]:
        print(flip_line(f, " (held out)" if f.index in held_set else " (search split)"))
    if not ok:
        print(
            f"below the gate on the held-out texts: {m} of them cannot show {args.min_agreement:.0%} as a lower "
            f"bound (at most {wilson_lower(m, m, headline.confidence):.2%} with no flip); {done.output} was written "
            "because the gate then decides on the point estimate: check it with more texts"
            if wilson_lower(m, m, headline.confidence) < args.min_agreement
            else f"below the gate on the held-out texts: {done.output} keeps fewer decisions than asked"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
