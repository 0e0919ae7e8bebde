"""One measurement in a fresh process: `python -m benchmarks.worker SPEC.json` prints `RESULT {json}` last.

Each system runs in its own process so that imports, arenas and thread pools of one cannot help or hurt another,
cold start is really cold, and ru_maxrss is the peak of that system alone.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

Predict = Callable[[list[str]], list[str]]


def peak_rss_mb() -> float:
    """Peak resident memory of this process: VmHWM, the high-water mark of this address space.

    ru_maxrss would do, but Linux carries it over fork + exec, so a worker started by a parent that has torch
    loaded would report the parent's peak; VmHWM starts afresh at exec.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def classifier(system: str, path: str, batch: int) -> Predict:
    """A function texts -> top labels; `batch` is the engine's token budget or the pipeline's batch_size."""
    if system.startswith("engine"):
        import engine

        clf = engine.TextClassifier.load(path, batch_tokens=batch)
        return lambda texts: [r[0].label for r in clf(texts)]  # type: ignore[index, union-attr]
    from transformers import pipeline

    if system == "transformers":
        pipe = pipeline("text-classification", model=path, device=-1)
    else:
        from pathlib import Path

        from optimum.onnxruntime import ORTModelForSequenceClassification
        from transformers import AutoTokenizer

        (onnx_file,) = Path(path).glob("*.onnx")
        model = ORTModelForSequenceClassification.from_pretrained(path, file_name=onnx_file.name)
        pipe = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(path))
    return lambda texts: [r["label"] for r in pipe(texts, batch_size=batch, truncation=True)]


def zero_shot(system: str, path: str, batch: int) -> Callable[[list[str], list[str]], list[str]]:
    """A function (texts, labels) -> best label per text, single-label mode."""
    if system.startswith("engine"):
        import engine

        zs = engine.ZeroShotClassifier.load(path, batch_tokens=batch)
        return lambda texts, labels: [r[0].label for r in zs(texts, candidate_labels=labels)]  # type: ignore[index]
    from transformers import pipeline

    pipe = pipeline("zero-shot-classification", model=path, device=-1)
    return lambda texts, labels: [r["labels"][0] for r in pipe(texts, candidate_labels=labels, batch_size=batch)]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def cold(spec: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """import + load + first result; then, if asked, score the corpus once for the peak RSS."""
    start = time.perf_counter()
    if spec["system"].startswith("engine"):
        import engine  # noqa: F401
    else:
        import transformers  # noqa: F401
    imported = time.perf_counter()
    predict = classifier(spec["system"], spec["path"], spec["batch"])
    loaded = time.perf_counter()
    predict(texts[:1])
    first = time.perf_counter()
    out: dict[str, Any] = {
        "import_s": imported - start,
        "load_s": loaded - imported,
        "first_result_s": first - loaded,
        "cold_start_s": first - start,
    }
    if spec.get("score_corpus"):
        out["labels"] = predict(texts)
        out["peak_rss_mb"] = peak_rss_mb()
    return out


def throughput(spec: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """Best batch size from a sweep on a subset, then sentences/s over the corpus (median of reps), then latency."""
    sweep: dict[str, float] = {}
    predictors: dict[int, Predict] = {}
    subset = texts[: spec["sweep_texts"]]
    for batch in spec["batches"]:
        predictors[batch] = predict = classifier(spec["system"], spec["path"], batch)
        predict(subset[:8])  # warm-up: first-run allocations, lazy initialisation
        seconds, _ = timed(lambda p=predict: p(subset))
        sweep[str(batch)] = len(subset) / seconds
    best = max(spec["batches"], key=lambda b: sweep[str(b)])
    predict = predictors[best]
    rates = []
    labels: list[str] = []
    for _ in range(spec["reps"]):
        seconds, labels = timed(lambda: predict(texts))
        rates.append(len(texts) / seconds)
    single = predictors[spec["latency_batch"]] if spec["latency_batch"] in predictors else predict
    single(texts[:1])
    latencies = sorted(timed(lambda t=t: single([t]))[0] * 1000 for t in texts[: spec["latency_texts"]])
    return {
        "sweep_sentences_per_s": sweep,
        "best_batch": best,
        "sentences_per_s_reps": rates,
        "sentences_per_s": statistics.median(rates),
        "latency_ms_p50": _percentile(latencies, 50),
        "latency_ms_p99": _percentile(latencies, 99),
        "latency_requests": len(latencies),
        "labels": labels,
        "peak_rss_mb_after_sweep": peak_rss_mb(),
    }


def zero_shot_throughput(spec: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """texts/s for each label count, best batch from a small sweep at the first label count."""
    label_sets: dict[str, list[str]] = spec["label_sets"]
    first_labels = next(iter(label_sets.values()))
    sweep: dict[str, float] = {}
    fns = {}
    for batch in spec["batches"]:
        fns[batch] = fn = zero_shot(spec["system"], spec["path"], batch)
        fn(texts[:2], first_labels)
        seconds, _ = timed(lambda f=fn: f(texts[: spec["sweep_texts"]], first_labels))
        sweep[str(batch)] = spec["sweep_texts"] / seconds
    best = max(spec["batches"], key=lambda b: sweep[str(b)])
    out: dict[str, Any] = {"sweep_texts_per_s": sweep, "best_batch": best}
    for count, labels in label_sets.items():
        n = spec["texts_per_count"][count]
        run = fns[best]
        rates = [n / timed(lambda n=n, labels=labels, run=run: run(texts[:n], labels))[0] for _ in range(spec["reps"])]
        out[f"texts_per_s_{count}_labels"] = statistics.median(rates)
        out[f"texts_per_s_{count}_labels_reps"] = rates
        out[f"best_labels_{count}"] = fns[best](texts[:n], labels) if spec.get("return_labels") else []
    return out


def scaling(spec: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """The engine's cost against sequence length and against the number of zero-shot labels."""
    import engine

    clf = engine.TextClassifier.load(spec["path"])
    by_length = {}
    for n in spec["lengths"]:
        text = " ".join(["hello"] * (n - 2))  # one token per word, plus [CLS] and [SEP]
        rows = max(1, spec["tokens_per_point"] // n)
        (pred,) = clf.predict([text])
        if pred.num_tokens != n:
            raise RuntimeError(f"wanted {n} tokens, got {pred.num_tokens}")
        clf([text] * rows)
        per_seq = [timed(lambda r=rows, t=text: clf([t] * r))[0] / rows * 1000 for _ in range(spec["reps"])]
        by_length[str(n)] = statistics.median(per_seq)
    zs = engine.ZeroShotClassifier.load(spec["nli_path"])
    vocab = spec["label_pool"]
    by_labels = {}
    few = texts[: spec["zs_texts"]]
    zs(few[:1], candidate_labels=vocab[:2])
    for k in spec["label_counts"]:
        per_text = [
            timed(lambda k=k: zs(few, candidate_labels=vocab[:k]))[0] / len(few) * 1000 for _ in range(spec["reps"])
        ]
        by_labels[str(k)] = statistics.median(per_text)
    return {"ms_per_sequence_by_tokens": by_length, "ms_per_text_by_labels": by_labels}


def gemm(spec: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """MAC/s this CPU reaches in onnxruntime for MatMulInteger (u8 x s8) and MatMul (fp32) at BERT sizes.

    One graph per (K, N) weight shape with M rows of activations; the figure is the MAC-weighted mix of a
    transformer layer (4 d x d projections, d x ffn and ffn x d), i.e. the best case for the model's linear layers.
    """
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    d, f, m = spec["dim"], spec["ffn"], spec["rows"]
    mix = [(d, d, 4), (d, f, 1), (f, d, 1)]  # (K, N, how many per layer)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = spec["threads"]
    opts.log_severity_level = 3
    out: dict[str, Any] = {}
    for kind in ("int8", "fp32"):
        total_macs = 0.0
        total_s = 0.0
        for k, n, count in mix:
            if kind == "int8":
                w = numpy_helper.from_array(rng.integers(-64, 64, (k, n), dtype=np.int8), "W")
                node = helper.make_node("MatMulInteger", ["A", "W"], ["Y"])
                a_type, y_type = TensorProto.UINT8, TensorProto.INT32
                a = rng.integers(0, 255, (m, k), dtype=np.uint8)
            else:
                w = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "W")
                node = helper.make_node("MatMul", ["A", "W"], ["Y"])
                a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
                a = rng.standard_normal((m, k), dtype=np.float32)
            graph = helper.make_graph(
                [node],
                "gemm",
                [helper.make_tensor_value_info("A", a_type, [m, k])],
                [helper.make_tensor_value_info("Y", y_type, [m, n])],
                [w],
            )
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
            sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            sess.run(None, {"A": a})
            best = min(timed(lambda s=sess, a=a: s.run(None, {"A": a}))[0] for _ in range(spec["reps"]))
            total_macs += count * m * k * n
            total_s += count * best
        out[f"{kind}_gmacs_per_s"] = total_macs / total_s / 1e9
    return out


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[idx]


JOBS = {"cold": cold, "throughput": throughput, "zero_shot": zero_shot_throughput, "scaling": scaling, "gemm": gemm}


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as fh:
        spec = json.load(fh)
    with open(spec["corpus_file"], encoding="utf-8") as fh:
        texts = json.load(fh)
    result = JOBS[spec["job"]](spec, texts)
    result["peak_rss_mb"] = result.get("peak_rss_mb", peak_rss_mb())
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
