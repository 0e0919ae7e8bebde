"""Does int8's agreement on the built-in texts predict it on a trained model's own domain? By fp32 margin.

    python -m experiments.gate_domains GRAPHS_DIR DATA_JSON [--model minilm|fortunes]

GRAPHS_DIR holds an export's working files (fp32/model-fused.onnx, fp32/tokenizer.json, int8-*.onnx candidates);
DATA_JSON is the harness's data.json (held-out test texts). For each candidate: top-1 agreement with fp32 on the
built-in verification texts and on the held-out in-domain texts, and the flip rate by the fp32 decision's margin
(top-1 minus top-2 softmax probability), which is what differs between the two sets of texts.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from engine.export.quantize.calibrate import Runtime, margins
from engine.export.verify import VERIFICATION_TEXTS

BINS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.7, 1.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("graphs", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--model", default="minilm")
    args = parser.parse_args()
    config = json.loads((args.graphs / "fp32" / "config.json").read_text())
    tok = (args.graphs / "fp32" / "tokenizer.json").read_text()
    runtime = Runtime(tok, 512, int(config.get("pad_token_id") or 0), len(config["id2label"]))
    builtin = [t for t in VERIFICATION_TEXTS.read_text(encoding="utf-8").splitlines() if t and t[0] != "#"]
    data = json.loads(args.data.read_text())
    domain = [t for t, _ in data["fortunes" if args.model == "fortunes" else "classifier"]["test"]]
    sets = {"built-in": builtin, "in-domain held-out": domain}
    fp32 = (args.graphs / "fp32" / "model-fused.onnx").read_bytes()
    ref = {k: runtime.logits(fp32, v) for k, v in sets.items()}
    for k, r in ref.items():
        m = margins(r)
        hist = np.histogram(m, BINS)[0] / len(m)
        print(f"{k}: {len(m)} texts; fp32 margin share by bin {list(BINS)}: {np.round(hist, 3).tolist()}")
    for path in sorted(args.graphs.glob("int8-*.onnx")):
        graph = path.read_bytes()
        for k, items in sets.items():
            got = runtime.logits(graph, items)
            flips = got.argmax(1) != ref[k].argmax(1)
            m = margins(ref[k])
            by_bin = []
            for lo, hi in itertools.pairwise(BINS):
                sel = (m >= lo) & (m < hi)
                by_bin.append(f"{flips[sel].mean():.3f}({sel.sum()})" if sel.any() else "-")
            print(f"{path.name:26} {k:20} agreement {1 - flips.mean():.4f}  flip rate by margin bin: {by_bin}")


if __name__ == "__main__":
    main()
