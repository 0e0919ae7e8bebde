"""The one onnxruntime wrapper: built whole in its constructor, returns raw logits, nothing else.

onnxruntime's InferenceSession.run is safe to call from several threads at once, so one loaded model serves
all of a process's threads.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engine.errors import InferenceError, InvalidRequestError, ModelLoadError
from engine.runtime.batching import Batch

KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def default_threads() -> int:
    """One intra-op thread per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None) -> int:
    """`threads` checked (a positive integer), or default_threads() for None."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidRequestError(f"threads must be a positive integer or None, got {threads!r}")
    return threads or default_threads()


class OnnxSession:
    """A CPU session over a graph (a file's path, or bytes), with its input names and dtypes read once.

    `spinning=False` for a session that runs now and then beside another (the near-tie fp32 graph): onnxruntime's
    threads spin-wait after each run by default, and a second session's spinning threads take the cores from the
    first (on 2 cores, a near-tie model's batch-1 p50 doubled: `python -m experiments.cascade_spinning`)."""

    def __init__(self, graph: bytes | Path, num_labels: int, threads: int | None = None, spinning: bool = True) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = resolve_threads(threads)
        opts.inter_op_num_threads = 1
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # memory patterns plan allocations per input shape; with batches of every (rows, length) they only pile
        # up: off, peak RSS scoring the benchmark corpus drops ~7 MB (python -m benchmarks.profile_memory)
        opts.enable_mem_pattern = False
        opts.log_severity_level = 3
        try:
            source = graph if isinstance(graph, bytes) else str(graph)
            self._session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own bare exception types
            # onnxruntime reads external data through /proc: a chroot or sandbox without it is not a bad model
            advice = "Mount /proc (onnxruntime needs it)" if "procfs" in str(exc) else "Re-export the model"
            raise ModelLoadError(f"onnxruntime cannot load model.onnx: {exc}. {advice}.") from exc
        inputs = self._session.get_inputs()
        self.input_dtypes = {}
        for node in inputs:
            if node.name not in KNOWN_INPUTS or node.type not in _DTYPES:
                raise ModelLoadError(
                    f"model.onnx has input {node.name!r} of type {node.type}; a sequence classifier takes only "
                    f"{', '.join(KNOWN_INPUTS)} as integer tensors. Re-export the model."
                )
            self.input_dtypes[node.name] = _DTYPES[node.type]
        if "input_ids" not in self.input_dtypes:
            raise ModelLoadError("model.onnx has no input_ids input; re-export the model")
        outputs = self._session.get_outputs()
        names = [o.name for o in outputs]
        self.output_name = "logits" if "logits" in names else names[0]
        shape = next(o.shape for o in outputs if o.name == self.output_name)
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != num_labels):
            raise ModelLoadError(
                f"model.onnx output {self.output_name!r} has shape {shape}, expected [batch, {num_labels}] "
                "to match the label map. Re-export the model."
            )
        self.num_labels = num_labels
        self.threads = opts.intra_op_num_threads

    def run(self, batch: Batch) -> np.ndarray:
        """Logits of shape (rows, num_labels), float32. Feeds only the inputs the graph declares."""
        arrays = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        feed = {name: arrays[name].astype(dtype, copy=False) for name, dtype in self.input_dtypes.items()}
        try:
            (logits,) = self._session.run([self.output_name], feed)
        except Exception as exc:  # onnxruntime raises its own bare exception types
            raise InferenceError(f"onnxruntime failed while running the model: {exc}") from exc
        logits = np.asarray(logits, dtype=np.float32)
        if logits.shape != (len(batch.index), self.num_labels):
            raise InferenceError(
                f"model returned logits of shape {logits.shape}, expected {(len(batch.index), self.num_labels)}"
            )
        return logits
