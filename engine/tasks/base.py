"""What the two task classes share: loading, the truncation warning and the single-or-batch return.

Each task class (text_classification, zero_shot) holds only what differs: how inputs become encoded rows and
how logits become its outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from engine.model.resolve import resolve
from engine.runtime import batching
from engine.runtime.loaded import LoadedModel
from engine.runtime.session import resolve_threads
from engine.tasks.registry import REGISTRY, TaskName

log = logging.getLogger("engine")

T = TypeVar("T")
TaskT = TypeVar("TaskT", bound="Task")


class Task:
    """A loaded model behind one task's API; `task` names its entry in engine.tasks.registry (its defaults)."""

    task = TaskName.TEXT_CLASSIFICATION

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    @classmethod
    def load(
        cls: type[TaskT],
        path: str | Path | None = None,
        *,
        threads: int | None = None,
        batch_tokens: int = batching.DEFAULT_BATCH_TOKENS,
        verify: bool = True,
        concurrent_batches: int | None = None,
    ) -> TaskT:
        """Load a model: a directory made by `engine export` or `engine adopt`, an export alias or a Hugging Face
        id (made once into the model cache: engine.model.resolve), or None for the model shipped with the package.
        Its sha256 manifest is checked unless verify=False.
        `threads`: cores to use (default: all); `concurrent_batches` > 1 runs that many batches at once, for
        throughput over latency (engine.runtime.loaded; default: the task's in engine.tasks.registry, never more
        than the cores)."""
        if concurrent_batches is None:
            concurrent_batches = min(REGISTRY[cls.task].concurrent_batches, resolve_threads(threads))
        model = LoadedModel.load(
            resolve(path),
            threads=threads,
            batch_tokens=batch_tokens,
            verify=verify,
            concurrent_batches=concurrent_batches,
        )
        return cls(model)

    def warn_truncated(self, truncated: Sequence[bool]) -> None:
        """Truncation is on by default, as in the reference pipelines; say so when it changed an input."""
        cut = sum(truncated)
        if cut:
            log.warning(
                "%d of %d %s were truncated to the model's window of %d tokens",
                cut,
                len(truncated),
                REGISTRY[self.task].what,
                self.model.info.max_length,
            )


def single_or_batch(results: list[T], is_batch: bool) -> T | list[T]:
    """The spec's shape: one result for one input, a list for a list of inputs."""
    return results if is_batch else results[0]
