"""How the word-embedding table's storage moves a model's decisions: the figures behind fp16 embeddings in
scripts/quantize.py.

    .venv/bin/python -m experiments.embedding_storage FP32_MODEL_DIR [--texts 300]

FP32_MODEL_DIR is an fp32 export (`scripts/export_models.py SOURCE --precision fp32`). Each variant replaces the
word-embedding table by its values after a storage round trip (fp16; int8 per row, symmetric and asymmetric; int8
per column; int8 per block of columns) and scores the corpus with the engine's run time against the untouched
model. Everything else stays fp32, so the numbers are the table's effect alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import corpus

ROOT = Path(__file__).resolve().parent.parent


def _int8(values: np.ndarray, axis: int) -> np.ndarray:
    scale = np.maximum(np.abs(values).max(axis=axis, keepdims=True), 1e-12) / 127
    return np.round(values / scale) * scale


def _int8_asymmetric_rows(values: np.ndarray) -> np.ndarray:
    lo, hi = values.min(axis=1, keepdims=True), values.max(axis=1, keepdims=True)
    scale = np.maximum(hi - lo, 1e-12) / 255
    return np.round((values - lo) / scale) * scale + lo


def _int8_blocks(block: int) -> Callable[[np.ndarray], np.ndarray]:
    def round_trip(values: np.ndarray) -> np.ndarray:
        rows, cols = values.shape
        return _int8(values.reshape(rows, cols // block, block), axis=2).reshape(rows, cols)

    return round_trip


VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "fp16": lambda v: v.astype(np.float16).astype(np.float32),
    "int8 per row, symmetric": lambda v: _int8(v, axis=1),
    "int8 per row, asymmetric": _int8_asymmetric_rows,
    "int8 per column": lambda v: _int8(v, axis=0),
    "int8 per 16-column block": _int8_blocks(16),
    "int8 per 64-column block": _int8_blocks(64),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="an fp32 model directory made by scripts/export_models.py")
    parser.add_argument("--texts", type=int, default=300)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "scripts"))
    import onnx
    from onnx import numpy_helper

    from engine.export import quantize

    manifest = json.loads((args.model / "manifest.json").read_text())
    runtime = quantize.Runtime(
        (args.model / "tokenizer.json").read_text(),
        manifest["max_length"],
        manifest["pad_token_id"],
        len(manifest["id2label"]),
    )
    model = onnx.load(str(args.model / "model.onnx"))
    table = next(t.weight for t in quantize.embedding_targets(model) if "word_embeddings" in t.weight)
    init = next(i for i in model.graph.initializer if i.name == table)
    values = numpy_helper.to_array(init).astype(np.float32)
    texts: list[quantize.Item] = list(corpus.sample(args.texts))
    reference = runtime.logits(model.SerializeToString(), texts)
    print(f"{args.model}: {table} {list(values.shape)}, {len(texts)} sentences, logit std {reference.std():.2f}")
    print("| storage | mean relative error | top-1 agreement | max score diff | max logit diff |")
    print("|---|---:|---:|---:|---:|")
    for name, round_trip in VARIANTS.items():
        stored = round_trip(values).astype(np.float32)
        init.CopyFrom(numpy_helper.from_array(stored, table))
        got = runtime.logits(model.SerializeToString(), texts)
        agreement, diff = quantize.compare(reference, got, manifest.get("problem_type"))
        relative = float(np.abs(stored - values).mean() / np.abs(values).mean())
        print(f"| {name} | {relative:.1e} | {agreement:.1%} | {diff:.4f} | {np.abs(got - reference).max():.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
