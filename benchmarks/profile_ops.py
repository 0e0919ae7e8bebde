"""Where the time goes inside onnxruntime: time per operator type while a model scores the benchmark corpus.

    .venv/bin/python -m benchmarks.profile_ops MODEL_DIR [MODEL_DIR ...] [--texts 300] [--batch-tokens 8192]
        [--phase near|far]

For each model directory (an engine export; default: the full benchmark's engine int8 exports), the corpus is
tokenized and batched exactly as the engine does, run once to warm up, then timed, both with onnxruntime's profiler on.
Prints, per model, each operator type's kernel time per pass and its share, with the CPUs' round trip before and
after (`core_latency`). `--phase` waits for one placement of the two CPUs first, so that the same command run in
each phase shows which operators pay for a second core complex.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import core_latency, corpus
from .run import DEFAULT_CACHE, PHASE_WAIT_S


def profile(model_dir: Path, texts: list[str], batch_tokens: int, threads: int | None) -> dict[str, Any]:
    import tempfile

    import onnxruntime as ort

    from engine import TextClassifier
    from engine.runtime import batching
    from engine.runtime.tokenization import Truncation

    clf = TextClassifier.load(model_dir, threads=threads, batch_tokens=batch_tokens)
    encoded = clf.model.tokenizer.encode(texts, Truncation())
    info = clf.model.info
    plan = list(batching.batches(encoded, info.pad_id, batch_tokens, info.pooled_token_id))
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        opts.intra_op_num_threads = clf.model.session.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(model_dir / "model.onnx"), opts, ["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}

        def run_all() -> float:
            start = time.perf_counter()
            for b in plan:
                session.run(None, {n: getattr(b, n) for n in names})
            return time.perf_counter() - start

        run_all()  # warm-up; profiled too, which only adds a like-for-like pass to the shares
        wall = run_all()
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
    total = sum(by_op.values())
    return {
        "model": str(model_dir),
        "sentences_per_s": len(texts) / wall,
        "kernel_share": {op: us / total for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])},
        "kernel_ms_two_passes": total / 1000,
        "wall_ms_one_pass": wall * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    full = DEFAULT_CACHE / "full"
    parser.add_argument("models", nargs="*", type=Path, default=[full / "engine-int8-all", full / "engine-fp32"])
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--batch-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--phase", choices=["near", "far"], default=None)
    args = parser.parse_args(argv)
    texts = corpus.sample(args.texts)
    for model in args.models:
        before = core_latency.wait_for(args.phase, PHASE_WAIT_S) if args.phase else core_latency.round_trip_ns()
        r = profile(model, texts, args.batch_tokens, args.threads)
        after = core_latency.round_trip_ns()
        per_pass = r["kernel_ms_two_passes"] / 2
        print(
            f"\n{r['model']}: {r['sentences_per_s']:.1f} sentences/s with profiling on, kernels {per_pass:.0f} ms "
            f"of {r['wall_ms_one_pass']:.0f} ms per pass; round trip {_ns(before)} / {_ns(after)} ns"
        )
        print("| operator | kernel ms per pass | share of kernel time |\n|---|---:|---:|")
        for op, share in list(r["kernel_share"].items())[:12]:
            print(f"| {op} | {share * per_pass:.1f} | {share:.1%} |")
    return 0


def _ns(ns: float | None) -> str:
    return "-" if ns is None else f"{ns:.0f}"


if __name__ == "__main__":
    raise SystemExit(main())
