"""The engine's run-time levers, one at a time, each in a fresh process: session options and token budget.

    python -m experiments.levers [--model DIR] [--texts N] [--rounds 3] [--only NAME ...]

For each variant: load time, sentences/s over the corpus, single-request p50, peak RSS (VmHWM) after scoring.
A variant changes one option of the engine's own onnxruntime session as it is created; everything else is the
engine's. "A second session" loads the model twice (one batch at a time and batches at once) and scores the
corpus with both before the default one is timed: the memory a process would need to keep both ways.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks import core_latency, corpus, run
from benchmarks.worker import peak_rss_mb

VARIANTS: dict[str, dict[str, Any]] = {
    "engine defaults": {},
    "spinning off": {"config": {"session.intra_op.allow_spinning": "0"}},
    "memory arena off": {"arena": False},
    "pre-packing off": {"config": {"session.disable_prepacking": "1"}},
    "graph opt: extended": {"level": "ORT_ENABLE_EXTENDED"},
    "graph opt: basic": {"level": "ORT_ENABLE_BASIC"},
    "1 intra-op thread": {"threads": 1},
    "memory patterns on (before this round)": {"pattern": True},
    "dynamic block base 4": {"config": {"session.dynamic_block_base": "4"}},
    "spin 10 ms": {"config": {"session.intra_op.spin_duration_us": "10000"}},
    "spin backoff 1": {"config": {"session.intra_op.spin_backoff_max": "1"}},
    "worker thread pinned to CPU 1": {"config": {"session.intra_op_thread_affinities": "2"}},
    "2 batches at once (1 thread each)": {"concurrent": 2},
    "2 batches at once on one 2-thread session": {"concurrent": 2, "threads": 2},
    "2 batches at once on one 2-thread session, spinning off": {
        "concurrent": 2,
        "threads": 2,
        "config": {"session.intra_op.allow_spinning": "0"},
    },
    "2 batches at once on one 2-thread session, spinning and arena off": {
        "concurrent": 2,
        "threads": 2,
        "arena": False,
        "config": {"session.intra_op.allow_spinning": "0"},
    },
    "2 batches at once (1 thread each), arena off": {"concurrent": 2, "arena": False},
    "a second session (2 batches at once) beside the default one": {"second": True},
    "batch_tokens 256": {"batch_tokens": 256},
    "batch_tokens 512": {"batch_tokens": 512},
    "batch_tokens 1024": {"batch_tokens": 1024},
    "batch_tokens 2048": {"batch_tokens": 2048},
    "batch_tokens 4096": {"batch_tokens": 4096},
    "batch_tokens 16384": {"batch_tokens": 16384},
}


def one(model: str, variant: dict[str, Any], n: int, reps: int) -> dict[str, Any]:
    import onnxruntime as ort

    import engine
    from engine.runtime import batching

    texts = corpus.sample(n)
    real = ort.InferenceSession

    def with_variant(graph: Any, opts: Any, **kwargs: Any) -> Any:
        """The engine's own session options with the variant's change applied: one session, loaded once."""
        opts.intra_op_num_threads = variant.get("threads", opts.intra_op_num_threads)
        if "level" in variant:
            opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, variant["level"])
        opts.enable_cpu_mem_arena = variant.get("arena", True)
        opts.enable_mem_pattern = variant.get("pattern", opts.enable_mem_pattern)
        for key, value in variant.get("config", {}).items():
            opts.add_session_config_entry(key, value)
        return real(graph, opts, **kwargs)

    ort.InferenceSession = with_variant  # type: ignore[misc]
    start = time.perf_counter()
    clf = engine.TextClassifier.load(
        model,
        batch_tokens=variant.get("batch_tokens", batching.DEFAULT_BATCH_TOKENS),
        concurrent_batches=variant.get("concurrent", 1),
    )
    clf(texts[:1])
    load_s = time.perf_counter() - start
    if variant.get("second"):  # what keeping both ways to spend the cores in one process would cost in memory
        ort.InferenceSession = real  # type: ignore[misc]
        engine.TextClassifier.load(model, concurrent_batches=2)(texts)
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        clf(texts)
        rates.append(n / (time.perf_counter() - t0))
    rss = peak_rss_mb()
    lat = []
    for t in texts[:50]:
        t0 = time.perf_counter()
        clf([t])
        lat.append((time.perf_counter() - t0) * 1000)
    return {
        "load_and_first_s": load_s,
        "sentences_per_s": statistics.median(rates),
        "latency_ms_p50": statistics.median(lat),
        "peak_rss_mb": rss,
    }


def _cell(result: dict[str, Any]) -> str:
    trip = result["trip"]
    return f"{result['sentences_per_s']:.0f}" + (f" ({trip[0]:.0f}/{trip[1]:.0f})" if None not in trip else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(run.DEFAULT_CACHE / "full-trained" / "engine-int8-distilbert"))
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(one(args.model, VARIANTS[args.child], args.texts, args.reps)))
        return 0
    from experiments.int8_levers import cpu

    print(cpu())
    names = args.only or list(VARIANTS)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(args.rounds):  # every variant once per round, the order alternating (see benchmarks/run.py)
        for name in names[:: -1 if r % 2 else 1]:
            cmd = [sys.executable, "-m", "experiments.levers", "--model", args.model, "--texts", str(args.texts)]
            before = core_latency.round_trip_ns()
            proc = subprocess.run([*cmd, "--reps", str(args.reps), "--child", name], capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if not line:
                raise SystemExit(f"{name} failed: {proc.stderr[-300:]}")
            results[name].append({**json.loads(line[-1][7:]), "trip": [before, core_latency.round_trip_ns()]})
    print(f"{len(names)} variants, {args.rounds} rounds in alternating order; medians over rounds")
    print("per round: sentences/s (the CPUs' round trip before/after in ns, benchmarks/core_latency.py)\n")
    print("| variant | load+first (s) | sentences/s | per round | p50 (ms) | peak RSS (MB) |")
    print("|---|---:|---:|---|---:|---:|")
    for name, rounds in results.items():
        med = {k: statistics.median(x[k] for x in rounds) for k in rounds[0] if k != "trip"}
        per_round = " · ".join(_cell(x) for x in rounds)
        print(
            f"| {name} | {med['load_and_first_s']:.2f} | {med['sentences_per_s']:.1f} "
            f"| {per_round} | {med['latency_ms_p50']:.1f} "
            f"| {med['peak_rss_mb']:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
