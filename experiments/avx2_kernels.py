"""int8 answers on CPUs without VNNI, measured by emulation: the same code under QEMU with a Haswell's CPUID.

    python -m experiments.avx2_kernels [--texts 200] [--cpu Haswell]

Needs QEMU's user-mode emulator (Debian `qemu-user`) and the benchmark's cached models (`python -m benchmarks`
builds them). Many users' CPUs have AVX2 and no VNNI, where onnxruntime's u8s8 GEMM kernels add pairs of u8 x s8
products in a saturating int16 (vpmaddubsw). `qemu-x86_64 -cpu Haswell` runs this same Python and onnxruntime
with the CPUID of an AVX2 CPU (no AVX-512, no VNNI), so onnxruntime's MLAS picks its AVX2 kernels. Emulated time
says nothing about speed: only answers are compared.

First a probe shows which kernel ran: a MatMulInteger whose exact pair sums pass int16 (activations 255, weights
127) comes out saturated from the AVX2 kernel and exact from VNNI; with the engine's 7-bit weights (63) it is
exact on both. Then, for each int8 system on each trained benchmark model, the logits of held-out texts (NLI:
premise and hypothesis pairs) natively and emulated: their largest difference, and top-1 agreement of each with
the engine's fp32 export run natively. Writes experiments/results/avx2_kernels.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.run import DEFAULT_CACHE

HERE = Path(__file__).resolve().parent
MODELS = ("minilm", "distilbert", "nli")


def probe() -> dict[str, list[int]]:
    """MatMulInteger of 255s by a column of 127s, of 63s and of -127s: what the kernel returns and the exact sums."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k = 64
    weights = np.stack([np.full(k, 127), np.full(k, 63), np.full(k, -127)], axis=1).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w", "za"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [None, 3])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.uint8(0), "za")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = np.full((8, k), 255, np.uint8)
    got = session.run(None, {"a": a})[0][0]
    return {"got": [int(x) for x in got], "exact": [int(x) for x in a[0].astype(np.int64) @ weights.astype(np.int64)]}


def items(cache: Path, model: str, n: int) -> list[Any]:
    """Held-out texts of the classifier, or (premise, hypothesis) pairs over the NLI model's first 4 topics."""
    data = json.loads((cache / "data.json").read_text())
    if model != "nli":
        return [text for text, _ in data["classifier"]["test"]][:n]
    nli = data["nli"]
    texts = [text for text, _ in nli["test"]][: max(1, n // 4)]
    return [(text, nli["template"].format(topic)) for text in texts for topic in nli["topics"][:4]]


def systems(cache: Path, model: str) -> dict[str, Path]:
    found = {"engine int8": cache / f"engine-int8-{model}", "engine fp32": cache / f"engine-fp32-{model}"}
    for preset in ("avx512_vnni", "avx2"):
        peer = cache / f"onnx-{model}-{preset}"
        if (peer / "model_quantized.onnx").exists():
            found[f"onnxruntime dynamic int8 ({preset} preset)"] = peer
    return found


def logits(name: str, directory: Path, inputs: list[Any]) -> np.ndarray:
    """The engine's own forward pass for its exports; an onnxruntime session fed the engine's batches for peers."""
    if name.startswith("engine"):
        from engine.runtime.loaded import LoadedModel
        from engine.runtime.tokenization import Truncation

        loaded = LoadedModel.load(directory, threads=1)
        return loaded.logits(loaded.tokenizer.encode(inputs, Truncation()))
    from benchmarks.peers import Batcher, load_ort

    run = load_ort(str(directory / "model_quantized.onnx"))
    labels = json.loads((directory / "config.json").read_text())["id2label"]
    return Batcher(directory / "tokenizer.json", 256).logits(run, inputs, len(labels))


def worker(cache: Path, out: Path, n: int) -> None:
    """Everything this CPU (real or emulated) computes, into `out`."""
    (out / "probe.json").write_text(json.dumps(probe()))
    for model in MODELS:
        inputs = items(cache, model, n)
        for name, directory in systems(cache, model).items():
            if name == "engine fp32" and "emulated" in out.name:
                continue  # the reference is the native fp32 export
            np.save(out / f"{model}--{name}.npy", logits(name, directory, inputs))


def report(cache: Path, native: Path, emulated: Path, cpu: str) -> str:
    lines = [
        "# int8 on an AVX2 CPU without VNNI (emulated), against this machine's kernels",
        "",
        f"Command: `python -m experiments.avx2_kernels` (QEMU user mode, `-cpu {cpu}`). Native: "
        + native_cpu()
        + ". Emulated time says nothing about speed; only the answers are compared.",
        "",
    ]
    probes = {where: json.loads((d / "probe.json").read_text()) for where, d in (("native", native), (cpu, emulated))}
    lines += [
        "Kernel probe: MatMulInteger, 64 activations of 255 by a column of 127s / 63s / -127s (exact: "
        + " / ".join(map(str, probes["native"]["exact"]))
        + ").",
        "",
        "| CPU | 127s | 63s (the engine's 7-bit range) | -127s | kernel |",
        "|---|---:|---:|---:|---|",
    ]
    for where, p in probes.items():
        saturated = p["got"] != p["exact"]
        kind = "int16 pair sums saturate (vpmaddubsw)" if saturated else "exact int32"
        lines.append(f"| {where} | {' | '.join(map(str, p['got']))} | {kind} |")
    lines += [
        "",
        f"| model | system | max logit difference, {cpu} vs native | same top-1 as native | top-1 agreement with "
        f"fp32: native | {cpu} |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for model in MODELS:
        reference = np.load(native / f"{model}--engine fp32.npy").argmax(-1)
        for name in systems(cache, model):
            if name == "engine fp32":
                continue
            a, b = (np.load(d / f"{model}--{name}.npy") for d in (native, emulated))
            agree = [float((x.argmax(-1) == reference).mean()) for x in (a, b)]
            same = float((a.argmax(-1) == b.argmax(-1)).mean())
            lines.append(
                f"| {model} ({len(a)} inputs) | {name} | {np.abs(a - b).max():.2e} | {same:.1%} | {agree[0]:.1%} | "
                f"{agree[1]:.1%} |"
            )
    return "\n".join(lines) + "\n"


def native_cpu() -> str:
    from experiments.int8_levers import cpu

    return cpu()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=200, help="held-out texts per classifier (NLI: a quarter)")
    parser.add_argument("--cpu", default="Haswell", help="QEMU CPU model to emulate")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE / "full-trained")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "avx2_kernels.md")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.cache, args.worker, args.texts)
        return 0
    qemu = shutil.which("qemu-x86_64")
    if not qemu:
        print("needs QEMU's user-mode emulator: sudo apt-get install qemu-user", file=sys.stderr)
        return 2
    if not (args.cache / "data.json").exists():
        print(f"no benchmark models in {args.cache}: run python -m benchmarks first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        native, emulated = Path(tmp) / "native", Path(tmp) / "emulated"
        for where, prefix in ((native, []), (emulated, [qemu, "-cpu", args.cpu])):
            where.mkdir()
            command = [*prefix, sys.executable, "-m", "experiments.avx2_kernels", "--worker", str(where)]
            command += ["--texts", str(args.texts), "--cache", str(args.cache)]
            print(f"running {'emulated ' + args.cpu if prefix else 'natively'} ...", flush=True)
            subprocess.run(command, check=True, stderr=subprocess.DEVNULL if prefix else None, cwd=HERE.parent)
        text = report(args.cache, native, emulated, args.cpu)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
