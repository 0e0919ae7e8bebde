"""Accuracy-aware int8 quantization for the export script.

Recipe search: try recipes from cheapest (fastest at run time) to safest, measure each candidate through the
engine's own run time (tokenizer, batching, session) against the fp32 graph on the verification inputs, and keep
the first whose top-1 agreement with fp32 reaches the bound. The last resort keeps the most sensitive MatMuls in
fp32, one at a time, until the bound holds, so the search always ends with a model that keeps the decisions.

Why these recipes: dynamic quantization (weights int8 offline, activations quantized per batch at run time)
needs no calibration data and suits CPUs. Weights are signed int8 with 7-bit range (reduce_range): onnxruntime's
u8s8 kernel on AVX2 CPUs without VNNI adds pairs of u8*s8 products in int16 and saturates with full 8-bit
weights; 7-bit weights cannot overflow there, so the same file gives the same answers on AVX2, AVX-512 and VNNI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine import batching, postprocess
from engine.session import OnnxSession
from engine.tokenize import Strategy, TextTokenizer, Truncation

Item = str | tuple[str, str]


class Runtime:
    """The engine's own forward pass over candidate graphs, so the checks measure what users will run."""

    def __init__(self, tokenizer_json: str, max_length: int, pad_id: int, num_labels: int, nli: bool = False):
        self.tokenizer = TextTokenizer(tokenizer_json, max_length, pad_id)
        self.pad_id = pad_id
        self.num_labels = num_labels
        self.strategy = Strategy.ONLY_FIRST if nli else Strategy.LONGEST_FIRST

    def logits(self, onnx_bytes: bytes, items: Sequence[Item]) -> np.ndarray:
        session = OnnxSession(onnx_bytes, self.num_labels)
        encoded = self.tokenizer.encode(items, Truncation(strategy=self.strategy))
        out = np.empty((len(items), self.num_labels), dtype=np.float32)
        for batch in batching.batches(encoded, self.pad_id):
            out[batch.index] = session.run(batch)
        return out


def decisions(logits: np.ndarray) -> np.ndarray:
    """What a user acts on: the top label, or for a single-logit model which side of 0.5 the score falls."""
    return (logits[:, 0] > 0) if logits.shape[1] == 1 else logits.argmax(axis=1)


def compare(reference: np.ndarray, candidate: np.ndarray, problem_type: str | None) -> tuple[float, float]:
    """(top-1 agreement, max score difference under the model's default activation)."""
    act = postprocess.default_activation(problem_type, reference.shape[1])
    agreement = float((decisions(reference) == decisions(candidate)).mean())
    diff = float(np.abs(postprocess.activate(reference, act) - postprocess.activate(candidate, act)).max())
    return agreement, diff


@dataclass(frozen=True)
class Recipe:
    name: str
    per_channel: bool
    reduce_range: bool = True
    op_types: tuple[str, ...] = ("MatMul",)
    exclude: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": "onnxruntime dynamic quantization",
            "weight_type": "QInt8",
            "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
            "op_types": list(self.op_types),
            "kept_fp32": list(self.exclude),
        }


@dataclass
class SearchResult:
    path: Path
    recipe: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)


def quantize_with(recipe: Recipe, fp32_path: Path, out_path: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        fp32_path,
        out_path,
        op_types_to_quantize=list(recipe.op_types),
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        weight_type=QuantType.QInt8,
        # the quantizer first rewrites a Gemm named X into a MatMul named X_MatMul: exclude both spellings
        nodes_to_exclude=[n for name in recipe.exclude for n in (name, f"{name}_MatMul")],
    )
    return out_path


def matmul_weights(fp32_path: Path) -> list[str]:
    """Names of the MatMul and Gemm nodes with a constant weight: the ones quantization touches (onnxruntime's
    quantizer turns a Gemm with a constant weight into MatMulInteger too, whatever op_types says)."""
    import onnx

    graph = onnx.load(str(fp32_path)).graph
    consts = {init.name for init in graph.initializer}
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and any(i in consts for i in n.input)]


def sensitivity(
    fp32_path: Path, reference: np.ndarray, items: Sequence[Item], runtime: Runtime, workdir: Path
) -> list[str]:
    """MatMuls ordered by how much quantizing each one alone moves the logits, worst first."""
    errors = []
    names = matmul_weights(fp32_path)
    for i, name in enumerate(names):
        others = tuple(n for n in names if n != name)
        path = quantize_with(Recipe("probe", True, exclude=others), fp32_path, workdir / f"probe{i}.onnx")
        errors.append(float(np.abs(runtime.logits(path.read_bytes(), items) - reference).mean()))
    return [names[i] for i in np.argsort(errors)[::-1]]


def search(
    fp32_path: Path,
    reference: np.ndarray,
    items: Sequence[Item],
    runtime: Runtime,
    config: Any,
    workdir: Path,
    min_agreement: float,
    log: Callable[[str], Any] = print,
) -> SearchResult:
    """The cheapest recipe whose top-1 agreement with fp32 reaches `min_agreement`."""
    problem_type = getattr(config, "problem_type", None)
    tried = []

    def attempt(recipe: Recipe, tag: str) -> tuple[Path, float, float]:
        path = quantize_with(recipe, fp32_path, workdir / f"int8-{tag}.onnx")
        agreement, diff = compare(reference, runtime.logits(path.read_bytes(), items), problem_type)
        tried.append(
            {
                "recipe": recipe.name,
                "kept_fp32": len(recipe.exclude),
                "top1_agreement": agreement,
                "max_score_diff": diff,
            }
        )
        log(
            f"int8 recipe {recipe.name!r} ({len(recipe.exclude)} MatMuls kept fp32): "
            f"top-1 agreement {agreement:.2%}, max score diff {diff:.4f}"
        )
        return path, agreement, diff

    def done(path: Path, recipe: Recipe, agreement: float, diff: float) -> SearchResult:
        return SearchResult(
            path,
            recipe.describe(),
            {
                "int8_top1_agreement": agreement,
                "int8_max_score_diff": diff,
                "int8_min_agreement": min_agreement,
                "int8_recipes_tried": tried,
            },
        )

    for recipe in (Recipe("per-tensor", per_channel=False), Recipe("per-channel", per_channel=True)):
        path, agreement, diff = attempt(recipe, recipe.name)
        if agreement >= min_agreement:
            return done(path, recipe, agreement, diff)

    order = sensitivity(fp32_path, reference, items, runtime, workdir)
    kept: list[str] = []
    for name in order:
        kept.append(name)
        recipe = Recipe("per-channel, sensitive MatMuls in fp32", True, exclude=tuple(kept))
        path, agreement, diff = attempt(recipe, f"keep{len(kept)}")
        if agreement >= min_agreement:
            return done(path, recipe, agreement, diff)
    raise RuntimeError("no int8 recipe kept the decisions even with every MatMul in fp32: export with --precision fp32")
