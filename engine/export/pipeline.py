"""The one model-making sequence, shared by `engine export` (from torch's fp32 graph) and `engine adopt
--requantize` / `engine check --recalibrate` (from a published fp32 graph): fuse the attention -> check the fp32
graph against the reference logits -> int8 recipe search on one split -> confirm on the other (gate.py) ->
prune the last layer to the head's token. Each graph transform is kept only when the logits stay within the
fp32 bound of what they were, so the checked answers stand."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import EngineError, ExportError
from engine.export import gate, quantize, support
from engine.export.graph.fuse import fuse_attention
from engine.export.graph.prune import prune_to_first_token
from engine.export.verify import FP32_ATOL, MIN_ZERO_SHOT_AGREEMENT, ZERO_SHOT_LABEL_SETS, ZeroShotGrid

Log = Callable[[str], Any]


@dataclass(frozen=True)
class Int8Gate:
    """What the int8 graph must keep: `min_agreement` of the confirm split's clear decisions (as a lower bound),
    and for NLI models (`entailment_id` set) the winning label over `label_sets` in `min_zero_shot_agreement` of
    the premises (0 turns that check off). `refusal` is the message when no recipe passes (with {point} and
    {lower}): what the user can do instead. `rescore_margin`: the export re-scores near-ties in fp32, and the
    confirmation measures that (gate.confirm)."""

    min_agreement: float
    refusal: str
    entailment_id: int | None = None
    label_sets: Sequence[Sequence[str]] = ZERO_SHOT_LABEL_SETS
    min_zero_shot_agreement: float = MIN_ZERO_SHOT_AGREEMENT
    rescore_margin: float | None = None


@dataclass(frozen=True)
class Made:
    """The graph to write, its quantization recipe and the verification figures for the manifest, and the
    verified fp32 graph it came from (the reference `engine check` measures against)."""

    path: Path
    fp32_path: Path
    recipe: dict[str, Any]
    verification: dict[str, Any]


def make(
    fp32_path: Path,
    reference_logits: np.ndarray,
    items: Sequence[quantize.Item],
    runtime: quantize.Runtime,
    config: Any,
    workdir: Path,
    log: Log,
    int8: Int8Gate | None,
    reference: tuple[str, str] = ("torch", "torch"),
) -> Made:
    """fuse -> check fp32 -> (int8: search -> confirm) -> prune, on `items` through the engine's own run time.
    `reference_logits` are the logits of `items` the fp32 graph must reproduce, and `reference` names them (in
    the log, in the manifest's key): torch's, or the published fp32 graph's;
    `config` gives the fusion its model type and sizes and the search its problem type. Raises ExportError when
    the fp32 graph does not match the reference or no int8 recipe passes the gate."""
    name, key = reference
    bound = FP32_ATOL * max(1.0, float(np.abs(reference_logits).max()))

    def graph_logits(path: Path) -> np.ndarray:
        return runtime.logits(path.read_bytes(), items)

    fp32_path, fused, fp32_logits = fused_graph(fp32_path, config, graph_logits, reference_logits, bound, log)
    if fp32_logits is None:  # the graph as exported: its own logits, not the reference's
        fp32_logits = graph_logits(fp32_path)
    fp32_diff = float(np.abs(fp32_logits - reference_logits).max())
    log(f"fp32 ONNX vs {name} on {len(items)} inputs: max |logit diff| = {fp32_diff:.2e} (bound {bound:.0e})")
    if not fp32_diff <= bound:
        raise ExportError(f"fp32 ONNX does not match {name}: max logit difference {fp32_diff:.3e}")
    verification: dict[str, Any] = {
        "inputs": len(items),
        f"fp32_vs_{key}_max_logit_diff": fp32_diff,
        "fused_attention_layers": fused,
        "attention_fusion": support.fusion_note(getattr(config, "model_type", ""), fused),
    }
    recipe: dict[str, Any] = {"name": "none (fp32)"}
    final_path = fp32_path
    if int8 is not None:
        final_path, recipe, figures = quantized(fp32_path, fp32_logits, items, runtime, config, workdir, log, int8)
        verification.update(figures)
    final_logits = fp32_logits if int8 is None else graph_logits(final_path)
    final_path, verification["first_token_matmuls"] = pruned_graph(final_path, graph_logits, final_logits, bound, log)
    return Made(final_path, fp32_path, recipe, verification)


def quantized(
    fp32_path: Path,
    fp32_logits: np.ndarray,
    items: Sequence[quantize.Item],
    runtime: quantize.Runtime,
    config: Any,
    workdir: Path,
    log: Log,
    int8: Int8Gate,
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The int8 graph: recipe chosen on the search split, confirmed on the confirm split it never saw
    (engine/export/gate.py); NLI models also held to the zero-shot ranking on search-split premises."""
    search_idx, confirm_idx = gate.split(items)
    search_items = [items[i] for i in search_idx]
    confirm_items = [items[i] for i in confirm_idx]
    entail = int8.entailment_id
    grid = None
    if entail is not None:
        grid = ZeroShotGrid(runtime, fp32_path, search_items[: gate.ZERO_SHOT_PREMISES], entail, int8.label_sets)
    checks = [grid.check(int8.min_zero_shot_agreement)] if grid is not None and int8.min_zero_shot_agreement > 0 else []
    memo = quantize.Memo()  # a stricter look measures only the graphs the earlier ones did not
    result, gate_figures = gate.gated_search(
        lambda bound, where: quantize.search(
            fp32_path, fp32_logits[search_idx], search_items, runtime, config, where, bound, log, checks, memo
        ),
        lambda path: runtime.logits(path.read_bytes(), confirm_items),
        fp32_logits[confirm_idx],
        int8.min_agreement,
        len(search_items),
        workdir,
        log,
        int8.refusal,
        int8.rescore_margin,
    )
    figures = {**result.figures, **gate_figures, "int8_min_agreement": int8.min_agreement}
    figures["int8_gate"]["graphs_measured"] = memo.measured
    if grid is not None:
        figures.update(grid.figures(result.path, int8.min_zero_shot_agreement, log))
    return result.path, result.recipe, figures


def fused_graph(
    fp32_path: Path, config: Any, logits: Any, reference: np.ndarray, bound: float, log: Any
) -> tuple[Path, int, np.ndarray | None]:
    """The fp32 graph with its attention fused (engine/export/graph/fuse.py) when that still matches torch within
    `bound`, else the graph as exported; how many attention layers were fused; the fused graph's logits (None when
    it was not kept)."""
    return _verified(
        fp32_path, "fused", lambda m: fuse_attention(m, config), "attention", logits, reference, bound, log
    )


def pruned_graph(path: Path, logits: Any, reference: np.ndarray, bound: float, log: Any) -> tuple[Path, int]:
    """The final graph (fp32, or int8 after its recipe search and gates) with its last layer run on the head's
    token only (engine/export/graph/prune.py) when its logits stay within `bound` of the unpruned graph's, else the
    graph as it was (`reference`: its logits); and how many MatMuls run on that one token. Pruning last keeps the
    calibration and the gates on the whole graph: each row's remaining computation is the same, so the verified
    answers stand."""
    pruned, count, _ = _verified(path, "pruned", prune_to_first_token, "last layer", logits, reference, bound, log)
    return pruned, count


def _verified(
    path: Path, name: str, transform: Any, what: str, logits: Any, reference: np.ndarray, bound: float, log: Any
) -> tuple[Path, int, np.ndarray | None]:
    """`transform(model) -> (model, count)` applied to the graph at `path` and kept when its logits stay within
    `bound` of `reference`: (the graph to use, count or 0, its logits when transformed, else None), so that the
    caller does not run the kept graph again."""
    import onnx

    try:
        model, count = transform(onnx.load(str(path)))
    except ImportError as exc:  # onnxruntime.transformers' shape helper needs sympy (the export and adopt extras)
        log(f"{what} not {name}: {exc}")
        return path, 0, None
    if not count:
        return path, 0, None
    out = path.with_name(f"{path.stem}-{name}.onnx")
    onnx.save(model, str(out))
    try:
        got = logits(out)
    except EngineError as exc:  # the verification's own run time cannot load or run it
        log(f"the {name} graph does not run ({exc}): keeping the graph as it was")
        return path, 0, None
    diff = float(np.abs(got - reference).max())
    if diff <= bound:
        log(f"{what} {name} ({count}; the logits within {diff:.1e} of the reference)")
        return out, count, got
    log(f"{name} {what} moved the logits by {diff:.2e}, over the bound: keeping the graph as it was")
    return path, 0, None
