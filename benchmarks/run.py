"""Orchestration: build the models, run every measurement in its own process, write JSON + Markdown + PNG.

python -m benchmarks                 # the full run (about 20 minutes on 2 quiet cores)
python -m benchmarks --quick         # tiny models, a few dozen sentences, 1 repetition: checks the harness
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import corpus, models, report

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "offline-textclf-engine" / "benchmarks"
SYSTEMS = ("engine-int8", "engine-fp32", "engine-int8-all", "transformers", "optimum-fp32", "optimum-int8")
# zero-shot label pool: topics a user might pick, one hypothesis each ("This example is {}.")
LABEL_POOL = (
    "politics sports technology science health business finance travel food music art history education law "
    "religion weather fashion film television books games cars housing jobs crime war peace family children "
    "animals nature energy climate space medicine insurance banking shopping advertising marketing software "
    "hardware security privacy networking databases programming mathematics physics chemistry biology geology "
    "astronomy linguistics philosophy psychology sociology economics agriculture transport aviation shipping "
    "tourism hotels restaurants"
).split()


@dataclass(frozen=True)
class Plan:
    """Sizes of one run. The full plan fits in ~25 minutes on 2 cores; quick only checks that the harness works."""

    corpus_size: int
    sweep_texts: int
    engine_batches: tuple[int, ...]  # token budgets
    pipeline_batches: tuple[int, ...]  # batch_size of the transformers pipelines
    reps: int
    latency_texts: int
    zs_texts: dict[str, int]  # label count -> texts
    zs_engine_batches: tuple[int, ...]
    zs_pipeline_batches: tuple[int, ...]
    lengths: tuple[int, ...]
    tokens_per_point: int
    label_counts: tuple[int, ...]
    scaling_zs_texts: int
    gemm_rows: int
    jobs: int  # worker processes at once: 1 for honest timings


FULL = Plan(
    corpus_size=1000,
    sweep_texts=200,
    engine_batches=(256, 512, 1024, 2048),
    pipeline_batches=(1, 8, 32),
    reps=3,
    latency_texts=100,
    zs_texts={"4": 100, "20": 25},
    zs_engine_batches=(256, 1024),
    zs_pipeline_batches=(1, 16),
    lengths=(16, 32, 64, 128, 256, 512),
    tokens_per_point=4096,
    label_counts=(1, 2, 4, 8, 16, 32, 64),
    scaling_zs_texts=8,
    gemm_rows=2048,
    jobs=1,
)
QUICK = Plan(
    corpus_size=32,
    sweep_texts=16,
    engine_batches=(256, 1024),
    pipeline_batches=(1, 8),
    reps=1,
    latency_texts=6,
    zs_texts={"4": 4, "20": 2},
    zs_engine_batches=(256,),
    zs_pipeline_batches=(8,),
    lengths=(16, 64),
    tokens_per_point=128,
    label_counts=(1, 4),
    scaling_zs_texts=2,
    gemm_rows=64,
    jobs=3,
)


def run_worker(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its RESULT line."""
    fd, spec_file = tempfile.mkstemp(suffix=".json", dir=workdir)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(spec, fh)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
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


def in_parallel(specs: list[dict[str, Any]], workdir: Path, jobs: int, log: Any) -> list[dict[str, Any]]:
    def one(spec: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        out = run_worker(spec, workdir)
        log(f"  {spec['job']:<10} {spec.get('system', ''):<14} {time.perf_counter() - start:6.1f} s")
        return out

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, specs))


def mean_tokens(tokenizer_json: Path, texts: Sequence[str]) -> float:
    """Mean tokens per sentence as the engine feeds them (no padding, window 512)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    tok.enable_truncation(512)
    return sum(len(e.ids) for e in tok.encode_batch(list(texts))) / len(texts)


def measure(plan: Plan, art: models.Artifacts, workdir: Path, log: Any) -> dict[str, Any]:
    texts = corpus.sample(plan.corpus_size)
    corpus_file = workdir / "corpus.json"
    corpus_file.write_text(json.dumps(texts), encoding="utf-8")
    paths = {
        "engine-int8": art.engine_int8,
        "engine-fp32": art.engine_fp32,
        "engine-int8-all": art.engine_int8_all,
        "transformers": art.classifier,
        "optimum-fp32": art.optimum_fp32,
        "optimum-int8": art.optimum_int8,
    }
    base = {"corpus_file": str(corpus_file), "reps": plan.reps}

    def batches(system: str) -> tuple[int, ...]:
        return plan.engine_batches if system.startswith("engine") else plan.pipeline_batches

    throughput_specs = [
        {
            **base,
            "job": "throughput",
            "system": s,
            "path": paths[s],
            "batches": list(batches(s)),
            "sweep_texts": plan.sweep_texts,
            "latency_texts": plan.latency_texts,
            "latency_batch": 256 if s.startswith("engine") else 1,
        }
        for s in SYSTEMS
    ]
    label_sets = {count: list(LABEL_POOL[: int(count)]) for count in plan.zs_texts}
    zs_specs = [
        {
            **base,
            "job": "zero_shot",
            "system": system,
            "path": path,
            "label_sets": label_sets,
            "texts_per_count": plan.zs_texts,
            "sweep_texts": min(plan.zs_texts.values()),
            "batches": list(batches_),
            "return_labels": True,
        }
        for system, path, batches_ in (
            ("engine-int8", art.engine_nli_int8, plan.zs_engine_batches),
            ("transformers", art.nli, plan.zs_pipeline_batches),
        )
    ]
    scaling_spec = {
        **base,
        "job": "scaling",
        "path": art.engine_int8,
        "nli_path": art.engine_nli_int8,
        "lengths": list(plan.lengths),
        "tokens_per_point": plan.tokens_per_point,
        "label_counts": list(plan.label_counts),
        "label_pool": list(LABEL_POOL),
        "zs_texts": plan.scaling_zs_texts,
    }
    shape = art.shape
    gemm_spec = {
        **base,
        "job": "gemm",
        "dim": shape.dim,
        "ffn": shape.ffn,
        "rows": plan.gemm_rows,
        "threads": _cores(),
        "reps": max(3, plan.reps),
    }
    log("throughput, latency, zero-shot, scaling and GEMM ceiling (one process each)")
    results = in_parallel([gemm_spec, *throughput_specs, *zs_specs, scaling_spec], workdir, plan.jobs, log)
    gemm_result, tp = results[0], dict(zip(SYSTEMS, results[1 : 1 + len(SYSTEMS)]))
    zs = {"engine-int8": results[1 + len(SYSTEMS)], "transformers": results[2 + len(SYSTEMS)]}
    scaling_result = results[-1]

    log("cold start and peak RSS (fresh processes; the first also scores the corpus at the best batch size)")
    cold_specs = [
        {
            **base,
            "job": "cold",
            "system": s,
            "path": paths[s],
            "batch": tp[s]["best_batch"],
            "score_corpus": rep == 0,
        }
        for rep in range(plan.reps)
        for s in SYSTEMS
    ]
    cold_results = in_parallel(cold_specs, workdir, plan.jobs, log)
    cold: dict[str, list[dict[str, Any]]] = {s: [] for s in SYSTEMS}
    for spec, res in zip(cold_specs, cold_results):
        cold[spec["system"]].append(res)

    tokens = mean_tokens(Path(art.engine_int8) / "tokenizer.json", texts)
    return {
        "plan": asdict(plan),
        "corpus": {"sentences": len(texts), "mean_tokens": tokens, "source": "pydoc_data.topics (CPython docs)"},
        "models": art.to_json(),
        "gemm": gemm_result,
        "throughput": tp,
        "cold": cold,
        "zero_shot": zs,
        "scaling": scaling_result,
        "ceiling": {
            "macs_per_sentence": tokens * shape.per_token_macs,
            "int8_sentences_per_s": gemm_result["int8_gmacs_per_s"] * 1e9 / (tokens * shape.per_token_macs),
            "fp32_sentences_per_s": gemm_result["fp32_gmacs_per_s"] * 1e9 / (tokens * shape.per_token_macs),
        },
    }


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models, a few dozen sentences, 1 repetition")
    parser.add_argument("--name", help="results file stem (default: full or quick)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="directory for <name>.json/.md/.png")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where checkpoints and exports are kept")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    name = args.name or ("quick" if args.quick else "full")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    start = time.perf_counter()
    log(f"load average before the run: {os.getloadavg()}")
    art = models.build_all(args.cache, args.quick, log)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        data = measure(plan, art, Path(tmp), log)
    data["load_average_after"] = os.getloadavg()
    data["wall_s"] = time.perf_counter() - start
    summary = report.summarise(data)
    data["summary"] = summary
    table = report.markdown(data)
    (args.out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (args.out / f"{name}.md").write_text(table, encoding="utf-8")
    report.chart(data, args.out / f"{name}.png")
    print(table)
    log(f"wrote {args.out / name}.json/.md/.png in {data['wall_s']:.0f} s")
    return 0
