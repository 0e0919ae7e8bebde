"""Ratios, issue 12's targets, the Markdown tables and the PNG chart, from one run's measurements."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from . import core_latency
from .peers import PEERS

INT8_ENGINES = ("engine-int8", "engine-int8-concurrent")

NAMES = {
    "engine-int8": "engine int8, default export",
    "engine-int8-calibrated": "engine int8, --calibration-file (in-domain)",
    "engine-int8-concurrent": "engine int8, batches at once",
    "engine-fp32": "engine fp32",
    "transformers": "transformers (torch fp32)",
    "ort-fp32": "onnxruntime fp32",
    "ort-int8": "onnxruntime dynamic int8",
    "openvino": "OpenVINO (default hint)",
    "openvino-nncf-int8": "OpenVINO + NNCF static int8",
    "openvino-engine-graph": "engine int8 graph on OpenVINO (lever)",
}
TITLES = {
    "minilm": "MiniLM-L6 fine-tuned",
    "distilbert": "DistilBERT-base-shaped, distilled",
    "fortunes": "MiniLM-L6 fine-tuned on fortunes",
}
DOMAINS = {
    "minilm": "WordNet noun glosses by topic",
    "distilbert": "WordNet noun glosses by topic",
    "fortunes": "Debian fortunes by file",
}
CONFIDENCE = 0.95  # the held-out lower bound's, one-sided Wilson as the export's gate (engine/export/gate.py)


def wilson_lower(agreed: int, n: int, confidence: float = CONFIDENCE) -> float:
    """The one-sided Wilson score lower bound the export's gate uses, so the two figures compare."""
    from engine.export.gate import lower_bound

    return lower_bound(agreed, n, confidence)


def fidelity(data: dict[str, Any]) -> dict[str, Any]:
    """Per trained model: held-out agreement of the default and the calibrated int8 export with torch fp32 (with
    its lower bound), beside the figures each export's gate reported on its own texts."""
    out = {}
    for model, runs in data.get("fidelity", {}).items():
        reference = runs["transformers"]
        row: dict[str, Any] = {"texts": len(reference)}
        for variant, figures in (("int8", "engine_int8_export"), ("int8-calibrated", "engine_int8_calibrated_export")):
            labels = runs[f"engine-{variant}"]
            agreed = sum(a == b for a, b in zip(labels, reference))
            gate = data["models"][model][figures]
            row[variant] = {
                "held_out_agreement": agreed / len(reference),
                "held_out_flips": len(reference) - agreed,
                "held_out_lower_bound": wilson_lower(agreed, len(reference)),
                "held_out_rescored": runs.get("rescored_in_fp32", {}).get(f"engine-{variant}", 0),
                "gate_search": gate.get("int8_search_top1_agreement", float("nan")),
                "gate_confirm": gate.get("int8_confirm_top1_agreement", float("nan")),
                "gate_confirm_lower_bound": gate.get("int8_confirm_lower_bound", float("nan")),
                "int8_matmuls": gate["int8_matmuls"],
                "matmuls": gate["matmuls"],
            }
        out[model] = row
    return out


def plan_texts(data: dict[str, Any]) -> int:
    return int(data.get("corpus", {}).get("sentences", 0))


def rescored_note(results: dict[str, Any], corpus: int) -> str:
    """How many timing-corpus rows each engine int8 export re-scored in fp32 per pass (its near-ties)."""
    parts = [
        f"{NAMES[s]} {r['corpus_rescored_in_fp32']}"
        for s, r in results.items()
        if s.startswith("engine-int8") and r.get("corpus_rescored_in_fp32")
    ]
    if not parts:
        return ""
    return f" Timing-corpus rows re-scored in fp32 per pass (near-ties, of {corpus or '?'}): {'; '.join(parts)}."


def agreement(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a) if a and len(a) == len(b) else float("nan")


def per_system(data: dict[str, Any], model: str) -> dict[str, dict[str, float]]:
    """The headline figures of each system on one model (medians over repetitions)."""
    results = data["classify"][model]
    reference = results["transformers"]["held_out_labels"]
    names = data["models"][model]["training"]["labels"]
    truth = [names[y] for y in data["held_out"]["labels"]]
    out = {}
    for system, r in results.items():
        out[system] = {
            "sentences_per_s": r["sentences_per_s"],
            "latency_ms_p50": r["latency_ms_p50"],
            "latency_ms_p99": r["latency_ms_p99"],
            "peak_rss_mb": r["peak_rss_mb"],
            "cold_start_s": statistics.median(data["cold"][model][system]),
            "top1_agreement_with_torch": agreement(r["held_out_labels"], reference),
            "held_out_accuracy": agreement(r["held_out_labels"], truth),
            "disk_mb": data.get("disk_mb", {}).get(model, {}).get(system, float("nan")),
            "in_domain_per_s": r.get("in_domain_per_s", float("nan")),
            "in_domain_p50": r.get("in_domain_p50", float("nan")),
        }
    return out


NEAR_NS = 150.0  # CPUs' round trip below this: one core complex (70-80 ns here); above: two (300 ns or more)


def phase(trip: list[float | None] | None) -> str | None:
    """ "near" or "far" when the round trips before and after a measurement agree, else None (it moved)."""
    xs = [x for x in (trip or []) if x is not None]
    if not xs or (min(xs) < NEAR_NS) != (max(xs) < NEAR_NS):
        return None
    return "near" if xs[0] < NEAR_NS else "far"


def by_phase(mine: tuple[list[float], list[Any]], theirs: tuple[list[float], list[Any]]) -> dict[str, Any]:
    """The ratio of two systems' medians over only the rounds each ran in one phase, per phase both saw: the
    comparison that the machine's moves between phases cannot tilt. Each side is (figures, round trips) by round."""
    out = {}
    for name in ("near", "far"):
        a, b = ([v for v, t in zip(vals, trips) if phase(t) == name] for vals, trips in (mine, theirs))
        if a and b:
            out[name] = {"ratio": statistics.median(a) / statistics.median(b), "rounds": [len(a), len(b)]}
    return out


def _rounds(r: dict[str, Any], key: str) -> tuple[list[float], list[Any]]:
    return r[f"{key}_rounds"], r.get("core_round_trip_ns_rounds", [])


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"models": {}, "targets": []}
    targets = out["targets"]
    for model in data["classify"]:
        systems = per_system(data, model)
        e = systems["engine-int8"]
        fastest = max(PEERS, key=lambda p: systems[p]["sentences_per_s"])
        quickest = min(PEERS, key=lambda p: systems[p]["latency_ms_p50"])
        leanest = min(PEERS, key=lambda p: systems[p]["peak_rss_mb"])
        ratios = {
            p: {
                "throughput": e["sentences_per_s"] / systems[p]["sentences_per_s"],
                "latency_p50": e["latency_ms_p50"] / systems[p]["latency_ms_p50"],
                "peak_rss": e["peak_rss_mb"] / systems[p]["peak_rss_mb"],
                "cold_start": e["cold_start_s"] / systems[p]["cold_start_s"],
            }
            for p in PEERS
        }
        in_fastest = max(PEERS, key=lambda p: systems[p]["in_domain_per_s"])
        in_quickest = min(PEERS, key=lambda p: systems[p]["in_domain_p50"])
        for p in PEERS:
            ratios[p]["in_domain_throughput"] = e["in_domain_per_s"] / systems[p]["in_domain_per_s"]
            ratios[p]["in_domain_p50"] = e["in_domain_p50"] / systems[p]["in_domain_p50"]
        runs = data["classify"][model]
        phased = {
            e: by_phase(_rounds(runs[e], "sentences_per_s"), _rounds(runs[fastest], "sentences_per_s"))
            for e in INT8_ENGINES
            if e in runs
        }
        out["models"][model] = {
            "systems": systems,
            "ratios": ratios,
            "fastest_peer": fastest,
            "throughput_by_phase": phased,
        }
        independent = data["classify"][model]["engine-int8"]["rows_independent"]
        targets += [
            _target(model, f"throughput >= fastest peer's ({NAMES[fastest]})", ratios[fastest]["throughput"], ">=", 1),
            *_concurrent(model, systems, fastest),
            _target(
                model, f"batch-1 p50 <= lowest peer p50 ({NAMES[quickest]})", ratios[quickest]["latency_p50"], "<=", 1
            ),
            _target(model, f"peak RSS <= leanest peer's ({NAMES[leanest]})", ratios[leanest]["peak_rss"], "<=", 1),
            _target(
                model,
                f"in domain: throughput >= fastest peer's ({NAMES[in_fastest]})",
                ratios[in_fastest]["in_domain_throughput"],
                ">=",
                1,
            ),
            _target(
                model,
                f"in domain: batch-1 p50 <= lowest peer p50 ({NAMES[in_quickest]})",
                ratios[in_quickest]["in_domain_p50"],
                "<=",
                1,
            ),
            _target(model, "top-1 agreement with torch fp32 (held-out)", e["top1_agreement_with_torch"], ">=", 0.99),
            _target(model, "cold start, import + load + first result (s)", e["cold_start_s"], "<=", 0.5),
            _target(model, "rows independent: same label alone as batched", float(independent["same_label"]), ">=", 1),
        ]
    out["fidelity"] = fidelity(data)
    for model, row in out["fidelity"].items():
        targets += [
            _target(
                model,
                "default export: held-out agreement with torch, 95% lower bound",
                row["int8"]["held_out_lower_bound"],
                ">=",
                0.99,
            ),
            _target(
                model,
                "calibrated export: held-out agreement with torch",
                row["int8-calibrated"]["held_out_agreement"],
                ">=",
                0.99,
            ),
        ]
    zs = data["zero_shot"]
    out["zero_shot"], out["zero_shot_by_phase"] = {}, {}
    if not zs:  # --no-zero-shot
        return out
    reference = zs["transformers"]["by_labels"]
    out["zero_shot"] = {
        count: {
            s: {
                "texts_per_s": zs[s]["by_labels"][count]["texts_per_s"],
                "top1_agreement_with_torch": agreement(
                    zs[s]["by_labels"][count]["best_labels"], reference[count]["best_labels"]
                ),
            }
            for s in zs
        }
        for count in reference
    }
    for count, by_system in out["zero_shot"].items():
        best = max(PEERS, key=lambda p: by_system[p]["texts_per_s"])
        per_labels = {
            s: (z["by_labels"][count]["texts_per_s_rounds"], z.get("core_round_trip_ns_rounds", []))
            for s, z in zs.items()
        }
        out["zero_shot_by_phase"][count] = {
            "peer": best,
            "ratios": {e: by_phase(per_labels[e], per_labels[best]) for e in INT8_ENGINES if e in zs},
        }
        ratio = by_system["engine-int8"]["texts_per_s"] / by_system[best]["texts_per_s"]
        targets.append(
            _target("nli", f"zero-shot texts/s, {count} labels >= best peer's ({NAMES[best]})", ratio, ">=", 1)
        )
        rates = {s: {"sentences_per_s": v["texts_per_s"]} for s, v in by_system.items()}
        targets += _concurrent("nli", rates, best, f"zero-shot texts/s, {count} labels, ")
    return out


def _concurrent(
    model: str, systems: dict[str, dict[str, float]], fastest: str, what: str = "throughput "
) -> list[dict[str, Any]]:
    """The throughput target again for the engine's throughput setting (batches at once), when it was measured."""
    if "engine-int8-concurrent" not in systems:
        return []
    ratio = systems["engine-int8-concurrent"]["sentences_per_s"] / systems[fastest]["sentences_per_s"]
    name = f"{what}with batches at once (concurrent_batches = cores) >= {NAMES[fastest]}'s"
    return [_target(model, name, ratio, ">=", 1)]


def _target(model: str, name: str, value: float, op: str, bound: float) -> dict[str, Any]:
    met = math.isfinite(value) and (value >= bound if op == ">=" else value <= bound)
    return {"model": model, "target": name, "value": value, "op": op, "bound": bound, "met": met}


def _f(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "n/a"


def _per_round(rows: dict[str, tuple[list[float], list[Any]]], what: str) -> list[str]:
    """A table of each system's figure per round, each with the CPUs' round trip before / after it (ns)."""
    rounds = max(len(values) for values, _ in rows.values())
    lines = [
        f"Per round: {what}, with the round trip between the two CPUs before / after it in ns "
        "(`benchmarks/core_latency.py`: about 70-80 on one core complex, 300 or more across two).",
        "",
        "| system | " + " | ".join(f"round {i + 1}" for i in range(rounds)) + " |",
        "|---|" + "---:|" * rounds,
    ]
    for system, (values, trips) in rows.items():
        cells = []
        for i, value in enumerate(values):
            trip = trips[i] if i < len(trips) else None
            ns = "/".join(f"{x:.0f}" for x in (trip or []) if x is not None)
            cells.append(f"{value:.0f}" + (f" ({ns})" if ns else ""))
        lines.append(f"| {NAMES[system]} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(data: dict[str, Any]) -> str:
    s = data["summary"]
    c, cpu, figs = data["corpus"], data["cpu"], data["models"]
    flags = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in cpu["flags"].items())
    lines = [
        f"CPU: {cpu['model']}, {cpu['cores']} cores; {flags}. onnxruntime int8 preset: {figs['int8_preset']}.",
        f"Timing corpus: {c['sentences']} sentences of the CPython docs, {c['mean_tokens']:.1f} tokens on average, the "
        f"same length-sorted {data['plan']['batch_tokens']}-token batches for every system; "
        f"{data['plan']['rounds']} rounds, every system once per round in alternating order, {data['plan']['reps']} "
        f"repetitions per round (medians of medians). Agreement and accuracy: {data['held_out']['texts']} held-out "
        f"texts ({data['held_out']['source']}), not the timing corpus. Load average at the end: "
        f"{data['load_average_after'][0]:.1f} (a shared machine: read the ratios, not the absolute figures).",
        "",
        "Threads: "
        + (
            "one intra-op thread for every system (`--threads 1`: the engine's `threads=1`), each worker pinned to "
            "one CPU, as on a one-core device."
            if data.get("threads") == 1
            else f"{data['threads']} intra-op threads for every system (`--threads`)."
            if data.get("threads")
            else "every system's default, one per core."
        ),
        "",
    ]
    for model, m in s["models"].items():
        t = figs[model]["training"]
        x = figs[model]["engine_int8_export"]
        extra = (
            f", agreement with its teacher {t['test_agreement_with_teacher']:.1%}"
            if "test_agreement_with_teacher" in t
            else ""
        )
        lines += [
            f"### {TITLES[model]} ({len(t['labels'])} topics, held-out accuracy {t['test_accuracy']:.1%}{extra})",
            "",
            f"engine int8 export: {x['int8_matmuls']} of {x['matmuls']} MatMuls int8, top-1 agreement with fp32 "
            f"{x['int8_top1_agreement']:.1%} on the gate's texts (gate {x['int8_min_agreement']:.0%})."
            + rescored_note(data["classify"][model], plan_texts(data)),
            "",
            "| system | sent/s | batch-1 p50 ms | p99 ms | peak RSS MB | on disk MB | cold start s | "
            "agreement with torch | accuracy | engine int8 / system: throughput | p50 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for system, v in m["systems"].items():
            r = m["ratios"].get(system)
            ratio = f"{_f(r['throughput'])} | {_f(r['latency_p50'])}" if r else " | "
            lines.append(
                f"| {NAMES[system]} | {_f(v['sentences_per_s'], 1)} | {_f(v['latency_ms_p50'], 1)} | "
                f"{_f(v['latency_ms_p99'], 1)} | {_f(v['peak_rss_mb'], 0)} | {_f(v['disk_mb'], 1)} | "
                f"{_f(v['cold_start_s'])} | "
                f"{v['top1_agreement_with_torch']:.1%} | {v['held_out_accuracy']:.1%} | {ratio} |"
            )
        ov = data["classify"][model]["openvino"].get("openvino", {})
        ind = data["classify"][model]["engine-int8"]["rows_independent"]
        lines += [
            "",
            f"OpenVINO resolved INFERENCE_PRECISION_HINT={ov.get('inference_precision_hint', '?')} "
            f"(PERFORMANCE_HINT={ov.get('performance_hint', '?')}). Engine int8 rows alone vs batched "
            f"({ind['texts']} held-out texts): same label {'yes' if ind['same_label'] else 'NO'}, max score "
            f"difference {ind['max_score_diff']:.1e}.",
            "",
        ]
        lines += _in_domain_table(data, model, m)
        runs = data["classify"][model]
        lines += _per_round(
            {
                system: (r["sentences_per_s_rounds"], r.get("core_round_trip_ns_rounds", []))
                for system, r in runs.items()
            },
            "sentences/s",
        )
    lines += _zero_shot_section(data)
    lines += _fidelity_table(data)
    lines += [
        "",
        "### Targets",
        "",
        "| model | target | measured | bound | met |",
        "|---|---|---:|---:|---|",
    ]
    for t in s["targets"]:
        lines.append(
            f"| {t['model']} | {t['target']} | {_f(t['value'], 3)} | {t['op']} {t['bound']} | "
            f"{'yes' if t['met'] else 'NO'} |"
        )
    lines.append("")
    phased = [
        (model, NAMES[m["fastest_peer"]], system, ratios)
        for model, m in s["models"].items()
        for system, ratios in m.get("throughput_by_phase", {}).items()
    ] + [
        (f"nli, {count} labels", NAMES[z["peer"]], system, ratios)
        for count, z in s.get("zero_shot_by_phase", {}).items()
        for system, ratios in z["ratios"].items()
    ]
    if any(ratios for *_, ratios in phased):
        lines += [
            "Throughput against the fastest peer within one phase of the machine: only the rounds whose CPU round "
            f"trips before and after were both below {core_latency.NEAR_NS:.0f} ns (one core complex) or both "
            "above (two); rounds of each system in brackets.",
            "",
            "| model | engine | peer | one core complex | two core complexes |",
            "|---|---|---|---:|---:|",
        ]
        for model, peer, system, ratios in phased:
            cells = [
                f"{ratios[p]['ratio']:.3f} ({ratios[p]['rounds'][0]}/{ratios[p]['rounds'][1]})" if p in ratios else "-"
                for p in ("near", "far")
            ]
            lines.append(f"| {model} | {NAMES[system]} | {peer} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _in_domain_table(data: dict[str, Any], model: str, m: dict[str, Any]) -> list[str]:
    """The same systems timed on the model's own held-out texts (worker.classify), where an int8 export re-scores
    fewer near-ties in fp32 than on the out-of-domain timing corpus; none in results from before it was measured."""
    runs = data["classify"][model]
    if not all("in_domain_per_s" in r for r in runs.values()):
        return []
    held = data["held_out"]
    lines = [
        f"Timed on the model's own held-out texts ({held['texts']}, {held.get('mean_tokens', float('nan')):.1f} tokens "
        "on average: the texts agreement is measured on), as its users' texts are; same batches, repetitions "
        "and rounds.",
        "",
        "| system | sent/s | batch-1 p50 ms | rows re-scored in fp32 per pass | "
        "engine int8 / system: throughput | p50 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for system, v in m["systems"].items():
        r = m["ratios"].get(system)
        ratio = f"{_f(r['in_domain_throughput'])} | {_f(r['in_domain_p50'])}" if r else " | "
        rescored = runs[system].get("in_domain_rescored_in_fp32", 0) if system.startswith("engine-int8") else "-"
        lines.append(
            f"| {NAMES[system]} | {_f(v['in_domain_per_s'], 1)} | {_f(v['in_domain_p50'], 1)} | {rescored} | {ratio} |"
        )
    return [*lines, ""]


def _zero_shot_section(data: dict[str, Any]) -> list[str]:
    """The zero-shot table and its rounds (none with --no-zero-shot), and the random stress case's figures."""
    s, figs = data["summary"], data["models"]
    lines: list[str] = []
    if data["zero_shot"]:
        nli = figs["nli"]["training"]
        nx = figs["nli"]["engine_int8_export"]
        counts = list(s["zero_shot"])
        lines += [
            f"### Zero-shot: MiniLM-L6 NLI (entailment/contradiction, trained on {nli['train_pairs']} pairs; held-out "
            f"zero-shot top-1 over {len(nli['topics'])} topics {nli['test_zero_shot_accuracy']:.1%})",
            "",
            f"engine int8 export: {nx['int8_matmuls']} of {nx['matmuls']} MatMuls int8, zero-shot top-1 agreement with "
            f"fp32 {nx.get('int8_zero_shot_top1_agreement', float('nan')):.1%} on the gate's texts. Texts: held-out "
            f"texts; labels: the first {' and '.join(counts)} topics; template {nli['template']!r}; agreement with "
            "torch fp32.",
            "",
            "| system | " + " | ".join(f"texts/s, {k} labels | agreement" for k in counts) + " |",
            "|---|" + "---:|---:|" * len(counts),
        ]
        for system in data["zero_shot"]:
            cells = [
                f"{_f(z['texts_per_s'], 1)} | {z['top1_agreement_with_torch']:.1%}"
                for z in (s["zero_shot"][k][system] for k in counts)
            ]
            lines.append(f"| {NAMES[system]} | " + " | ".join(cells) + " |")
        lines.append("")
        for k in counts:
            lines += _per_round(
                {
                    system: (z["by_labels"][k]["texts_per_s_rounds"], z.get("core_round_trip_ns_rounds", []))
                    for system, z in data["zero_shot"].items()
                },
                f"texts/s at {k} labels",
            )
    if "random_stress" in figs:
        stress = figs["random_stress"]["engine_int8_export"]
        lines += [
            "",
            f"Near-tie stress case (random DistilBERT-base, not a benchmark of speed): the int8 gate keeps "
            f"{stress['int8_matmuls']} of {stress['matmuls']} MatMuls int8 (agreement with fp32 "
            f"{stress['int8_top1_agreement']:.1%}).",
        ]
    return lines


def _fidelity_table(data: dict[str, Any]) -> list[str]:
    """The held-out agreement of the default and calibrated exports beside their gates' figures, and export times."""
    rows = data["summary"].get("fidelity", {})
    if not rows:
        return []
    lines = [
        "",
        "### Fidelity on held-out in-domain texts",
        "",
        "Top-1 agreement of each int8 export with torch fp32 on the trained model's held-out test texts, which no "
        "training, calibration or gate saw. The default export is `engine export CKPT --output DIR` with no flags "
        "(calibrated and gated on the built-in texts, none of these domains); the calibrated one adds "
        "`--calibration-file` with the domain's calibration split. Beside each: the gate's own figures on the "
        "built-in texts (search split; confirm split and its lower bound). Lower bounds: one-sided Wilson 95%. "
        "Re-scored: held-out rows whose int8 margin fell below the export's `rescore_margin`, answered by its "
        "fp32 graph (the default for text classifiers).",
        "",
        "| model (domain) | held-out texts | export | MatMuls int8 | re-scored in fp32 | held-out agreement | flips | "
        "lower bound | gate: search | gate: confirm | gate: lower bound |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, row in rows.items():
        for variant, label in (("int8", "default"), ("int8-calibrated", "--calibration-file")):
            v = row[variant]
            lines.append(
                f"| {TITLES[model]} ({DOMAINS[model]}) | {row['texts']} | {label} | {v['int8_matmuls']}/{v['matmuls']}"
                f" | {v['held_out_rescored']} | {v['held_out_agreement']:.2%} | {v['held_out_flips']} | "
                f"{v['held_out_lower_bound']:.2%} | "
                f"{v['gate_search']:.2%} | {v['gate_confirm']:.2%} | {v['gate_confirm_lower_bound']:.2%} |"
            )
    times = data["models"].get("export_seconds", {})
    if times:
        lines += [
            "",
            "Export wall time, seconds (this run's build, or the build it reused; the ONNX export is the fp32 graph "
            "the peers share, before their int8 step):",
            "",
            "| model | engine export, default | engine export, --calibration-file | ONNX export (fp32) | "
            "+ quantize_dynamic | + NNCF |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for model in data["classify"]:
            cells = [
                times.get(key.format(model), float("nan"))
                for key in (
                    "engine-int8-{}",
                    "engine-int8-calibrated-{}",
                    "onnx-export-{}",
                    "quantize_dynamic-{}",
                    "openvino-nncf-{}",
                )
            ]
            lines.append(f"| {TITLES[model]} | " + " | ".join(_f(c, 0) for c in cells) + " |")
    return lines


def chart(data: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = data["summary"]
    panels = [(TITLES[m], s["models"][m]["systems"], "sentences_per_s") for m in s["models"]]
    panels += [(f"zero-shot, {k} labels", s["zero_shot"][k], "texts_per_s") for k in s["zero_shot"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, (title, systems, key) in zip(axes[0], panels):
        names = list(systems)
        colors = ["tab:red" if n.startswith("engine") else "tab:blue" for n in names]
        ax.bar([NAMES[n] for n in names], [systems[n][key] for n in names], color=colors)
        ax.set_title(title)
        ax.set_ylabel(key.replace("_", " "))
        ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
