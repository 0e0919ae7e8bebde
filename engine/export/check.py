"""`engine check MODEL --texts FILE`: does an int8 export keep fp32's decisions on your own texts? Torch-free.

The export's gate measures int8 on the built-in texts (engine/export/gate.py); a user's domain can move the
activation ranges its static scales were calibrated on. This runs both graphs of a model directory exported with
`--keep-fp32` (the int8 model.onnx and the verified fp32 reference beside it) through the engine's own run time on
the texts of FILE (one per line), and reports the top-1 agreement, its lower confidence bound (the gate's own,
one-sided Wilson 95%) and every text whose decision int8 changed. Exit 0 when the bound reaches --min-agreement,
1 when it does not (re-export with `--calibration-file FILE`), 2 when the check cannot run.
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

from engine.errors import EngineError
from engine.model.fileio import read_regular, sha256_hex
from engine.model.manifest import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE, read
from engine.runtime import batching
from engine.runtime.postprocess import activate, default_activation
from engine.runtime.session import OnnxSession
from engine.runtime.tokenization import Strategy, TextTokenizer, Truncation

FP32_REFERENCE_KEY = "reference/model.fp32.onnx"  # engine.export.export.FP32_REFERENCE (that module needs onnx)
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
    """The fp32 graph kept beside the int8 one, its digest checked against the manifest."""
    manifest = json.loads(read_regular(model_dir / MANIFEST_FILE)[0])
    extras = manifest.get("extra_files") or {}
    if manifest.get("precision") != "int8":
        raise CheckError(f"{model_dir} is a {manifest.get('precision')} export: there is no int8 graph to check")
    if FP32_REFERENCE_KEY not in extras:
        raise CheckError(
            f"{model_dir} has no fp32 reference beside its int8 graph, and `engine check` runs without torch: "
            f"re-export it with `engine export SOURCE --output {model_dir} --keep-fp32`"
        )
    path = model_dir / FP32_REFERENCE_KEY
    try:
        digest = sha256_hex(read_regular(path)[0])
    except OSError as exc:
        raise CheckError(f"cannot read the fp32 reference {path}: {exc}; re-export with --keep-fp32") from exc
    if digest != extras[FP32_REFERENCE_KEY]:
        raise CheckError(f"{path} does not match the manifest's sha256; re-export with --keep-fp32")
    return path


def read_texts(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckError(f"cannot read texts from {path}: {exc}") from exc
    texts = [t.strip() for t in lines if t.strip()]
    if not texts:
        raise CheckError(f"{path} has no texts (one per line)")
    return texts


def check(model_dir: str | Path, texts: Sequence[str], confidence: float = CONFIDENCE) -> Report:
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
    act = default_activation(info.problem_type, info.num_labels)
    ref, got = (activate(x, act) for x in logits)
    one = info.num_labels == 1
    top_ref = (logits[0][:, 0] > 0) if one else logits[0].argmax(axis=1)
    top_got = (logits[1][:, 0] > 0) if one else logits[1].argmax(axis=1)
    names = ("negative", "positive") if one else info.labels
    flips = tuple(
        Flip(
            int(i),
            texts[int(i)],
            names[int(top_ref[i])],
            names[int(top_got[i])],
            float(ref[i].max() if not one else ref[i, 0]),
            float(got[i].max() if not one else got[i, 0]),
        )
        for i in np.flatnonzero(top_ref != top_got)
    )
    n, agreed = len(texts), len(texts) - len(flips)
    return Report(
        n,
        agreed,
        agreed / n,
        wilson_lower(agreed, n, confidence),
        confidence,
        float(np.abs(ref - got).max()),
        flips,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="engine check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir", type=Path, help="an int8 export written with --keep-fp32")
    parser.add_argument("--texts", type=Path, required=True, help="your texts, one per line")
    parser.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT, help="bound the lower bound must reach")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--show", type=int, default=20, help="flipped texts to print (default 20; --json: all)")
    args = parser.parse_args(argv)
    try:
        report = check(args.model_dir, read_texts(args.texts))
    except EngineError as exc:
        print(f"check failed: {exc}", file=sys.stderr)
        return 2
    ok = report.lower_bound >= args.min_agreement
    if args.json:
        print(json.dumps({**report.to_dict(), "min_agreement": args.min_agreement, "passed": ok}, ensure_ascii=False))
    else:
        print(
            f"int8 vs fp32 on {report.texts} texts: top-1 agreement {report.agreement:.2%} "
            f"({len(report.flips)} flipped), lower bound {report.lower_bound:.2%} "
            f"(Wilson, one-sided {report.confidence:.0%}; gate {args.min_agreement:.0%}), "
            f"max score diff {report.max_score_diff:.4f}"
        )
        for f in report.flips[: args.show]:
            scores = f"fp32 {f.fp32} ({f.fp32_score:.3f}) -> int8 {f.int8} ({f.int8_score:.3f})"
            print(f"  line {f.index + 1}: {scores}: {f.text}")
        if not ok:
            print(
                f"below the gate: re-export with `--calibration-file {args.texts}` so the int8 scales are calibrated "
                "on texts like these"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
