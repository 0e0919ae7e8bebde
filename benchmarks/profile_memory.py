"""Where the memory goes: resident size (VmRSS) and its high-water mark (VmHWM) after each step of loading a model
and scoring the corpus, in a fresh process per model (Linux).

    .venv/bin/python -m benchmarks.profile_memory [MODEL_DIR ...] [--texts 1000]

Steps: import engine; read, hash and scan the files (the bytes are released); create the onnxruntime session
from the graph's path (parse, optimise, pre-pack; the weights file is memory-mapped, so its pages count as they
are touched); free it and load the engine's way; score the corpus with the
engine's default batching.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from .run import DEFAULT_CACHE

CHILD = r"""
import json, sys
def mem():
    lines = [l for l in open('/proc/self/status') if l.startswith(('VmRSS', 'VmHWM'))]
    f = {l.split(':')[0]: int(l.split()[1]) // 1024 for l in lines}
    return f['VmRSS'], f['VmHWM']
steps = [('start',) + mem()]
import engine
from engine import TextClassifier
from engine.model import files as model_files
from engine.runtime.session import OnnxSession
steps.append(('import engine',) + mem())
files = model_files.load(sys.argv[1])
steps.append((f'files read + verified ({files.onnx_identity[2] >> 20} MB graph, bytes released)',) + mem())
session = OnnxSession(files.onnx_path, files.info.num_labels, None)
steps.append(('onnxruntime session created',) + mem())
del files, session
clf = TextClassifier.load(sys.argv[1])
steps.append(('engine TextClassifier.load (first session freed)',) + mem())
texts = json.loads(sys.stdin.read())
clf(texts)
steps.append((f'scored {len(texts)} sentences',) + mem())
print(json.dumps(steps))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    full = DEFAULT_CACHE / "full"
    parser.add_argument("models", nargs="*", type=Path, default=[full / "engine-int8", full / "engine-int8-all"])
    parser.add_argument("--texts", type=int, default=1000)
    args = parser.parse_args(argv)
    from . import corpus

    texts = json.dumps(corpus.sample(args.texts))
    for model in args.models:
        out = subprocess.run([sys.executable, "-c", CHILD, str(model)], input=texts, capture_output=True, text=True)
        if out.returncode:
            print(f"{model}: failed\n{out.stderr[-500:]}")
            continue
        print(f"\n{model}\n| step | RSS (MB) | peak so far (MB) |\n|---|---:|---:|")
        for name, rss, hwm in json.loads(out.stdout.strip().splitlines()[-1]):
            print(f"| {name} | {rss} | {hwm} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
