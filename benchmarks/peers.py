"""Every system behind one interface, fed the engine's own batches: tokenize, length-sort, token-budget batches.

A peer is a function from padded batches to logits. The harness tokenizes with the same tokenizer.json the
engine reads (no padding, window 512), groups rows with the engine's batching plan (longest first, rows x
longest <= the token budget), and each peer runs exactly those batches: the comparison is the runtime, not the
batching. Imports happen inside the loaders so that a worker process only pays for its own system's runtime.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Feed = dict[str, np.ndarray]
Logits = Callable[[Feed], np.ndarray]
Item = str | tuple[str, str]
PEERS = ("transformers", "ort-fp32", "ort-int8", "openvino", "openvino-nncf-int8")
# a lever, not a peer: the engine's own int8 export run by OpenVINO (benchmarks/qdq.py), f32 precision hint
LEVERS = ("openvino-engine-graph",)
# engine-int8-concurrent: the same export with as many batches at once as cores (TextClassifier.load(...,
# concurrent_batches=N)), the throughput setting; engine-int8 is the public API's default: one batch at a time for
# TextClassifier, two batches at once for ZeroShotClassifier (engine.tasks.base)
# engine-int8-calibrated: the export made with --calibration-file of in-domain texts, a labelled second row
ENGINES = ("engine-int8", "engine-int8-calibrated", "engine-int8-concurrent", "engine-fp32")


def plan(lengths: Sequence[int], batch_tokens: int, max_rows: int = 256) -> Iterator[np.ndarray]:
    """engine.runtime.batching.plan, repeated here so that a peer's process never imports the engine (a test checks
    that both give the same batches)."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    start = 0
    while start < len(order):
        rows = max(1, min(max_rows, batch_tokens // max(int(lengths[order[start]]), 1)))
        yield order[start : start + rows]
        start += rows


@dataclass
class Batcher:
    """The engine's tokenization and batching for a peer."""

    tokenizer_json: Path
    batch_tokens: int

    def __post_init__(self) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(self.tokenizer_json))
        self.tok.no_padding()
        self.tok.enable_truncation(512, strategy="only_first")
        self.pad_id = self.tok.token_to_id("[PAD]") or 0

    def feeds(self, items: Sequence[Item]) -> Iterator[tuple[np.ndarray, Feed]]:
        encoded = self.tok.encode_batch(list(items))
        for index in plan([len(e.ids) for e in encoded], self.batch_tokens):
            width = max(len(encoded[i].ids) for i in index)
            ids = np.full((len(index), width), self.pad_id, dtype=np.int64)
            mask = np.zeros_like(ids)
            types = np.zeros_like(ids)
            for row, i in enumerate(index):
                e = encoded[i]
                ids[row, : len(e.ids)], mask[row, : len(e.ids)], types[row, : len(e.ids)] = e.ids, 1, e.type_ids
            yield index, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def logits(self, run: Logits, items: Sequence[Item], num_labels: int) -> np.ndarray:
        out = np.empty((len(items), num_labels), dtype=np.float32)
        for index, feed in self.feeds(items):
            out[index] = run(feed)
        return out


def _threads() -> int:
    """Intra-op threads for every system: BENCH_THREADS when the run asks for a number (`--threads`), else one per
    core this process may run on."""
    return int(os.environ.get("BENCH_THREADS") or 0) or max(1, len(os.sched_getaffinity(0)))


def load_torch(path: str) -> Logits:
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(_threads())
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    accepted = set(inspect.signature(model.forward).parameters)  # transformers 5 wraps forward

    def run(feed: Feed) -> np.ndarray:
        with torch.inference_mode():
            args = {k: torch.from_numpy(v) for k, v in feed.items() if k in accepted}
            return model(**args).logits.float().numpy()

    return run


def load_ort(path: str) -> Logits:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = _threads()
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return lambda feed: sess.run(None, {n: feed[n] for n in names})[0]


OPENVINO_INFO: dict[str, Any] = {}


def load_openvino(path: str, hint: str | None = None) -> Logits:
    """OpenVINO's CPU plugin with its defaults (precision hint and all, unless `hint`); the hint it chose goes to
    OPENVINO_INFO."""
    import openvino as ov

    core = ov.Core()
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": _threads()}
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    compiled = core.compile_model(path, "CPU", config)
    OPENVINO_INFO["inference_precision_hint"] = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    OPENVINO_INFO["performance_hint"] = str(compiled.get_property("PERFORMANCE_HINT"))
    OPENVINO_INFO["version"] = ov.get_version()
    request = compiled.create_infer_request()
    names = [p.get_any_name() for p in compiled.inputs]

    def run(feed: Feed) -> np.ndarray:
        return np.asarray(request.infer({n: feed[n] for n in names})[compiled.outputs[0]])

    return run


@dataclass(frozen=True)
class Classifier:
    """texts -> (top labels, scores) for one system, timed as a user would call it."""

    predict: Callable[[Sequence[str]], tuple[list[str], np.ndarray]]
    zero_shot: Callable[[Sequence[str], Sequence[str], str], list[str]]
    rescored: Callable[[], int] = lambda: 0  # the engine: rows re-scored in fp32 so far (near-ties)


def _unsupported(*_args: Any) -> Any:
    raise NotImplementedError("this system was loaded for the other task")


def _labels(directory: Path) -> list[str]:
    config = json.loads((directory / "config.json").read_text())
    return [config["id2label"][str(i)] for i in range(len(config["id2label"]))]


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def load(system: str, path: str, batch_tokens: int, zero_shot: bool = False) -> Classifier:
    """The system's classifier: the engine's public API (ZeroShotClassifier when `zero_shot`, else
    TextClassifier), or a peer fed the engine's batches."""
    if system.startswith("engine"):
        import engine

        concurrent = _threads() if system == "engine-int8-concurrent" else None  # None: the task's default
        threads = _threads()
        if zero_shot:
            zs = engine.ZeroShotClassifier.load(
                path, threads=threads, batch_tokens=batch_tokens, concurrent_batches=concurrent
            )

            def zero_shot_engine(texts: Sequence[str], labels: Sequence[str], template: str) -> list[str]:
                out = zs(list(texts), candidate_labels=list(labels), hypothesis_template=template)
                return [r[0].label for r in out]  # type: ignore[index]

            return Classifier(_unsupported, zero_shot_engine)
        clf = engine.TextClassifier.load(
            path, threads=threads, batch_tokens=batch_tokens, concurrent_batches=concurrent
        )

        def predict_engine(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
            preds = clf(list(texts))
            return [p[0].label for p in preds], np.array([p[0].score for p in preds])  # type: ignore[index]

        near_ties = clf.model.near_ties
        return Classifier(predict_engine, _unsupported, lambda: 0 if near_ties is None else near_ties.rescored)
    if system == "openvino-engine-graph":
        import tempfile

        from .qdq import qdq_file

        directory = Path(path)
        graph = qdq_file(directory, Path(tempfile.mkdtemp(prefix="qdq-")) / "model.onnx")
        manifest = json.loads((directory / "manifest.json").read_text())
        labels = [manifest["id2label"][str(i)] for i in range(len(manifest["id2label"]))]
        return _classifier(load_openvino(str(graph), "f32"), directory, batch_tokens, labels)
    loader = {"transformers": load_torch, "ort-fp32": load_ort, "ort-int8": load_ort}.get(system, load_openvino)
    directory = Path(path)
    run = loader(str(directory / str(FILES[system])) if FILES[system] else path)
    return _classifier(run, directory, batch_tokens, _labels(directory))


FILES = {  # what each peer loads from its directory (None: the whole checkpoint directory)
    "transformers": None,
    "ort-fp32": "model.onnx",
    "ort-int8": "model_quantized.onnx",
    "openvino": "model.onnx",
    "openvino-nncf-int8": "model.xml",
}


def disk_mb(system: str, path: str) -> float:
    """The model's size on disk as the system loads it: the engine's whole export directory (graph, tokenizer,
    manifest), a peer's graph file (with OpenVINO's weights .bin), or the checkpoint's weights for torch."""
    directory = Path(path)
    if system.startswith("engine") or system == "openvino-engine-graph":
        files = [p for p in directory.rglob("*") if p.is_file()]
    elif FILES.get(system) is None:
        files = [p for p in directory.iterdir() if p.suffix in (".safetensors", ".bin")]
    else:
        graph = directory / str(FILES[system])
        files = [graph, graph.with_suffix(".bin")] if graph.suffix == ".xml" else [graph]
    return sum(p.stat().st_size for p in files if p.exists()) / 1e6


def _classifier(run: Logits, directory: Path, batch_tokens: int, names: list[str]) -> Classifier:
    """A peer's classifier: the engine's batches of `directory`'s tokenizer.json through `run`."""
    batcher = Batcher(directory / "tokenizer.json", batch_tokens)

    def predict(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        probs = _softmax(batcher.logits(run, texts, len(names)))
        top = probs.argmax(-1)
        return [names[i] for i in top], probs[np.arange(len(top)), top]

    entail = next((i for i, n in enumerate(names) if n.lower().startswith("entail")), -1)

    def zero_shot(texts: Sequence[str], labels: Sequence[str], template: str) -> list[str]:
        pairs = [(t, template.format(label)) for t in texts for label in labels]
        ent = batcher.logits(run, pairs, len(names))[:, entail].reshape(len(texts), len(labels))
        return [labels[i] for i in _softmax(ent).argmax(-1)]

    return Classifier(predict, zero_shot)
