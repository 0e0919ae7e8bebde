"""Which int8 form keeps a trained model's decisions on texts its calibration never saw: the default export's
levers measured one by one, on the gate's two splits and on the model's own held-out domain.

    python -m experiments.headroom CHECKPOINT_DIR [--texts DATA_JSON --task classifier|fortunes] [--out FILE.md]
        [--headroom H ...] [--alpha A ...] [--kinds] [--no-per-token] [--bias-correction] [--cascade D ...]

CHECKPOINT_DIR is a trained Hugging Face classifier (benchmarks' trained MiniLM:
~/.cache/offline-textclf-engine/benchmarks/full-trained/ckpt-minilm). The built-in verification texts are split as
the gate splits them (engine/export/gate.py); static ranges come from the search split only. Each form is applied
to every MatMul (no fp32 layers) and measured against the fused fp32 graph on: the search split, the confirm
split (the gate's clear decisions), and the held-out in-domain test texts of DATA_JSON (benchmarks' data.json),
which neither split contains. Forms: static and smoothed static scales with headroom h (the calibrated range
widened h times: lo*h, hi*h; the smoothing factors do not change, their geometric mean being 1); smoothed static
with another SmoothQuant alpha (the engine's: scheme.SMOOTHING); per-token scales on one kind of group in every
layer and smoothed static elsewhere (--kinds); per-token scales everywhere. The gate passes a graph whose confirm
split keeps enough clear decisions for its lower bound to reach 99% (engine/export/gate.py: 3 flips in 973).
--cascade D simulates a run time that re-scores with the fp32 graph every row whose int8 margin is below D.
Results: experiments/results/headroom.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.models import cpu_line
from engine.export import gate, pipeline, quantize
from engine.export.checkpoint import export_fp32, load_checkpoint
from engine.export.describe import window
from engine.export.quantize import scheme
from engine.export.verify import verification_inputs

HEADROOMS = (1.0, 1.25, 1.5, 2.0)
BINS = ((0.2, 0.3), (0.3, 0.5), (0.5, 0.8), (0.8, 1.01))
KINDS = ("Q/K/V input", "attention output", "FFN input", "FFN output")


@dataclass(frozen=True)
class Prepared:
    """A checkpoint's fused fp32 graph (`graph`, and its bytes `fp32`), the engine's run time for it, and the
    built-in verification texts as the gate splits them."""

    runtime: quantize.Runtime
    graph: Any
    fp32: bytes
    search: list[Any]
    confirm: list[Any]


def prepare(checkpoint: str, work: Path) -> Prepared:
    """Export `checkpoint` to fp32 ONNX in `work` and fuse it as `engine export` does."""
    import onnx

    config, tokenizer, model = load_checkpoint(checkpoint)
    items = verification_inputs(None, False, False)
    search_idx, confirm_idx = gate.split(items)
    max_length = window(
        config.model_type, config.max_position_embeddings, config.pad_token_id, tokenizer.model_max_length
    )
    tokenizer.save_pretrained(work / "tok")
    runtime = quantize.Runtime(
        (work / "tok" / "tokenizer.json").read_text(), max_length, tokenizer.pad_token_id, config.num_labels
    )
    raw = export_fp32(model, work)
    fp32_path, _, _ = pipeline.fused_graph(
        raw,
        config,
        lambda p: runtime.logits(p.read_bytes(), items),
        runtime.logits(raw.read_bytes(), items),
        1e-3,
        print,
    )
    search, confirm = [items[i] for i in search_idx], [items[i] for i in confirm_idx]
    return Prepared(runtime, onnx.load(str(fp32_path)), fp32_path.read_bytes(), search, confirm)


def emit(lines: list[str], out: str | None) -> None:
    """Print an experiment's markdown, and write it to `out` when given."""
    text = "\n".join(lines)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def widened(ranges: dict[str, quantize.Range], h: float) -> dict[str, quantize.Range]:
    return {k: quantize.Range(r.lo * h, r.hi * h) for k, r in ranges.items()}


def channel_means(runtime: quantize.Runtime, model: Any, ranges: dict[str, Any], items: list[Any]) -> dict[str, Any]:
    """Each MatMul input's per-channel mean over the real tokens of `items` (the search split)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto.FromString(model.SerializeToString())
    names = sorted(ranges)
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    total = {n: np.zeros(ranges[n].lo.shape, np.float64) for n in names}
    count = dict.fromkeys(names, 0)
    for batch in runtime.batches(items):
        real = batch.attention_mask.astype(bool)
        for n, v in zip(names, session.run(names, {i: getattr(batch, i) for i in inputs}), strict=True):
            tokens = v[real] if v.ndim >= 3 and v.shape[:2] == real.shape else v.reshape(-1, v.shape[-1])
            total[n] += tokens.sum(axis=0)
            count[n] += len(tokens)
    return {n: total[n] / count[n] for n in names}


def corrected(model: Any, static: Any, smooth: bool, means: dict[str, Any]) -> Any:
    """A copy of the fp32 graph whose MatMul biases cancel the rounded weights' error on the average input
    (NNCF's bias correction, for the weights): bias += mean (W - Wq), with the rewrite's own smoothing and rounding,
    so that the rewrite then moves the corrected bias into its int8 nodes."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name: i for i in model.graph.initializer}
    todo = quantize.targets(model)
    weights = {t.node: numpy_helper.to_array(inits[t.weight]).astype(np.float32) for t in todo}
    for t in todo:
        s = None
        if smooth and static and t.input in static:
            s = quantize.smoothing(static[t.input], [weights[u.node] for u in todo if u.input == t.input])
        w = weights[t.node] if s is None else weights[t.node] * s[:, None]
        wq, ws = quantize.quantize_weight(w)
        mean = means[t.input] if s is None else means[t.input] / s
        out = next(n.output[0] for n in model.graph.node if n.name == t.node)
        add = quantize.bias_add(model.graph, out, w.shape[1], inits)
        if add is None:
            continue  # no bias to carry the correction (every MatMul of the models measured here has one)
        b = inits[next(i for i in add.input if i != out)]
        fixed = numpy_helper.to_array(b).astype(np.float64) + mean @ (w - wq.astype(np.float64) * ws)
        b.CopyFrom(numpy_helper.from_array(fixed.astype(np.float32), b.name))
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument(
        "--texts", default=str(Path.home() / ".cache/offline-textclf-engine/benchmarks/full-trained/data.json")
    )
    ap.add_argument("--task", default="classifier")
    ap.add_argument("--out")
    ap.add_argument("--headroom", type=float, nargs="*", default=list(HEADROOMS))
    ap.add_argument("--alpha", type=float, nargs="*", default=[])
    ap.add_argument("--kinds", action="store_true")
    ap.add_argument("--cascade", type=float, nargs="*", default=[], help="int8 margins below which fp32 re-scores")
    ap.add_argument("--bias-correction", action="store_true", help="every form with its biases corrected")
    ap.add_argument("--no-per-token", dest="per_token", action="store_false")
    args = ap.parse_args(argv)
    held_out = [t for t, _ in json.loads(Path(args.texts).read_text())[args.task]["test"]]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare(args.checkpoint, Path(tmp))
        runtime, fp32, search_items, confirm_items = (
            prepared.runtime,
            prepared.fp32,
            prepared.search,
            prepared.confirm,
        )
        refs = {
            name: runtime.logits(fp32, texts)
            for name, texts in (("search", search_items), ("confirm", confirm_items), ("held-out", held_out))
        }
        graph = prepared.graph
        ranges = runtime.ranges(graph, sorted({t.input for t in quantize.targets(graph)}), search_items)

        means = channel_means(runtime, graph, ranges, search_items) if args.bias_correction else None
        suffix = ", bias corrected" if args.bias_correction else ""

        def rw(exclude: Any, static: Any = None, smooth: bool = False) -> Any:
            return quantize.rewrite(
                corrected(graph, static, smooth, means) if means else graph, exclude, static, smooth
            )

        def measure(name: str, g: Any) -> None:
            name += suffix
            data = g.SerializeToString()
            row: dict[str, Any] = {"form": name}
            for split, texts in (("search", search_items), ("confirm", confirm_items), ("held-out", held_out)):
                ref, got = refs[split], runtime.logits(data, texts)
                same = quantize.decisions(ref) == quantize.decisions(got)
                mask = quantize.counted(ref)
                row[split] = f"{int((~same[mask]).sum())}/{int(mask.sum())} ({int((~same).sum())}/{len(same)} all)"
                if split != "search":  # the fp32 margins of the clear decisions int8 flipped, by bin
                    m = quantize.margins(ref)[mask & ~same]
                    row[split + " margins"] = " ".join(str(int(((m >= a) & (m < b)).sum())) for a, b in BINS)
                    for delta in args.cascade:  # rows int8 itself sees as close, re-scored by the fp32 graph
                        again = quantize.margins(got) < delta
                        final = np.where(again, quantize.decisions(ref), quantize.decisions(got))
                        flips = int((final != quantize.decisions(ref)).sum())
                        row[f"{split} cascade {delta}"] = f"{flips}/{len(final)} ({again.mean():.1%} re-scored)"
            print(row, flush=True)
            rows.append(row)

        for h in args.headroom:
            for smooth in (False, True):
                measure(
                    f"{'smoothed ' if smooth else ''}static, headroom {h}",
                    rw((), widened(ranges, h), smooth),
                )
        for alpha in args.alpha:  # SmoothQuant's migration strength: scheme.smoothing reads SMOOTHING when called
            default = scheme.SMOOTHING
            scheme.SMOOTHING = alpha
            try:
                measure(f"smoothed static, alpha {alpha}", rw((), ranges, True))
            finally:
                scheme.SMOOTHING = default
        if args.kinds:  # per-token scales for one kind of group in every layer, smoothed static elsewhere
            inputs = [g[0].input for g in quantize.groups(graph) if g[0] in quantize.targets(graph)]
            for k, kind in enumerate(KINDS):
                static = {x: r for x, r in ranges.items() if x not in inputs[k::4]}
                measure(f"per-token {kind}, smoothed static elsewhere", rw((), static, True))
        if args.per_token:
            measure("per-token", rw(()))
    bins = " ".join(f"{a}-{min(b, 1)}" for a, b in BINS)
    lines = [
        f"{cpu_line()}; {args.checkpoint}",
        "",
        "Flips: clear decisions int8 changed / clear decisions (every decision in brackets); margins: the flipped "
        f"clear decisions by fp32 margin ({bins})",
        "",
        "| form (every MatMul int8) | search split | confirm split | margins | held-out in-domain | margins |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['form']} | {r['search']} | {r['confirm']} | {r['confirm margins']} | {r['held-out']} | "
        f"{r['held-out margins']} |"
        for r in rows
    ]
    if args.cascade:
        cells = [f"{split} cascade {d}" for split in ("confirm", "held-out") for d in args.cascade]
        lines += [
            "",
            "Every decision flipped when the rows whose int8 margin is below the threshold are re-scored in fp32, and "
            "the share of rows re-scored:",
            "",
            "| form | " + " | ".join(c.replace(" cascade ", ", int8 margin < ") for c in cells) + " |",
            "|---|" + "---|" * len(cells),
            *(f"| {r['form']} | " + " | ".join(r[c] for c in cells) + " |" for r in rows),
        ]
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
