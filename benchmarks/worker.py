"""One measurement in a fresh process: `python -m benchmarks.worker SPEC.json` prints `RESULT {json}` last.

Each system runs in its own process so that imports, arenas and thread pools of one cannot help or hurt another,
cold start is really cold, and the peak RSS is that system's alone.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

START = time.perf_counter()  # before any import of the system's runtime: cold start counts the imports


def peak_rss_mb() -> float:
    """Peak resident memory of this process: VmHWM, the high-water mark of this address space.

    ru_maxrss would do, but Linux carries it over fork + exec, so a worker started by a parent that has torch
    loaded would report the parent's peak; VmHWM starts afresh at exec.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _percentile(sorted_values: list[float], q: float) -> float:
    idx = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[idx]


def classify(spec: dict[str, Any]) -> dict[str, Any]:
    """Cold start (import + load + first result), then throughput over the timing corpus (median of reps),
    batch-1 latency, labels of the held-out texts (agreement) and, for the engine, rows alone vs batched."""
    from . import peers

    texts: list[str] = json.loads(Path(spec["corpus_file"]).read_text(encoding="utf-8"))
    system = peers.load(spec["system"], spec["path"], spec["batch_tokens"])
    loaded = time.perf_counter()
    system.predict(texts[:1])
    first = time.perf_counter()
    out: dict[str, Any] = {"cold_start_s": first - START, "load_s": loaded - START, "first_result_s": first - loaded}
    if spec.get("cold_only"):
        return out
    system.predict(texts[:16])  # warm-up: first-run allocations, lazy initialisation
    before = system.rescored()
    rates = [len(texts) / timed(lambda: system.predict(texts))[0] for _ in range(spec["reps"])]
    out["corpus_rescored_in_fp32"] = (system.rescored() - before) // spec["reps"]  # timing corpus rows, per pass
    lat_texts = texts[: spec["latency_texts"]]
    latencies = sorted(timed(lambda t=t: system.predict([t]))[0] * 1000 for t in lat_texts)
    held_out: list[str] = spec["held_out"]
    # the same timings on the model's own held-out texts: a user's texts are of its domain, where an int8 export's
    # near-ties (re-scored in fp32) are fewer than on the out-of-domain documentation sentences
    before = system.rescored()
    in_rates = [len(held_out) / timed(lambda: system.predict(held_out))[0] for _ in range(spec["reps"])]
    out["in_domain_rescored_in_fp32"] = (system.rescored() - before) // spec["reps"]
    in_latencies = sorted(timed(lambda t=t: system.predict([t]))[0] * 1000 for t in held_out[: len(lat_texts)])
    labels, scores = system.predict(held_out)
    out.update(
        sentences_per_s=statistics.median(rates),
        sentences_per_s_reps=rates,
        latency_ms_p50=_percentile(latencies, 50),
        latency_ms_p99=_percentile(latencies, 99),
        in_domain_per_s=statistics.median(in_rates),
        in_domain_p50=_percentile(in_latencies, 50),
        held_out_labels=labels,
    )
    if spec["system"].startswith("engine"):
        alone = [system.predict([t]) for t in held_out[: spec["independence_texts"]]]
        out["rows_independent"] = {
            "texts": len(alone),
            "same_label": all(a[0][0] == labels[i] for i, a in enumerate(alone)),
            "max_score_diff": max(abs(float(a[1][0]) - float(scores[i])) for i, a in enumerate(alone)),
        }
    if spec["system"].startswith("openvino"):
        out["openvino"] = dict(peers.OPENVINO_INFO)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def zero_shot(spec: dict[str, Any]) -> dict[str, Any]:
    """texts/s for each label count (median of reps) and each text's best label."""
    from . import peers

    system = peers.load(spec["system"], spec["path"], spec["batch_tokens"], zero_shot=True)
    template = spec["template"]
    texts: list[str] = spec["texts"]
    out: dict[str, Any] = {}
    for count, labels in spec["label_sets"].items():
        n = spec["texts_per_count"][count]
        system.zero_shot(texts[:2], labels, template)  # warm-up
        rates = [
            n / timed(lambda n=n, labels=labels: system.zero_shot(texts[:n], labels, template))[0]
            for _ in range(spec["reps"])
        ]
        out[count] = {
            "texts_per_s": statistics.median(rates),
            "texts_per_s_reps": rates,
            "best_labels": system.zero_shot(texts[:n], labels, template),
        }
    return {"by_labels": out, "peak_rss_mb": peak_rss_mb()}


def fidelity(spec: dict[str, Any]) -> dict[str, Any]:
    """Top labels of every held-out text for one system (no timing): the fidelity table's agreement."""
    from . import peers

    system = peers.load(spec["system"], spec["path"], spec["batch_tokens"])
    labels, _ = system.predict(spec["held_out"])
    return {"held_out_labels": labels, "rescored_in_fp32": system.rescored()}


JOBS = {"classify": classify, "zero_shot": zero_shot, "fidelity": fidelity}


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    if spec.get("threads") == 1:  # --threads 1: a one-core device, every thread of the process on one CPU
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    result = JOBS[spec["job"]](spec)
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
