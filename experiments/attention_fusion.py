"""What fusing attention (engine/export/graph/fuse.py) buys: the same int8 recipe on the graph as optimum exports it
and on the graph with each attention core fused, and the same two choices at fp32; one fresh process per measurement,
the graphs taking turns.

    python -m experiments.attention_fusion [MODEL ...] [--rounds 3]

MODEL is a benchmark model (minilm, distilbert, nli; default minilm distilbert) whose checkpoint and optimum export
`python -m benchmarks` has cached. Every MatMul gets a static int8 scale calibrated on the model's calibration texts
(quantize.rewrite, as the export's first recipe). Each measurement scores the timing corpus in the engine's
256-token batches through a raw onnxruntime session with the engine's options, then 100 single sentences;
prints sentences/s, batch-1 p50, peak RSS (medians over rounds), and the largest logit difference between the
fused and unfused graphs on the held-out texts (fp32: the fusion's own error; int8: with its calibration).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import corpus
from benchmarks.models import int8_preset
from benchmarks.run import DEFAULT_CACHE

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, time, statistics
from pathlib import Path
import numpy as np
from engine.runtime.batching import DEFAULT_BATCH_TOKENS
from engine.runtime.session import OnnxSession
from engine.runtime.tokenization import TextTokenizer, Truncation
from engine.runtime import batching
spec = json.loads(sys.argv[1])
tok = TextTokenizer(Path(spec["tokenizer"]).read_text(), 512, spec["pad"])
session = OnnxSession(Path(spec["graph"]), spec["labels"])
texts = spec["texts"]
plan = list(batching.batches(tok.encode(texts, Truncation()), spec["pad"], DEFAULT_BATCH_TOKENS))
singles = [next(batching.batches(tok.encode([t], Truncation()), spec["pad"])) for t in texts[:100]]
for b in plan: session.run(b)
rates = []
for _ in range(3):
    start = time.perf_counter()
    for b in plan: session.run(b)
    rates.append(len(texts) / (time.perf_counter() - start))
lat = []
for b in singles:
    start = time.perf_counter(); session.run(b); lat.append(time.perf_counter() - start)
hwm = next(int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
print("RESULT " + json.dumps({"rate": statistics.median(rates), "p50_ms": statistics.median(lat) * 1000, "rss": hwm}))
"""


def graphs(model: str, root: Path, workdir: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """The four graphs of one model, written to `workdir`, and what the child processes need."""
    import onnx
    from transformers import AutoConfig

    from engine.export import quantize
    from engine.export.graph.fuse import fuse_attention

    optimum = root / f"onnx-{model}-{int8_preset()}"
    config = AutoConfig.from_pretrained(root / f"ckpt-{model}")
    manifest = json.loads((root / f"engine-fp32-{model}" / "manifest.json").read_text())
    data = json.loads((root / "data.json").read_text())
    nli = model == "nli"
    calibration = [tuple(p) for p in data["nli"]["calibration"]] if nli else data["classifier"]["calibration"]
    tokenizer = (optimum / "tokenizer.json").read_text()
    runtime = quantize.Runtime(tokenizer, manifest["max_length"], manifest["pad_token_id"], config.num_labels, nli)
    unfused = onnx.load(str(optimum / "model.onnx"))
    fused, layers = fuse_attention(unfused, config)
    if not layers:
        raise SystemExit(f"{model}: the fusion found no attention core to fuse")
    out: dict[str, Path] = {}
    for name, model_proto in (("unfused", unfused), ("fused", fused)):
        inputs = list(dict.fromkeys(t.input for t in quantize.targets(model_proto)))
        ranges = runtime.ranges(model_proto, inputs, calibration)
        for precision, graph in (("fp32", model_proto), ("int8", quantize.rewrite(model_proto, ranges=ranges))):
            out[f"{precision} {name}"] = workdir / f"{model}-{precision}-{name}.onnx"
            onnx.save(graph, str(out[f"{precision} {name}"]))
    held = [t for t, _ in (data["nli"]["test"] if nli else data["classifier"]["test"])][:300]
    diffs = {}
    for precision in ("fp32", "int8"):
        a = runtime.logits(out[f"{precision} unfused"].read_bytes(), held)
        b = runtime.logits(out[f"{precision} fused"].read_bytes(), held)
        diffs[precision] = float(abs(a - b).max())
    child = {"tokenizer": str(optimum / "tokenizer.json"), "pad": manifest["pad_token_id"], "labels": config.num_labels}
    return out, {"child": child, "diffs": diffs, "layers": layers}


def measure(graph: Path, child: dict[str, Any], texts: list[str]) -> dict[str, float]:
    spec = json.dumps({**child, "graph": str(graph), "texts": texts})
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, spec], capture_output=True, text=True, cwd=HERE.parent, env=env, check=True
    )
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return dict(json.loads(line[len("RESULT ") :]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=["minilm", "distilbert"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE / "full-trained")
    args = parser.parse_args(argv)
    from experiments.int8_levers import cpu

    print(cpu())
    print(f"load average before: {os.getloadavg()}\n", flush=True)
    texts = corpus.sample(512)
    print("| model | graph | sentences/s | batch-1 p50 ms | peak RSS MB | fused vs unfused, max logit diff |")
    print("|---|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="attention-fusion-") as tmp:
        for model in args.models:
            paths, info = graphs(model, args.cache, Path(tmp))
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
            for r in range(args.rounds):
                for name in list(paths)[:: -1 if r % 2 else 1]:
                    runs[name].append(measure(paths[name], info["child"], texts))
            for name, results in runs.items():
                rate, p50, rss = (statistics.median(x[k] for x in results) for k in ("rate", "p50_ms", "rss"))
                diff = f"{info['diffs'][name.split()[0]]:.1e}" if name.endswith(" fused") else ""
                print(f"| {model} | {name} | {rate:.0f} | {p50:.2f} | {rss:.0f} | {diff} |", flush=True)
    print(f"\nload average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
