"""The engine's int8 against the strongest int8 and bf16 peers, in one process, A/B interleaved.

    python -m experiments.int8_levers FP32_DIR INT8_DIR [--extra OTHER_INT8_DIR ...] [--reps 3]

FP32_DIR and INT8_DIR are engine exports of one checkpoint (scripts/export_models.py --precision fp32 / int8);
--extra adds other engine int8 exports (e.g. made by an earlier recipe, or with another --calibration-file).
Each system scores the same corpus sentences in the engine's length-sorted 256-token batches, one session each,
the systems taking turns in every repetition so that load on a shared machine hits them alike; then
single-sentence latency (p50). Agreement is top-1 against the fp32 export on held-out texts (the trained
classifier's held-out glosses when benchmarks.labelled is there, else the corpus), never on the texts the int8
recipes calibrated on.

Systems: the engine through its public API (TextClassifier, end to end) and its raw session; the graph forms the
export chooses from, each applied to every MatMul (static scales, per-token scales); onnxruntime quantize_dynamic
with optimum's avx512_vnni preset (u8 activations with one scale per batch tensor, s8 per-tensor weights), batched
and one sentence per run (then the tensor scale is the sentence's own);
OpenVINO on the fp32 ONNX with its default precision hint (bf16 where the CPU has it); OpenVINO after NNCF static
int8 quantization (transformer preset, calibrated on the calibration texts); OpenVINO on the engine's own int8
graph rewritten to standard QDQ (the lever of an OpenVINO backend for the engine); the engine's graph run as
single-threaded sessions, one batch per core at once. Prints the CPU flags and load.

Several runtimes' thread pools live in one process here: a pool that spins after its run can slow the next
system. Decisions rest on the full harness (one process per system, `python -m benchmarks`) where they differ.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import corpus
from benchmarks.qdq import qdq_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def cpu() -> str:
    from benchmarks.models import cpu_line

    return f"{cpu_line()}; {os.cpu_count()} cores"


def texts(path: Path | None) -> tuple[list[str], list[str]]:
    """(held-out agreement texts, calibration texts), disjoint: from a JSON file {"test": [...], "calibration":
    [...]}, else the trained classifier's split, else the corpus."""
    if path:
        data = json.loads(path.read_text())
        return data["test"], data["calibration"]
    try:
        from benchmarks import labelled  # type: ignore[attr-defined]  # the trained models' data (benchmarks/labelled.py)

        split = labelled.classifier_split(False)
        return [t for t, _ in split.test], [t for t, _ in split.calibration]
    except (ImportError, FileNotFoundError):
        pool = corpus.sample(1100, seed=1)
        return pool[:800], pool[800:]


class OpenVinoRunner:
    """An OpenVINO compiled model with the engine's session interface (run(batch) -> logits)."""

    def __init__(self, model: Any, threads: int, hint: str | None = None) -> None:
        import openvino as ov

        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1}
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self.precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.names = [i.get_any_name() for i in self.compiled.inputs]
        self.request = self.compiled.create_infer_request()

    def run(self, batch: Any) -> np.ndarray:
        result = self.request.infer({name: getattr(batch, name) for name in self.names})
        return np.asarray(next(iter(result.values())), dtype=np.float32)


class OneRowPerRun:
    """Runs each row of a batch alone, unpadded: a graph with one activation scale per tensor (onnxruntime's
    DynamicQuantizeMatMul) then quantizes every row with its own scale, so rows stay independent."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def run(self, batch: Any) -> np.ndarray:
        from engine.runtime.batching import Batch

        rows = []
        for i, n in enumerate(batch.attention_mask.sum(axis=1)):
            one = [getattr(batch, f)[i : i + 1, :n] for f in ("input_ids", "attention_mask", "token_type_ids")]
            rows.append(self.runner.run(Batch(batch.index[i : i + 1], *one)))
        return np.concatenate(rows)


class ConcurrentRuns:
    """Two (or `workers`) batches at a time, each in its own single-threaded run of one session: the lever of
    parallelism across batches instead of inside each operator. Rows stay independent (each batch is computed as
    it would be alone); a single batch gets one core."""

    def __init__(self, runner: Any, workers: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.runner, self.pool = runner, ThreadPoolExecutor(workers)

    def run(self, batch: Any) -> np.ndarray:
        return np.asarray(self.runner.run(batch))

    def run_all(self, batches: list[Any]) -> list[np.ndarray]:
        return list(self.pool.map(self.runner.run, batches))


def nncf_static(fp32_onnx: Path, calibration: list[Any]) -> Any:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(fp32_onnx)
    names = [i.get_any_name() for i in model.inputs]
    dataset = nncf.Dataset(calibration, lambda b: {name: getattr(b, name) for name in names})
    return nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fp32", type=Path)
    parser.add_argument("int8", type=Path)
    parser.add_argument("--extra", type=Path, nargs="*", default=[], help="other engine int8 exports to compare")
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--texts", type=Path, help='JSON {"test": [...], "calibration": [...]}')
    parser.add_argument("--skip", nargs="*", default=[], help="system names to leave out")
    args = parser.parse_args(argv)

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from engine import TextClassifier
    from engine.export import quantize
    from engine.runtime import batching
    from engine.runtime.session import OnnxSession, default_threads
    from engine.runtime.tokenization import Truncation

    threads = args.threads or default_threads()
    manifest = json.loads((args.fp32 / "manifest.json").read_text())
    engine = TextClassifier.load(args.int8, threads=threads)
    tokenizer, pad, labels = engine.runtime.loaded.tokenizer, manifest["pad_token_id"], len(manifest["id2label"])
    held, calibration = texts(args.texts)
    sentences = corpus.sample(args.sentences)

    def plan(items: list[str]) -> list[Any]:
        return list(batching.batches(tokenizer.encode(items, Truncation()), pad))

    bench_plan, held_plan, calib_plan = plan(sentences), plan(held), plan(calibration)
    fp32_model = onnx.load(str(args.fp32 / "model.onnx"))
    runtime = quantize.Runtime((args.fp32 / "tokenizer.json").read_text(), manifest["max_length"], pad, labels)
    inputs = list(dict.fromkeys(t.input for t in quantize.targets(fp32_model)))
    ranges = runtime.ranges(fp32_model, inputs, calibration)

    def session(graph: bytes | Path) -> OnnxSession:
        return OnnxSession(graph, labels, threads)

    tmp = Path(tempfile.mkdtemp(prefix="int8-levers-"))

    def qdq() -> str:
        return str(qdq_file(args.int8, tmp / "qdq.onnx"))

    systems: dict[str, Callable[[], Any]] = {
        "onnxruntime fp32": lambda: session(args.fp32 / "model.onnx"),
        "engine int8 export, raw session": lambda: session(args.int8 / "model.onnx"),
        "every MatMul int8, static scales": lambda: session(
            quantize.rewrite(fp32_model, ranges=ranges).SerializeToString()
        ),
        "every MatMul int8, per-token scales": lambda: session(quantize.rewrite(fp32_model).SerializeToString()),
        "OpenVINO fp32 ONNX, default hint": lambda: OpenVinoRunner(str(args.fp32 / "model.onnx"), threads),
        # the optional-OpenVINO-backend lever: OpenVINO running the engine's own int8 graph (QDQ form)
        "OpenVINO on the engine int8 graph (QDQ form), f32 hint": lambda: OpenVinoRunner(qdq(), threads, "f32"),
        "OpenVINO on the engine int8 graph (QDQ form), default hint": lambda: OpenVinoRunner(qdq(), threads),
        f"engine int8 export, {threads} single-thread runs at once": lambda: ConcurrentRuns(
            OnnxSession(args.int8 / "model.onnx", labels, 1), threads
        ),
        "OpenVINO + NNCF static int8": lambda: OpenVinoRunner(
            nncf_static(args.fp32 / "model.onnx", calib_plan), threads
        ),
    }
    for extra in args.extra:
        systems[f"engine int8 {extra.name}, raw session"] = lambda extra=extra: session(extra / "model.onnx")

    def dynamic() -> OnnxSession:
        out = tmp / "dynamic.onnx"
        if out.exists():
            return session(out)
        quantize_dynamic(
            args.fp32 / "model.onnx",
            out,
            weight_type=QuantType.QInt8,
            per_channel=False,
            reduce_range=False,
            # DefaultTensorType: no inferred types after the export's fused attention (a contrib op)
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        return session(out)

    systems["onnxruntime quantize_dynamic (avx512_vnni preset)"] = dynamic
    systems["onnxruntime quantize_dynamic, one sentence per run"] = lambda: OneRowPerRun(dynamic())
    runners = {name: make() for name, make in systems.items() if name not in args.skip}

    def scores(runner: Any, batches: list[Any], n: int) -> np.ndarray:
        out = np.empty((n, labels), dtype=np.float32)
        results = runner.run_all(batches) if hasattr(runner, "run_all") else map(runner.run, batches)
        for b, logits in zip(batches, results):
            out[b.index] = logits
        return out

    singles = [batching.pad(tokenizer.encode([t], Truncation()), np.array([0]), pad) for t in sentences[:60]]
    # the engine's public API, end to end: tokenize, batch, run, postprocess
    public = {"run": lambda: engine(sentences), "one": lambda i: engine([sentences[i]])}
    calls = {
        name: {"run": lambda r=r: scores(r, bench_plan, len(sentences)), "one": lambda i, r=r: r.run(singles[i])}
        for name, r in runners.items()
    } | {"engine int8 export, public API": public}
    rate: dict[str, list[float]] = {name: [] for name in calls}
    cpu_rate: dict[str, list[float]] = {name: [] for name in calls}
    latency: dict[str, list[float]] = {name: [] for name in calls}
    print(cpu())
    print(f"load average before: {os.getloadavg()}", flush=True)
    for call in calls.values():
        call["run"]()  # warm-up
    for _ in range(args.reps):
        for name, call in calls.items():
            wall, cpu_time = time.perf_counter(), time.process_time()
            call["run"]()
            rate[name].append(len(sentences) / (time.perf_counter() - wall))
            cpu_rate[name].append(len(sentences) / (time.process_time() - cpu_time))
            lat = []
            for i in range(len(singles)):
                t0 = time.perf_counter()
                call["one"](i)
                lat.append(time.perf_counter() - t0)
            latency[name].append(statistics.median(lat) * 1000)
    print(f"load average after: {os.getloadavg()}")
    reference = scores(runners["onnxruntime fp32"], held_plan, len(held))
    engine_logits = engine.runtime.loaded.logits(tokenizer.encode(held, Truncation()))
    print(f"\n{len(sentences)} sentences in 256-token batches, {args.reps} interleaved repetitions, {threads} threads;")
    print(f"agreement: top-1 against onnxruntime fp32 on {len(held)} held-out texts\n")
    print("sentences per CPU-second: the process's CPU time (all its threads, spinning included), which load on a")
    print("shared machine moves less than wall time; with --threads 1 it is the work per sentence.\n")
    print("| system | sentences/s (median) | runs | sentences per CPU-s | batch-1 p50 ms | agreement |")
    print("|---|---:|---|---:|---:|---:|")
    for name in rate:
        got = engine_logits if name.endswith("public API") else scores(runners[name], held_plan, len(held))
        agreement = float((got.argmax(axis=1) == reference.argmax(axis=1)).mean())
        runs = " ".join(f"{r:.0f}" for r in rate[name])
        print(
            f"| {name} | {statistics.median(rate[name]):.0f} | {runs} | {statistics.median(cpu_rate[name]):.0f} "
            f"| {statistics.median(latency[name]):.2f} | {agreement:.2%} |"
        )
    ov = [r for r in runners.values() if isinstance(r, OpenVinoRunner)]
    if ov:
        print(f"\nOpenVINO inference precision: {', '.join(sorted({r.precision for r in ov}))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
