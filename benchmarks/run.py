"""Orchestration: build the models, run every measurement in its own process, write JSON + Markdown + PNG.

python -m benchmarks                 # the full run (about 15 minutes on 2 quiet cores once the models are cached)
python -m benchmarks --quick         # tiny models, a few dozen sentences, 1 repetition: checks the harness
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import core_latency, corpus, models, peers, report

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "offline-textclf-engine" / "benchmarks"
SYSTEMS = peers.ENGINES + peers.PEERS + peers.LEVERS


@dataclass(frozen=True)
class Plan:
    """Sizes of one run. The full plan measures for ~8 minutes on 2 cores; quick only checks that the harness works."""

    corpus_size: int  # timing sentences
    reps: int
    latency_texts: int
    held_out: int  # texts for agreement (never the timing corpus)
    independence_texts: int  # engine rows scored alone and batched
    cold_reps: int  # cold starts per system (the first is the measuring process's own)
    zs_label_counts: tuple[int, ...]
    zs_texts: tuple[int, ...]  # texts per label count
    batch_tokens: int
    jobs: int  # worker processes at once: 1 for honest timings
    rounds: int  # every system measured once per round, in alternating order; timings are medians over rounds


FULL = Plan(512, 3, 100, 600, 100, 3, (4, 20), (64, 16), 256, 1, 3)
# a busy shared machine: a quarter of the timing work, agreement still on 300 held-out texts
BUSY = Plan(128, 2, 30, 300, 50, 2, (4, 20), (16, 4), 256, 1, 2)
QUICK = Plan(32, 1, 6, 32, 8, 2, (2, 4), (4, 2), 256, 3, 1)


def run_worker(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its RESULT line."""
    fd, spec_file = tempfile.mkstemp(suffix=".json", dir=workdir)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(spec, fh)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    if spec.get("threads"):
        env["BENCH_THREADS"] = str(spec["threads"])  # every system's intra-op threads (benchmarks/peers.py)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.worker", spec_file],
        cwd=HERE.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {spec['job']} {spec.get('system', '')} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(lines[-1][len("RESULT ") :]))


PHASE_WAIT_S = 600.0  # --phase: the longest wait for the phase before one measurement; then it runs anyway


def in_parallel(
    specs: list[dict[str, Any]], workdir: Path, jobs: int, log: Any, phase: str | None = None
) -> list[dict[str, Any]]:
    """Run the specs, `jobs` at a time. With one at a time, the CPUs' round trip (benchmarks/core_latency.py) is
    taken before and after each, so that every figure says which of the machine's phases it ran in; with `phase`
    ("near" or "far"), each waits for that phase first."""

    def one(spec: dict[str, Any]) -> dict[str, Any]:
        before = None
        if jobs == 1:
            before = (
                core_latency.wait_for(phase, PHASE_WAIT_S, workdir)
                if phase
                else core_latency.round_trip_ns(cache=workdir)
            )
        start = time.perf_counter()
        out = run_worker(spec, workdir)
        took = time.perf_counter() - start
        out["core_round_trip_ns"] = [before, core_latency.round_trip_ns(cache=workdir) if jobs == 1 else None]
        what = f"{spec['job']} {spec.get('model', 'nli')} {spec['system']}"
        trip = "/".join(f"{x:.0f}" for x in out["core_round_trip_ns"] if x is not None)
        log(f"  {what:<40} {took:6.1f} s  load {os.getloadavg()[0]:.1f}" + (f"  round trip {trip} ns" if trip else ""))
        return out

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, specs))


def in_rounds(
    specs: list[dict[str, Any]], rounds: int, workdir: Path, jobs: int, log: Any, phase: str | None = None
) -> list[list[dict[str, Any]]]:
    """Each spec's results, one per round. The speed of a shared machine drifts by tens of percent within minutes
    (measured here: the same worker 1.7x apart an hour later), so one pass in a fixed order can hand a whole
    drift to whichever system ran in the slow minutes. Rounds alternate the order (A B C, C B A, ...) so that a
    steady drift falls on every system alike, and the medians over rounds drop a burst."""
    out: list[list[dict[str, Any]]] = [[] for _ in specs]
    for r in range(rounds):
        order = list(range(len(specs)))[:: -1 if r % 2 else 1]
        log(f" round {r + 1}/{rounds}")
        for i, res in zip(order, in_parallel([specs[i] for i in order], workdir, jobs, log, phase)):
            out[i].append(res)
    return out


def merge_classify(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One system's rounds as one result: labels from the first, timings the median over rounds (each round's
    own figure the median of its repetitions), peak RSS the highest."""
    merged = dict(results[0])
    for key in ("sentences_per_s", "latency_ms_p50", "latency_ms_p99", "in_domain_per_s", "in_domain_p50"):
        merged[key] = statistics.median(r[key] for r in results)
        merged[f"{key}_rounds"] = [r[key] for r in results]
    merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    merged["core_round_trip_ns_rounds"] = [r.get("core_round_trip_ns") for r in results]
    return merged


def merge_zero_shot(results: list[dict[str, Any]]) -> dict[str, Any]:
    merged = dict(results[0])
    merged["by_labels"] = {
        count: {**first, "texts_per_s": statistics.median(r["by_labels"][count]["texts_per_s"] for r in results)}
        | {"texts_per_s_rounds": [r["by_labels"][count]["texts_per_s"] for r in results]}
        for count, first in results[0]["by_labels"].items()
    }
    merged["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    merged["core_round_trip_ns_rounds"] = [r.get("core_round_trip_ns") for r in results]
    return merged


def mean_tokens(tokenizer_json: Path, texts: Sequence[str]) -> float:
    """Mean tokens per sentence as the engine feeds them (no padding, window 512)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    tok.enable_truncation(512)
    return sum(len(e.ids) for e in tok.encode_batch(list(texts))) / len(texts)


def fidelity(art: models.Artifacts, workdir: Path, log: Any, threads: int | None) -> dict[str, Any]:
    """Every trained classifier's held-out texts through torch fp32, the default int8 export and the calibrated
    one (no timing): agreement with its lower bound, beside the gates' own figures (benchmarks/report.py)."""
    data = json.loads(Path(art.data_file).read_text())
    specs = []
    out: dict[str, Any] = {}
    for m in (m for m in models.FIDELITY_MODELS if m in art.figures):
        fig = art.figures[m]
        held = models.held_out(data, m)
        texts = [t for t, _ in held]
        out[m] = {"labels": [y for _, y in held]}
        paths = {"transformers": fig["checkpoint"], **{f"engine-{v}": p for v, p in fig["exports"].items()}}
        base = {"job": "fidelity", "model": m, "held_out": texts, "batch_tokens": 256, "threads": threads}
        specs += [{**base, "system": system, "path": path} for system, path in paths.items()]
    log(f"held-out agreement of the default and calibrated int8 exports ({len(specs)} runs, no timing)")
    for spec, res in zip(specs, in_parallel(specs, workdir, 1, log)):
        out[spec["model"]][spec["system"]] = res["held_out_labels"]
        out[spec["model"]].setdefault("rescored_in_fp32", {})[spec["system"]] = res.get("rescored_in_fp32", 0)
    return out


def measure(
    plan: Plan,
    art: models.Artifacts,
    workdir: Path,
    log: Any,
    classifiers: tuple[str, ...],
    phase: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    texts = corpus.sample(plan.corpus_size)
    corpus_file = workdir / "corpus.json"
    corpus_file.write_text(json.dumps(texts), encoding="utf-8")
    data = json.loads(Path(art.data_file).read_text())
    held_out = data["classifier"]["test"][: plan.held_out]
    base = {"corpus_file": str(corpus_file), "reps": plan.reps, "batch_tokens": plan.batch_tokens, "threads": threads}
    # one thread: "batches at once" is one batch, the same system as engine-int8
    systems = [s for s in SYSTEMS if not (threads == 1 and s == "engine-int8-concurrent")]
    specs = [
        {
            **base,
            "job": "classify",
            "model": m,
            "system": s,
            "path": art.systems[m][s],
            "latency_texts": plan.latency_texts,
            "held_out": [t for t, _ in held_out],
            "independence_texts": plan.independence_texts,
        }
        for m in classifiers
        for s in systems
    ]
    log(f"throughput, batch-1 latency, held-out agreement (one process per model and system, {plan.rounds} rounds)")
    results = in_rounds(specs, plan.rounds, workdir, plan.jobs, log, phase)
    classify = {m: {} for m in classifiers}  # type: dict[str, dict[str, Any]]
    cold = {m: {} for m in classifiers}  # type: dict[str, dict[str, list[float]]]
    for spec, rounds in zip(specs, results):
        classify[spec["model"]][spec["system"]] = merge_classify(rounds)
        cold[spec["model"]][spec["system"]] = [r["cold_start_s"] for r in rounds]

    log("cold start: import + load + first result, fresh processes")
    cold_specs = [{**spec, "cold_only": True} for _ in range(plan.cold_reps - plan.rounds) for spec in specs]
    for spec, res in zip(cold_specs, in_parallel(cold_specs, workdir, plan.jobs, log)):
        cold[spec["model"]][spec["system"]].append(res["cold_start_s"])

    zero_shot: dict[str, Any] = {}
    if "nli" in art.systems:
        nli = data["nli"]
        topics = nli["topics"]
        zs_specs = [
            {
                **base,
                "job": "zero_shot",
                "system": s,
                "path": art.systems["nli"][s],
                "template": nli["template"],
                "texts": [t for t, _ in nli["test"]],
                "label_sets": {str(k): topics[:k] for k in plan.zs_label_counts},
                "texts_per_count": {str(k): n for k, n in zip(plan.zs_label_counts, plan.zs_texts)},
            }
            for s in systems
        ]
        log("zero-shot texts/s with the NLI model")
        zero_shot = dict(
            zip(systems, map(merge_zero_shot, in_rounds(zs_specs, plan.rounds, workdir, plan.jobs, log, phase)))
        )
    disk = {m: {s: peers.disk_mb(s, art.systems[m][s]) for s in systems} for m in art.systems}
    tokenizer_json = Path(art.systems[classifiers[0]]["engine-int8"]) / "tokenizer.json"  # the engine's, for counts
    return {
        "plan": asdict(plan),
        "corpus": {
            "sentences": len(texts),
            "mean_tokens": mean_tokens(tokenizer_json, texts),
            "source": "pydoc_data.topics (CPython docs)",
        },
        "held_out": {
            "texts": len(held_out),
            "labels": [y for _, y in held_out],
            "source": data["source"],
            "mean_tokens": mean_tokens(tokenizer_json, [t for t, _ in held_out]),
        },
        "models": art.figures,
        "classify": classify,
        "cold": cold,
        "zero_shot": zero_shot,
        "disk_mb": disk,
        "threads": threads,
        "fidelity": fidelity(art, workdir, log, threads),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models, a few dozen sentences, 1 repetition")
    parser.add_argument(
        "--stress", action="store_true", help="also export the random near-tie model (the gate's stress case)"
    )
    parser.add_argument("--name", help="results file stem (default: full or quick)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="directory for <name>.json/.md/.png")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where checkpoints and exports are kept")
    parser.add_argument("--models", nargs="+", choices=models.MODELS, default=list(models.MODELS), help="classifiers")
    parser.add_argument("--busy", action="store_true", help="the full models, a quarter of the timing work")
    parser.add_argument(
        "--no-zero-shot", action="store_true", help="leave out the NLI model and the zero-shot measurements"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="intra-op threads for every system (the engine's threads=); 1 also pins each worker to one CPU, "
        "as on a one-core device (default: one per core)",
    )
    parser.add_argument(
        "--phase",
        choices=("near", "far"),
        help="before each measurement, wait for this phase of the CPUs' round trip (benchmarks/core_latency.py)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else BUSY if args.busy else FULL
    name = args.name or ("quick" if args.quick else "full") + (f"-threads{args.threads}" if args.threads else "")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    start = time.perf_counter()
    cpu = models.cpu_flags()
    log(f"CPU: {cpu['model']}, {', '.join(f for f, on in cpu['flags'].items() if on)}; {os.cpu_count()} cores")
    log(f"load average before the run: {os.getloadavg()}")
    classifiers = tuple(args.models)
    art = models.build_all(
        args.cache, args.quick, log, stress=args.stress, classifiers=classifiers, zero_shot=not args.no_zero_shot
    )
    built = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        data = measure(plan, art, Path(tmp), log, classifiers, args.phase, args.threads)
    data["phase_requested"] = args.phase
    data["cpu"] = {**cpu, "cores": len(os.sched_getaffinity(0))}
    data["load_average_after"] = os.getloadavg()
    data["build_s"] = built - start
    data["measure_s"] = time.perf_counter() - built
    data["summary"] = report.summarise(data)
    table = report.markdown(data)
    (args.out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (args.out / f"{name}.md").write_text(table, encoding="utf-8")
    report.chart(data, args.out / f"{name}.png")
    print(table)
    log(f"wrote {args.out / name}.json/.md/.png; build {data['build_s']:.0f} s, measurements {data['measure_s']:.0f} s")
    return 0
