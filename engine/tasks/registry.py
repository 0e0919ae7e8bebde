"""The one table of tasks: what each is called, which class runs it, which models it takes, and its defaults.

Every other module asks here instead of comparing task strings: the server's loader and routes, the batch jobs
and the Ray job. A reranker is not a task of its own in the manifest: it is a text-classification model with one
relevance logit, or two (not relevant, relevant); `is_cross_encoder` is that rule, written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from engine.errors import ModelLoadError

if TYPE_CHECKING:
    from engine.model.manifest import ModelInfo
    from engine.tasks.base import Task


class TaskName(str, Enum):
    TEXT_CLASSIFICATION = "text-classification"
    ZERO_SHOT = "zero-shot-classification"
    RERANK = "rerank"


@dataclass(frozen=True)
class TaskEntry:
    """`manifest_task`: the manifest's task of the models it runs. `concurrent_batches`: batches at once when the
    caller does not say: 1 (every core in each operator: the lowest latency for one text) or 2 (two at once, the
    cores halved) for tasks whose calls are many rows (zero-shot's texts x labels, rerank's query x documents).
    `what`: how the truncation warning names what was cut."""

    name: TaskName
    manifest_task: str
    concurrent_batches: int
    what: str


REGISTRY: dict[TaskName, TaskEntry] = {
    TaskName.TEXT_CLASSIFICATION: TaskEntry(TaskName.TEXT_CLASSIFICATION, "text-classification", 1, "inputs"),
    TaskName.ZERO_SHOT: TaskEntry(TaskName.ZERO_SHOT, "zero-shot-classification", 2, "texts"),
    TaskName.RERANK: TaskEntry(TaskName.RERANK, "text-classification", 2, "(query, document) pairs"),
}
CROSS_ENCODER_LABELS = (1, 2)


def is_cross_encoder(info: ModelInfo) -> bool:
    """A text-classification model with one relevance logit, or two."""
    return info.task == REGISTRY[TaskName.RERANK].manifest_task and info.num_labels in CROSS_ENCODER_LABELS


def task_of(info: ModelInfo) -> TaskName:
    """The task a model directory runs by default (a cross-encoder also classifies its pairs)."""
    for entry in REGISTRY.values():
        if entry.manifest_task == info.task:
            return entry.name
    raise ModelLoadError(f"{info.path}: unknown task {info.task!r}; re-export the model")


def facade(name: TaskName) -> type[Task]:
    """The class that runs the task (imported here, so callers need not know the module)."""
    if name is TaskName.ZERO_SHOT:
        from engine.tasks.zero_shot import ZeroShotClassifier

        return ZeroShotClassifier
    if name is TaskName.RERANK:
        from engine.tasks.rerank import Reranker

        return Reranker
    from engine.tasks.text_classification import TextClassifier

    return TextClassifier
