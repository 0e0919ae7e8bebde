"""The int8 gate as a prediction of held-out agreement: choose on one split, confirm on another, bound from below.

The recipe search (quantize.search) tries recipes until one keeps the decisions on the texts it measures, so its
figure is the best of many draws on its own sample: it overstates what int8 keeps on texts it never saw. Here the
verification inputs are split in two, disjoint by text (`split`): the search, its calibrated ranges included,
sees only the search split; the chosen graph is then measured once on the confirm split, and passes only when a
lower confidence bound of its top-1 agreement there reaches the gate (99% by default), not the point estimate.

Both splits count the decisions fp32 makes clearly (quantize.calibrate.counted: margin >= CLEAR_MARGIN), so a
trained model's near-ties on generic texts do not stand for its own domain's decisions; the near-ties' flips are
recorded beside. An export that re-scores its near-ties in fp32 (`rescore_margin`, engine.runtime.loaded) is
confirmed on what its users get, that cascade's output, and on every decision, near-ties included.
The bound (`lower_bound`) is the one-sided Wilson score bound. When a confirmation fails, the
export searches again with a stricter bound on the search split (`LADDER`: at most `LOOKS` confirmations in
all), so each look is taken at confidence 1 - (1 - CONFIDENCE) / LOOKS (Bonferroni): the figure that passes is a
95% bound whichever look passed. With 1,200 counted texts that allows 4 flipped decisions (99.67%) for a 99% gate;
0 flips in 600.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from engine.errors import ExportError
from engine.export import quantize

CONFIDENCE = 0.95  # family-wise, over every confirmation an export may look at
LOOKS = 3  # search bounds tried at most: the gate, halfway to 1, then 1 (every search-split decision kept)
CONFIRM_SHARE = 0.6  # of the verification texts; the built-in set gives the confirm split >= 1,200 of them
BOUND_METHOD = "Wilson score, one-sided"
ZERO_SHOT_PREMISES = 240  # NLI: search-split premises of the zero-shot ranking gate (x 13 labels per candidate)


def lower_bound(agreed: int, n: int, confidence: float) -> float:
    """One-sided Wilson score lower bound of a proportion agreed/n at `confidence` (0 when n is 0). Unlike the
    normal approximation it stays inside [0, 1] and is not 1 at 100% agreement: n/(n + z^2) then."""
    if n <= 0:
        return 0.0
    if not 0 <= agreed <= n:
        raise ValueError(f"agreed must be within 0..{n}, got {agreed}")
    z = NormalDist().inv_cdf(confidence)
    p = agreed / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def look_confidence(looks: int = LOOKS, confidence: float = CONFIDENCE) -> float:
    """The confidence of each look so that all `looks` together hold at `confidence` (Bonferroni)."""
    return 1 - (1 - confidence) / looks


def _key(item: quantize.Item) -> str:
    """What an input is split by: its first text (a pair goes where its first text goes)."""
    return item[0] if isinstance(item, tuple) else item


def split(items: Sequence[quantize.Item], share: float = CONFIRM_SHARE) -> tuple[list[int], list[int]]:
    """(search indices, confirm indices): each input goes by a hash of its first text, so the same text always
    falls on the same side (repeated lines cannot leak across) and the split does not depend on the file's order
    or on the machine. Both sides keep at least one input when there are two or more."""
    keys = sorted({_key(item) for item in items}, key=lambda k: hashlib.sha256(k.encode("utf-8")).digest())
    confirm_keys = set(keys[: round(len(keys) * share)]) if len(keys) > 1 else set()
    if len(keys) > 1 and len(confirm_keys) in (0, len(keys)):
        confirm_keys = set(keys[:1]) if not confirm_keys else set(keys[:-1])
    search = [i for i, item in enumerate(items) if _key(item) not in confirm_keys]
    confirm = [i for i, item in enumerate(items) if _key(item) in confirm_keys]
    return search, confirm


def ladder(min_agreement: float, looks: int = LOOKS) -> list[float]:
    """Search-split bounds to try, one per look: the gate itself, then stricter, the last 1.0."""
    if min_agreement <= 0 or min_agreement >= 1 or looks <= 1:
        return [min_agreement]
    return [1 - (1 - min_agreement) * (looks - 1 - k) / (looks - 1) for k in range(looks)]


@dataclass(frozen=True)
class Confirmation:
    inputs: int
    agreed: int
    point: float
    lower: float
    confidence: float
    passed: bool
    flipped: tuple[int, ...]  # positions within the confirm split whose decision int8 changed
    bound_reachable: bool = True  # False: too few texts for the bound to reach the gate; the point estimate decided
    near_ties: int = 0  # confirm inputs not counted (fp32 margin below CLEAR_MARGIN)
    near_ties_flipped: int = 0
    all_agreement: float = 0.0  # every decision counted, near-ties too
    rescored: int = 0  # confirm inputs the cascade re-scored in fp32

    def figures(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "rescored_in_fp32": self.rescored,
            "near_ties": self.near_ties,
            "near_ties_flipped": self.near_ties_flipped,
            "top1_agreement_all_decisions": self.all_agreement,
            "agreed": self.agreed,
            "top1_agreement": self.point,
            "lower_bound": self.lower,
            "confidence": self.confidence,
            "passed": self.passed,
            "bound_reachable": self.bound_reachable,
        }


def cascade(candidate: np.ndarray, fp32: np.ndarray, margin: float | None) -> tuple[np.ndarray, int]:
    """What the run time answers (engine.runtime.loaded.NearTies): the candidate's logits, with the rows whose
    margin is below `margin` replaced by fp32's; and how many were. None: the candidate's alone."""
    if margin is None:
        return candidate, 0
    near = quantize.margins(candidate) < margin
    return np.where(near[:, None], fp32, candidate), int(near.sum())


def confirm(
    reference: np.ndarray,
    candidate: np.ndarray,
    min_agreement: float,
    confidence: float,
    rescore_margin: float | None = None,
) -> Confirmation:
    """The chosen graph's decisions on the confirm split against fp32's: passes when the lower bound of the counted
    decisions' agreement reaches `min_agreement`. The clear ones are counted, or with `rescore_margin` (near-ties
    re-scored by fp32, `cascade`) every one."""
    candidate, rescored = cascade(candidate, reference, rescore_margin)
    every = quantize.decisions(reference) == quantize.decisions(candidate)
    mask = quantize.counted(reference) if rescore_margin is None else np.ones(len(every), dtype=bool)
    same = every[mask]
    n, agreed = int(same.size), int(same.sum())
    lower = lower_bound(agreed, n, confidence)
    point = agreed / n if n else 0.0
    # too few confirm texts for any bound to reach the gate (a short --calibration-file): the point estimate
    # decides, and the manifest says so (`bound_reachable`); a gate of 1 asks for every decision
    reachable = lower_bound(n, n, confidence) >= min_agreement
    passed = lower >= min_agreement if reachable else point >= min_agreement
    flipped = tuple(int(i) for i in np.flatnonzero(~every))
    near = int((~mask).sum())
    all_agreement = float(every.mean()) if every.size else 0.0
    near_flipped = int((~every[~mask]).sum())
    return Confirmation(
        n, agreed, point, lower, confidence, passed, flipped, reachable, near, near_flipped, all_agreement, rescored
    )


def gated_search(
    search: Callable[[float, Path], quantize.SearchResult],
    confirm_logits: Callable[[Path], np.ndarray],
    reference: np.ndarray,
    min_agreement: float,
    search_inputs: int,
    workdir: Path,
    log: Callable[[str], Any],
    on_fail: str,
    rescore_margin: float | None = None,
) -> tuple[quantize.SearchResult, dict[str, Any]]:
    """Run `search(bound, workdir)` (the recipe search on the search split) and confirm its graph on the confirm
    split (`confirm_logits(graph path)` against `reference`, fp32's logits there), searching again with a
    stricter bound while the confirmation fails (`rescore_margin`: the cascade's output is confirmed, see
    `confirm`). Returns the search result and the manifest's figures; raises
    ExportError with `on_fail` (formatted with the last look's `point` and `lower`) when no look passes."""
    bounds = ladder(min_agreement)
    each = look_confidence(len(bounds))
    looks: list[dict[str, Any]] = []
    seen = -1.0
    for k, bound in enumerate(bounds):
        if bound <= seen and k < len(bounds) - 1:
            continue  # the last graph already reached this bound on the search split: go stricter at once
        (workdir / f"look{k}").mkdir(parents=True, exist_ok=True)
        result = search(bound, workdir / f"look{k}")
        seen = result.figures["int8_top1_agreement"]
        check = confirm(reference, confirm_logits(result.path), min_agreement, each, rescore_margin)
        counted = (
            f"clear decisions ({check.near_ties} near-ties, {check.near_ties_flipped} flipped)"
            if rescore_margin is None
            else f"decisions, {check.rescored} near-ties re-scored in fp32"
        )
        log(
            f"int8 gate, look {k + 1}/{len(bounds)}: search split {seen:.2%} (bound {bound:.2%}); confirm split "
            f"{check.point:.2%} of {check.inputs} {counted}, {BOUND_METHOD} {each:.2%} lower bound {check.lower:.2%} "
            f"(gate {min_agreement:.0%}): {'passed' if check.passed else 'failed'}"
        )
        looks.append({"search_bound": bound, "search_top1_agreement": seen, **check.figures()})
        if check.passed:
            figures = {
                "int8_search_top1_agreement": seen,
                "int8_confirm_top1_agreement": check.point,
                "int8_confirm_lower_bound": check.lower,
                "int8_confirm_top1_agreement_all_decisions": check.all_agreement,
                "int8_gate": {
                    "counts": counts(rescore_margin),
                    "bound": f"{BOUND_METHOD}, {CONFIDENCE:.0%} over up to {len(bounds)} looks "
                    f"(Bonferroni: {each:.4f} each)",
                    "min_agreement": min_agreement,
                    "search_inputs": search_inputs,
                    "confirm_inputs": check.inputs,  # counted decisions
                    "confirm_near_ties": check.near_ties,
                    "confirm_rescored_in_fp32": check.rescored,
                    "looks": looks,
                },
            }
            return result, figures
    raise ExportError(on_fail.format(lower=looks[-1]["lower_bound"], point=looks[-1]["top1_agreement"]))


def counts(rescore_margin: float | None) -> str:
    """What the gate's confirmation counts, in the manifest's words."""
    search = (
        f"search split: decisions with an fp32 margin of at least {quantize.CLEAR_MARGIN} (top-1 minus top-2 "
        "probability), or all when near-ties are most of a split or the model has one logit"
    )
    if rescore_margin is None:
        return f"{search}; confirm split: the same"
    return (
        f"{search}; confirm split: every decision, as the run time answers it (rows with an int8 margin below "
        f"{rescore_margin} re-scored by the fp32 graph)"
    )
