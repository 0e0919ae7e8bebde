"""Finer activation scales inside one onnxruntime kernel, and cheaper per-token scaffolding: decisions and speed.

    python -m experiments.int8_compute_forms [--rounds 5] [--out FILE.md]

The default export of the harness's topic MiniLM-L6 has 29 of its 36 MatMuls on per-token scales (its gate's
second look), each group of them built from stock operators: the token's max and min, the shift, a blocked
QuantizeLinear, then per MatMul a small correction MatMul and an Add (engine/export/quantize/rewrite.py). Every
row stays independent of its neighbours, but the scaffolding is a tenth of the graph's operators on every row.
Two ways to spend less on it, each built from the harness's default export (engine-int8-minilm):

- onnxruntime's `MatMulNBits` with `accuracy_level` 4: the kernel quantizes each row's activations to int8 per
  block of K itself (row-independent, no scaffolding), weights 8-bit in blocks of 32 or 128, or 4-bit in blocks
  of 32; built from the export's fp32 reference with onnxruntime's own quantizer;
- the default int8 graph with its per-token groups made symmetric (int8 activations, one scale per token from its
  largest magnitude: no minimum, no correction MatMul), or with only the groups that read a GELU output changed:
  GELU's own minimum (-0.17) stands for the token's, so the correction folds into the bias.

Measured: top-1 flips against the fp32 reference, each graph alone and after the cascade at the export's margin,
on the gate's confirm split (generic built-in texts), the 512 docs sentences (out of domain) and the model's
2,400 held-out texts (own domain), with the 99th percentile of each row's largest logit difference; then
sentences/s of each graph's raw session over the engine's 256-token batches of 600 own texts and of the docs,
each variant in a fresh process, variants alternating over rounds. Results: experiments/results/int8_compute_forms.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

CACHE = Path.home() / ".cache" / "offline-textclf-engine" / "benchmarks" / "full-trained"
EXPORT = CACHE / "engine-int8-minilm"
FORMS = CACHE.parent / "compute-forms"
GELU_MIN = 0.1705  # -min GELU(x) = 0.16997 (x = -0.7518), with room for the tanh form's
NBITS = {"MatMulNBits, 8-bit blocks of 32": (8, 32), "MatMulNBits, 8-bit blocks of 128": (8, 128)}
NBITS |= {"MatMulNBits, 4-bit blocks of 32": (4, 32)}
SCAFFOLDS = {"per-token groups symmetric int8": "symmetric", "GELU outputs' groups: GELU's minimum": "gelu"}
BASELINES = ("default int8 export", "onnxruntime dynamic int8")


def graph(variant: str) -> Path:
    """The variant's graph, built once into the cache."""
    if variant == BASELINES[0]:
        return EXPORT / "model.onnx"
    if variant == BASELINES[1]:
        return CACHE / "onnx-minilm-avx512_vnni" / "model_quantized.onnx"
    out = FORMS / variant.replace(" ", "-").replace(",", "").replace("'", "").replace(":", "") / "model.onnx"
    if not out.exists():
        import onnx

        model = nbits(*NBITS[variant]) if variant in NBITS else scaffold(SCAFFOLDS[variant])
        out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(out), save_as_external_data=True, location="model.onnx.data")
    return out


def nbits(bits: int, block: int) -> object:
    """The fp32 reference with every MatMul as MatMulNBits, int8 compute (accuracy_level 4)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from engine.model.manifest import FP32_REFERENCE_FILE

    config = DefaultWeightOnlyQuantConfig(
        block_size=block, is_symmetric=True, accuracy_level=4, bits=bits, op_types_to_quantize=("MatMul",)
    )
    fp32 = onnx.load(str(EXPORT / FP32_REFERENCE_FILE))
    quantizer = MatMulNBitsQuantizer(fp32, bits=bits, block_size=block, is_symmetric=True, algo_config=config)
    quantizer.process()
    return quantizer.model.model


def scaffold(kind: str) -> object:
    """The default export's int8 graph with its per-token groups (rewrite.py's `q8/inN/` nodes) rebuilt: every
    group symmetric int8 (`symmetric`), or only the groups reading a Gelu output shifted by GELU's minimum
    (`gelu`). The MatMuls keep their weights; the correction MatMul (x W = (x - lo) W + lo colsum(W)) goes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(EXPORT / "model.onnx"))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, list[object]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    consts = {"f8/axes": np.array([-1], np.int64), "f8/eps": np.float32(1e-12), "f8/c": np.float32(GELU_MIN)}
    consts |= {"f8/inv127": np.float32(1 / 127), "f8/inv255": np.float32(1 / 255)}
    new_inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    dropped: set[str] = set()  # names of the outputs of nodes removed
    before: dict[str, list[object]] = {}  # a group's first node's output -> the nodes that replace the group
    for top in [n for n in g.node if n.op_type == "ReduceMax" and n.output[0].startswith("q8/in")]:
        x, a = top.input[0], top.output[0][: -len("hi")]
        shift = producer[x].op_type == "Gelu"
        if kind == "gelu" and not shift:
            continue
        dropped |= {o for n in g.node for o in n.output if o.startswith(a) and n.op_type != "MatMulIntegerToFloat"}
        matmuls = [n for n in readers[a + "q"] if n.op_type == "MatMulIntegerToFloat"]
        width = int(inits[matmuls[0].input[1]].dims[0])
        if shift:  # x + c >= 0 always: uint8 from 0, the offset c colsum(W) a constant
            nodes = [
                helper.make_node("ReduceMax", [x, "f8/axes"], [a + "hi"], keepdims=1),
                helper.make_node("Add", [a + "hi", "f8/c"], [a + "span"]),
                helper.make_node("Mul", [a + "span", "f8/inv255"], [a + "s0"]),
                helper.make_node("Max", [a + "s0", "f8/eps"], [a + "s"]),
                helper.make_node("Add", [x, "f8/c"], [a + "shifted"]),
                helper.make_node("QuantizeLinear", [a + "shifted", a + "s"], [a + "q"], axis=-1, block_size=width),
            ]
        else:
            nodes = [
                helper.make_node("Abs", [x], [a + "abs"]),
                helper.make_node("ReduceMax", [a + "abs", "f8/axes"], [a + "amax"], keepdims=1),
                helper.make_node("Mul", [a + "amax", "f8/inv127"], [a + "s0"]),
                helper.make_node("Max", [a + "s0", "f8/eps"], [a + "s"]),
                helper.make_node(
                    "QuantizeLinear", [x, a + "s"], [a + "q"], axis=-1, block_size=width, output_dtype=TensorProto.INT8
                ),
            ]
        before[top.output[0]] = nodes
        for mm in matmuls:
            p = mm.output[0][: -len("int")]
            correction = producer[p + "corr"]
            colsum, bias = numpy_helper.to_array(inits[correction.input[1]])
            new_inits.append(numpy_helper.from_array((bias - GELU_MIN * colsum if shift else bias), p + "bias"))
            del mm.input[4:]  # no zero point: 0 (uint8 from the shift) or symmetric int8
            dropped.add(correction.output[0])
            (add,) = readers[p + "corr"]
            add.input[list(add.input).index(p + "corr")] = p + "bias"
    nodes = []
    for n in g.node:
        nodes += before.get(n.output[0], [])
        if n.output[0] not in dropped:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    return model


def decisions(variants: list[str]) -> list[str]:
    from engine.export import gate
    from engine.model.manifest import FP32_REFERENCE_FILE, read
    from experiments.cascade_criterion import graph_logits
    from experiments.margin_or_per_token import sets

    margin = read(EXPORT).info.rescore_margin or 0.2
    texts = sets("minilm")
    fp32 = {name: graph_logits(EXPORT, EXPORT / FP32_REFERENCE_FILE, these) for name, these in texts.items()}
    lines = [
        f"| graph | {' | '.join(f'{k} ({len(v)})' for k, v in texts.items())} |",
        "|---|" + "---|" * len(texts),
    ]
    for variant in variants:
        cells = []
        for name, these in texts.items():
            x = graph_logits(EXPORT, graph(variant), these)
            (answered, rescored), truth = gate.cascade(x, fp32[name], margin), fp32[name].argmax(1)
            alone, after = (int((y.argmax(1) != truth).sum()) for y in (x, answered))
            p99 = np.quantile(np.abs(x - fp32[name]).max(1), 0.99)
            cells.append(f"{alone} alone, {after} after the cascade ({rescored} re-scored); p99 {p99:.2f}")
        lines.append(f"| {variant} | {' | '.join(cells)} |")
    return lines


def child(variant: str, threads: int | None) -> dict[str, float]:
    """In a fresh process: sentences/s of `variant`'s raw session on the own texts and the docs."""
    from benchmarks import corpus, models
    from engine.model.manifest import read
    from engine.runtime import batching
    from engine.runtime.session import OnnxSession
    from engine.runtime.tokenization import Strategy, TextTokenizer, Truncation

    info = read(EXPORT).info
    tokenizer = TextTokenizer((EXPORT / "tokenizer.json").read_text("utf-8"), info.max_length, info.pad_id)
    session = OnnxSession(graph(variant), info.num_labels, threads)
    data = json.loads((CACHE / "data.json").read_text("utf-8"))
    out = {}
    own = [t for t, _ in models.held_out(data, "minilm")][:600]
    for name, texts in (("own texts", own), ("docs", corpus.sample(512))):
        encoded = tokenizer.encode(texts, Truncation(strategy=Strategy.LONGEST_FIRST))
        batches = list(batching.batches(encoded, info.pad_id, 256, info.pooled_token_id))
        for batch in batches[:3]:
            session.run(batch)
        rates = []
        for _ in range(3):
            start = time.perf_counter()
            for batch in batches:
                session.run(batch)
            rates.append(len(texts) / (time.perf_counter() - start))
        out[name] = statistics.median(rates)
    return out


def speed(variants: list[str], rounds: int, threads: int | None) -> list[str]:
    from experiments.cascade_overhead import alternating, speed_table

    extra = ["--threads", str(threads)] if threads else []
    return speed_table(alternating("experiments.int8_compute_forms", variants, rounds, extra))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "int8_compute_forms.md")
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1], help="intra-op threads (0: one per core)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # the child's own run
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(child(args.variant, args.threads[0] or None)))
        return
    from benchmarks.models import cpu_line

    variants = [BASELINES[0], *NBITS, *SCAFFOLDS]
    threads = " ".join(map(str, args.threads))
    for variant in variants:
        graph(variant)
    lines = [
        "# Finer activation scales in one kernel, and cheaper per-token scaffolding",
        "",
        f"`python -m experiments.int8_compute_forms --rounds {args.rounds} --threads {threads}`; CPU: {cpu_line()}.",
        "",
        "## Decisions (top-1 against the export's fp32 reference)",
        "",
        *decisions(variants),
    ]
    for n in args.threads:
        lines += [
            "",
            f"## Speed, {f'{n} thread(s)' if n else 'one thread per core'} (raw sessions, each variant "
            "in a fresh process, alternating)",
            "",
            *speed([*variants, BASELINES[1]], args.rounds, n or None),
        ]
    args.out.write_text("\n".join(lines) + "\n", "utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
