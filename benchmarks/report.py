"""Ratios, targets, the Markdown table and the PNG chart, from one run's measurements."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

PEERS = ("transformers", "optimum-fp32", "optimum-int8")
NAMES = {
    "engine-int8": "engine int8",
    "engine-fp32": "engine fp32",
    "engine-int8-all": "engine int8, all MatMuls",
    "transformers": "transformers (torch)",
    "optimum-fp32": "optimum fp32",
    "optimum-int8": "optimum int8",
}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def agreement(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b)) / len(a) if a and len(a) == len(b) else float("nan")


def per_system(data: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The headline figure of each metric for each system (medians over repetitions)."""
    reference = data["throughput"]["transformers"]["labels"]
    out = {}
    for system, tp in data["throughput"].items():
        cold = data["cold"][system]
        out[system] = {
            "sentences_per_s": tp["sentences_per_s"],
            "best_batch": tp["best_batch"],
            "latency_ms_p50": tp["latency_ms_p50"],
            "latency_ms_p99": tp["latency_ms_p99"],
            "peak_rss_mb": next(c["peak_rss_mb"] for c in cold if "labels" in c),
            "cold_start_s": _median([c["cold_start_s"] for c in cold]),
            "import_s": _median([c["import_s"] for c in cold]),
            "load_s": _median([c["load_s"] for c in cold]),
            "first_result_s": _median([c["first_result_s"] for c in cold]),
            "top1_agreement_with_torch": agreement(tp["labels"], reference),
        }
    return out


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    systems = per_system(data)
    engine = systems["engine-int8"]
    zs = data["zero_shot"]
    counts = [k.split("_")[3] for k in zs["engine-int8"] if k.startswith("texts_per_s_") and k.endswith("labels")]
    ratios: dict[str, dict[str, float]] = {}
    for peer in PEERS:
        p = systems[peer]
        ratios[peer] = {
            "throughput": engine["sentences_per_s"] / p["sentences_per_s"],
            "latency_p50": engine["latency_ms_p50"] / p["latency_ms_p50"],
            "latency_p99": engine["latency_ms_p99"] / p["latency_ms_p99"],
            "peak_rss": engine["peak_rss_mb"] / p["peak_rss_mb"],
            "cold_start": engine["cold_start_s"] / p["cold_start_s"],
        }
    zs_ratio = {
        c: zs["engine-int8"][f"texts_per_s_{c}_labels"] / zs["transformers"][f"texts_per_s_{c}_labels"] for c in counts
    }
    zs_agree = {
        c: agreement(zs["engine-int8"][f"best_labels_{c}"], zs["transformers"][f"best_labels_{c}"]) for c in counts
    }
    ceiling = data["ceiling"]
    fraction = engine["sentences_per_s"] / ceiling["int8_sentences_per_s"]
    fp32_fraction = systems["engine-fp32"]["sentences_per_s"] / ceiling["fp32_sentences_per_s"]
    bound = data["models"]["int8_export_figures"].get("int8_min_agreement", 0.99)
    targets = [
        ("int8 throughput / int8 GEMM ceiling", fraction, ">=", 0.85),
        ("int8 throughput / transformers (torch)", ratios["transformers"]["throughput"], ">=", 5.0),
        ("int8 throughput / optimum int8", ratios["optimum-int8"]["throughput"], ">=", 3.0),
        ("single-request p50 latency / optimum int8", ratios["optimum-int8"]["latency_p50"], "<=", 0.7),
        ("peak RSS scoring the corpus, int8 (MB)", engine["peak_rss_mb"], "<=", 250.0),
        ("import + load + first result (s)", engine["cold_start_s"], "<=", 0.5),
        ("zero-shot texts/s / transformers, 4 labels", zs_ratio.get("4", float("nan")), ">=", 3.5),
        ("int8 top-1 agreement with torch on the corpus", engine["top1_agreement_with_torch"], ">=", bound),
    ]
    return {
        "systems": systems,
        "ratios": ratios,
        "zero_shot_ratio": zs_ratio,
        "zero_shot_top1_agreement": zs_agree,
        "ceiling_fraction_int8": fraction,
        "ceiling_fraction_fp32": fp32_fraction,
        "targets": [
            {"target": name, "value": value, "op": op, "bound": bound_, "met": _met(value, op, bound_)}
            for name, value, op, bound_ in targets
        ],
    }


def _met(value: float, op: str, bound: float) -> bool:
    return math.isfinite(value) and (value >= bound if op == ">=" else value <= bound)


def _f(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "n/a"


def markdown(data: dict[str, Any]) -> str:
    s = data["summary"]
    systems = s["systems"]
    order = list(NAMES)
    c = data["corpus"]
    lines = [
        f"Corpus: {c['sentences']} sentences of the CPython docs, {c['mean_tokens']:.1f} tokens on average; "
        f"model: {data['models']['shape']}; repetitions: {data['plan']['reps']} (medians); "
        f"load average {data['load_average_after'][0]:.1f} at the end.",
        "",
        "| metric | " + " | ".join(NAMES[k] for k in order) + " |",
        "|---|" + "---:|" * len(order),
    ]
    rows = [
        ("batch throughput (sentences/s)", "sentences_per_s", 1),
        ("best batch (tokens or rows)", "best_batch", 0),
        ("latency p50 (ms)", "latency_ms_p50", 1),
        ("latency p99 (ms)", "latency_ms_p99", 1),
        ("peak RSS scoring the corpus (MB)", "peak_rss_mb", 0),
        ("import + load + first result (s)", "cold_start_s", 2),
        ("  import (s)", "import_s", 2),
        ("top-1 agreement with torch", "top1_agreement_with_torch", 3),
    ]
    for title, key, digits in rows:
        lines.append(f"| {title} | " + " | ".join(_f(float(systems[k][key]), digits) for k in order) + " |")
    x = data["models"]["int8_export_figures"]
    r = x["recipe"]
    lines += [
        "",
        f"int8 export (engine int8): {r['int8_matmuls']} of {r['int8_matmuls'] + len(r['kept_fp32'])} MatMuls int8, "
        f"{len(r.get('fp16_embeddings', []))} embedding table(s) fp16, "
        f"top-1 agreement with fp32 {x['int8_top1_agreement']:.1%} (gate {x['int8_min_agreement']:.0%}), max score "
        f"diff {x['int8_max_score_diff']:.3f}. Every MatMul int8 (engine int8, all MatMuls): agreement "
        f"{x['all_matmuls_int8_top1_agreement']:.1%}, max score diff {x['all_matmuls_int8_max_score_diff']:.3f}.",
    ]
    lines += ["", "| engine int8 / peer | " + " | ".join(NAMES[p] for p in PEERS) + " |", "|---|---:|---:|---:|"]
    for key, title in (
        ("throughput", "throughput"),
        ("latency_p50", "latency p50"),
        ("latency_p99", "latency p99"),
        ("peak_rss", "peak RSS"),
        ("cold_start", "cold start"),
    ):
        lines.append(f"| {title} | " + " | ".join(_f(s["ratios"][p][key]) for p in PEERS) + " |")
    zs = data["zero_shot"]
    head = "| zero-shot (MiniLM-L6 NLI) | engine int8 texts/s | transformers texts/s | ratio | top-1 agreement |"
    lines += ["", head]
    lines.append("|---|---:|---:|---:|---:|")
    for count, ratio in s["zero_shot_ratio"].items():
        e, t = zs["engine-int8"][f"texts_per_s_{count}_labels"], zs["transformers"][f"texts_per_s_{count}_labels"]
        agree = s["zero_shot_top1_agreement"][count]
        lines.append(f"| {count} labels | {_f(e, 1)} | {_f(t, 1)} | {_f(ratio)} | {_f(agree, 3)} |")
    g, ceil = data["gemm"], data["ceiling"]
    lines += [
        "",
        f"Ceiling: onnxruntime reaches {g['int8_gmacs_per_s']:.1f} GMAC/s int8 (MatMulInteger) and "
        f"{g['fp32_gmacs_per_s']:.1f} GMAC/s fp32 (MatMul) at this model's layer sizes; the corpus needs "
        f"{ceil['macs_per_sentence'] / 1e9:.2f} GMAC per sentence in linear layers, so at most "
        f"{ceil['int8_sentences_per_s']:.1f} sentences/s int8 ({ceil['fp32_sentences_per_s']:.1f} fp32). "
        f"Engine: {s['ceiling_fraction_int8']:.0%} of the int8 ceiling, {s['ceiling_fraction_fp32']:.0%} of fp32.",
        "",
        "| target | measured | bound | met |",
        "|---|---:|---:|---|",
    ]
    for t in s["targets"]:
        met = "yes" if t["met"] else "NO"
        lines.append(f"| {t['target']} | {_f(t['value'], 3)} | {t['op']} {t['bound']} | {met} |")
    sc = data["scaling"]
    lines += [
        "",
        "Scaling (engine int8): ms per sequence by tokens: "
        + ", ".join(f"{k}: {_f(v, 1)}" for k, v in sc["ms_per_sequence_by_tokens"].items())
        + "; zero-shot ms per text by labels: "
        + ", ".join(f"{k}: {_f(v, 1)}" for k, v in sc["ms_per_text_by_labels"].items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def chart(data: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = data["summary"]["systems"]
    sc = data["scaling"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    names = list(NAMES)
    axes[0].bar([NAMES[n] for n in names], [systems[n]["sentences_per_s"] for n in names], color="tab:blue")
    axes[0].axhline(data["ceiling"]["int8_sentences_per_s"], color="tab:red", ls="--", label="int8 GEMM ceiling")
    axes[0].set_ylabel("sentences/s")
    axes[0].set_title("batch throughput")
    axes[0].tick_params(axis="x", rotation=30)
    axes[0].legend()
    lengths = sc["ms_per_sequence_by_tokens"]
    axes[1].loglog([int(k) for k in lengths], list(lengths.values()), "o-")
    axes[1].set_xlabel("tokens per sequence")
    axes[1].set_ylabel("ms per sequence")
    axes[1].set_title("engine int8: cost vs length")
    labels = sc["ms_per_text_by_labels"]
    axes[2].loglog([int(k) for k in labels], list(labels.values()), "o-")
    axes[2].set_xlabel("candidate labels")
    axes[2].set_ylabel("ms per text")
    axes[2].set_title("engine zero-shot: cost vs labels")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
