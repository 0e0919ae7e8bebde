"""The recipe search: static, smoothed static, then per-token groups and fp32 layers by bisection, until
every Check holds."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.export.quantize.calibrate import Runtime, compare
from engine.export.quantize.rewrite import rewrite
from engine.export.quantize.scheme import (
    PROBE_ITEMS,
    Item,
    Range,
    Recipe,
    Target,
    embedding_block,
    embedding_targets,
    groups,
    targets,
)


@dataclass(frozen=True)
class Check:
    """A further acceptance test of a candidate graph, given by the export code (e.g. zero-shot ranking
    agreement): `measure(graph bytes)` must reach `bound`. Recorded under `name` in every tried recipe."""

    name: str
    bound: float
    measure: Callable[[bytes], float]


@dataclass
class Memo:
    """What searches on the same split have measured: the gate (engine/export/gate.py) searches again with a
    stricter bound when a confirmation fails, and the calibrated ranges, each candidate graph's figures and the
    sensitivity orders do not depend on the bound, so a later look measures only the graphs it has not seen."""

    ranges: dict[str, Range] | None = None
    attempts: dict[tuple[Any, ...], tuple[Path, float, float, dict[str, float]]] = field(default_factory=dict)
    orders: dict[tuple[Any, ...], list[list[Target]]] = field(default_factory=dict)
    measured: int = 0  # candidate graphs built and run, over every search that shared this memo


@dataclass
class SearchResult:
    path: Path
    recipe: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)


def search(
    fp32_path: Path,
    reference: np.ndarray,
    items: Sequence[Item],
    runtime: Runtime,
    config: Any,
    workdir: Path,
    min_agreement: float,
    log: Callable[[str], Any] = print,
    checks: Sequence[Check] = (),
    memo: Memo | None = None,
) -> SearchResult:
    """The fastest int8 graph the search finds whose top-1 agreement with fp32 reaches `min_agreement` and that
    passes every further check: static scales where they keep the decisions, per-token scales where they do not,
    fp32 where neither does. `memo` carries what an earlier search of the same inputs measured (Memo)."""
    import onnx

    problem_type = getattr(config, "problem_type", None)
    model = onnx.load(str(fp32_path))
    all_targets = targets(model)
    lookups = embedding_targets(model)
    columns = {i.name: int(i.dims[-1]) for i in model.graph.initializer if i.dims}  # scalars: transformers 5
    matmul_groups = [g for g in groups(model) if g[0] in all_targets]
    memo = memo if memo is not None else Memo()
    if memo.ranges is None:
        memo.ranges = runtime.ranges(model, [g[0].input for g in matmul_groups], items)
    ranges = memo.ranges
    tried: list[dict[str, Any]] = []

    def make(name: str, kept: Sequence[Target] = (), dynamic: Sequence[Target] = (), smooth: bool = False) -> Recipe:
        kept_nodes, dynamic_nodes = {t.node for t in kept}, {t.node for t in dynamic}
        return Recipe(
            name,
            exclude=tuple(t.node for t in all_targets + lookups if t.node in kept_nodes),
            static=tuple(t.node for t in all_targets if t.node not in kept_nodes | dynamic_nodes),
            dynamic=tuple(t.node for t in all_targets if t.node in dynamic_nodes - kept_nodes),
            kept_matmuls=tuple(t.node for t in all_targets if t.node in kept_nodes),
            embeddings=tuple(dict.fromkeys(t.weight for t in lookups if t.node not in kept_nodes)),
            smoothed=smooth,
        )

    def graph(recipe: Recipe) -> Any:
        static = {t.input: ranges[t.input] for t in all_targets if t.node in set(recipe.static)}
        return rewrite(model, recipe.exclude, static, recipe.smoothed, recipe.embeddings8)

    def margin(result: Attempt) -> float:
        """How far a failed attempt is from passing: its worst figure against that figure's bound."""
        return min([result[2] - min_agreement] + [result[4][c.name] - c.bound for c in checks])

    Attempt = tuple[Path, Recipe, float, float, dict[str, float], bool]

    def attempt(recipe: Recipe, tag: str) -> Attempt:
        key = (recipe.exclude, recipe.static, recipe.dynamic, recipe.smoothed, recipe.embeddings8)
        if key in memo.attempts:
            path, agreement, diff, extra = memo.attempts[key]
        else:
            path = workdir / f"int8-{tag}.onnx"
            path.write_bytes(graph(recipe).SerializeToString())
            candidate = path.read_bytes()
            agreement, diff = compare(reference, runtime.logits(candidate, items), problem_type, near_ties=False)
            extra = {c.name: c.measure(candidate) for c in checks}
            memo.attempts[key] = path, agreement, diff, extra
            memo.measured += 1
        passes = agreement >= min_agreement and all(extra[c.name] >= c.bound for c in checks)
        tried.append(
            {
                "recipe": recipe.name,
                "static": len(recipe.static),
                "dynamic": len(recipe.dynamic),
                "kept_fp32": len(recipe.kept_matmuls),
                "fp16_embeddings": len(recipe.embeddings) - len(recipe.embeddings8),
                "int8_embeddings": len(recipe.embeddings8),
                "top1_agreement": agreement,
                "max_score_diff": diff,
                **extra,
            }
        )
        log(
            f"int8 recipe {recipe.name!r} (MatMuls: {len(recipe.static)} static, {len(recipe.dynamic)} per-token, "
            f"{len(recipe.kept_matmuls)} fp32; embedding tables: {len(recipe.embeddings) - len(recipe.embeddings8)} "
            f"fp16, {len(recipe.embeddings8)} 8-bit): "
            f"top-1 agreement {agreement:.2%}, max score diff {diff:.4f}"
            + "".join(f", {name} {value:.2%}" for name, value in extra.items())
        )
        return path, recipe, agreement, diff, extra, passes

    def bisect(order: list[list[Target]], recipe_for: Callable[[int], Recipe], upper: Attempt | None = None) -> Attempt:
        """The smallest k for which recipe_for(k) passes: recipe_for(0) failed, recipe_for(len(order)) passes (and
        is `upper` when that was already measured)."""
        lo, hi, best = 0, len(order), upper
        while hi - lo > 1:
            mid = (lo + hi) // 2
            result = attempt(recipe_for(mid), f"{len(tried)}")
            if result[5]:
                hi, best = mid, result
            else:
                lo = mid
        return best or attempt(recipe_for(len(order)), "upper")

    def done(result: Attempt) -> SearchResult:
        """The search's answer, its embedding tables 8-bit when that still passes (a quarter of fp32's memory
        instead of half)."""
        tables = tuple(e for e in result[1].embeddings if embedding_block(columns[e]))
        if result[5] and tables:
            recipe = replace(result[1], name=result[1].name + ", 8-bit embeddings", embeddings8=tables)
            leaner = attempt(recipe, "embeddings8")
            result = leaner if leaner[5] else result
        path, recipe, agreement, diff, extra, _ = result
        figures = {
            **extra,  # the final graph's figure of each further check
            "int8_top1_agreement": agreement,
            "int8_max_score_diff": diff,
            "int8_min_agreement": min_agreement,
            "int8_recipes_tried": tried,
        }
        return SearchResult(path, recipe.describe(), figures)

    result = attempt(make("int8, static scales"), "static")
    if result[5]:
        return done(result)
    smoothed = attempt(make("int8, smoothed static scales", smooth=True), "smoothed")
    if smoothed[5]:
        return done(smoothed)
    smooth = margin(smoothed) >= margin(result)  # the static form the mixed recipes below use
    static_name = "smoothed static" if smooth else "static"
    upper = attempt(make("int8, per-token scales", dynamic=all_targets), "dynamic")
    kept: list[Target] = []
    if not upper[5]:  # even per-token scales everywhere fall short: keep the groups they hurt most fp32
        every = [t.node for t in all_targets + lookups]
        order = sensitivity_order(
            groups(model),
            lambda g: rewrite(model, tuple(n for n in every if n not in {t.node for t in g})),
            reference,
            items,
            runtime,
            log,
            "per-token scales",
            memo,
        )
        fp32_all = make("fp32 (no int8 recipe kept the decisions)", kept=all_targets + lookups)

        def keeping(k: int) -> Recipe:
            if k == len(order):
                return fp32_all
            return make(
                "int8, per-token scales, sensitive nodes in fp32",
                kept=functools.reduce(operator.iadd, order[:k], []),
                dynamic=all_targets,
            )

        upper = bisect(order, keeping)
        if upper[1] is fp32_all:
            return done(upper)
        kept = [t for t in all_targets + lookups if t.node in upper[1].exclude]
        if not upper[1].dynamic:  # every MatMul fp32: no scales left to choose
            return done(upper)
        result = attempt(make(f"int8, {static_name} scales, sensitive nodes in fp32", kept=kept, smooth=smooth), "kept")
        if result[5]:
            return done(result)
    # the groups a static scale hurts most get per-token scales (the fp32 ones stay fp32)
    rest = [g for g in matmul_groups if not set(g) & set(kept)]
    order = sensitivity_order(
        rest,
        lambda g: rewrite(model, [t.node for t in all_targets if t not in g], {g[0].input: ranges[g[0].input]}, smooth),
        reference,
        items,
        runtime,
        log,
        f"a {static_name} scale",
        memo,
    )
    name = f"int8, {static_name} and per-token scales" + (", sensitive nodes in fp32" if kept else "")
    return done(
        bisect(
            order,
            lambda k: make(name, kept=kept, dynamic=functools.reduce(operator.iadd, order[:k], []), smooth=smooth),
            upper,
        )
    )


def sensitivity_order(
    candidates: list[list[Target]],
    graph_with: Callable[[list[Target]], Any],
    reference: np.ndarray,
    items: Sequence[Item],
    runtime: Runtime,
    log: Callable[[str], Any],
    what: str,
    memo: Memo | None = None,
) -> list[list[Target]]:
    """Groups ordered by how much quantizing each one alone (`graph_with(group)`: that group changed, the rest
    fp32) moves the logits per weight element, worst first, measured on a spread subset of the inputs (cheap: a
    few short runs instead of one full run per MatMul)."""
    key = (what, tuple(tuple(t.node for t in g) for g in candidates))
    if memo is not None and key in memo.orders:
        return memo.orders[key]
    pick = np.linspace(0, len(items) - 1, min(PROBE_ITEMS, len(items))).round().astype(int)
    subset, ref = [items[i] for i in pick], reference[pick]
    scores = []
    for g in candidates:
        error = float(np.abs(runtime.logits(graph_with(g).SerializeToString(), subset) - ref).mean())
        scores.append(error / sum(t.size for t in g))
    log(f"int8 sensitivity to {what}: probed {len(candidates)} groups on {len(subset)} inputs")
    order = [candidates[i] for i in np.argsort(scores)[::-1]]
    if memo is not None:
        memo.orders[key] = order
    return order
