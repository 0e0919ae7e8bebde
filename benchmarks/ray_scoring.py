"""Rows/s of `engine score` on one machine against the same job on a local Ray cluster with 1 and 2 actors.

    .venv/bin/python benchmarks/ray_scoring.py [--rows 20000] [--model minilm|tiny] [--precision int8|fp32]

Same generated JSON Lines file for every run (sentences of CPython's documentation, as benchmarks/score_file.py),
same model and options. Each configuration runs the whole job, wall clock, from the call to the finished output:
local = engine.score_file (model load included), Ray = engine.jobs.ray.run_job (model check on the driver, actor
start and model load in each actor, read, score, write, rename). Runs are interleaved and repeated; the best of
the repeats is kept (the machine is shared; the load average is printed beside the figures). A 1-row job of each
kind gives the fixed cost of a job, so the marginal cost per row is (wall(N) - wall(1)) / N.

The Ray cluster gets one logical CPU more than the actors use (engine.jobs.ray keeps one free for reading and
writing); each actor reserves 1 CPU and runs onnxruntime with 1 thread. Needs the `ray` and `export` extras.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.score_file import model_dir, sentences  # noqa: E402


def write_input(path: Path, rows: int) -> Path:
    texts = sentences()
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            f.write(json.dumps({"id": f"doc-{i}", "text": texts[i % len(texts)]}) + "\n")
    return path


def run(kind: str, model: Path, inp: Path, workdir: Path, threads: int, actors: int) -> float:
    from engine import ScoringOptions, score_file
    from engine.jobs.ray import run_job

    out = workdir / f"out-{kind}.jsonl"
    for stale in (out, out.with_name(out.name + ".partial"), out.with_name(out.name + ".errors")):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    opts = ScoringOptions.parse(id_column="id")
    start = time.monotonic()
    if kind.startswith("local"):
        summary: Any = score_file(model, inp, out, opts, threads=threads, restart=True)
    else:
        summary = run_job(model, str(inp), str(out), opts, actors=actors, cpus_per_actor=threads)
    wall = time.monotonic() - start
    if summary.errors:
        raise SystemExit(f"{kind}: {summary.errors} rows failed")
    return wall


CONFIGS = {  # name: (threads per worker, actors)
    "local, 1 thread": (1, 0),
    "local, 2 threads": (2, 0),
    "ray, 1 actor x 1 thread": (1, 1),
    "ray, 2 actors x 1 thread": (1, 2),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    p.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/engine-ray-bench"))
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = model_dir(args.workdir, args.model, args.precision)
    big = write_input(args.workdir / f"input-{args.rows}.jsonl", args.rows)
    one = write_input(args.workdir / "input-1.jsonl", 1)

    import ray

    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    walls: dict[str, dict[str, list[float]]] = {name: {"1": [], "n": []} for name in CONFIGS}
    loads = []
    for _ in range(args.repeats):  # interleaved: every configuration once per round
        for name, (threads, actors) in CONFIGS.items():
            kind = name.split(",")[0]
            walls[name]["1"].append(run(kind, model, one, args.workdir, threads, actors))
            walls[name]["n"].append(run(kind, model, big, args.workdir, threads, actors))
            loads.append(os.getloadavg()[0])
    ray.shutdown()

    results = []
    for name, w in walls.items():
        fixed, total = min(w["1"]), min(w["n"])
        results.append(
            {
                "config": name,
                "rows_per_s": round(args.rows / total),
                "wall_s": round(total, 2),
                "fixed_job_s": round(fixed, 2),
                "marginal_us_per_row": round((total - fixed) / args.rows * 1e6),
            }
        )
    report = {
        "rows": args.rows,
        "model": f"{args.model} ({args.precision})",
        "cpus": os.cpu_count(),
        "load_average_1min": [round(x, 1) for x in loads],
        "results": results,
    }
    print(json.dumps(report, indent=1))
    print("\n| configuration | rows/s | wall s | fixed cost of a job s | marginal us/row |\n|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['config']} | {r['rows_per_s']} | {r['wall_s']} | {r['fixed_job_s']} | {r['marginal_us_per_row']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
