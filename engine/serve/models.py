"""What `engine serve` serves: model directories, the ids clients call them by, and a bounded result cache.

Ids of a model directory come from engine.model.ids (directory name, Hugging Face id, export alias, Cloudflare
id). An automatic id claimed by two directories is dropped (ambiguous); explicit
`--alias NEW_ID=KNOWN_ID` aliases must not collide. Only the manifest is read here; the workers load the weights
(at start-up unless `engine serve --lazy`) and run one warm-up input before they report ready.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from engine.errors import InvalidRequestError, ModelLoadError
from engine.model import manifest
from engine.model.ids import automatic_ids
from engine.model.manifest import DATA_FILE, MODEL_FILE, ModelInfo
from engine.model.resolve import resolve
from engine.runtime import batching
from engine.serve.worker import BatchPolicy, ModelWorker, Predictor
from engine.tasks import registry
from engine.tasks.params import ZeroShotClassificationParameters
from engine.tasks.registry import TaskName

DEFAULT_POLICY = BatchPolicy()
WARM_UP_TEXT = "A short sentence to warm the model up."
LOAD_BYTES_PER_SECOND = 100e6  # rough: sha256 + onnxruntime session creation, for `estimated_time`


@dataclass(frozen=True)
class ServedModel:
    info: ModelInfo
    ids: tuple[str, ...]
    worker: ModelWorker = field(compare=False)

    @property
    def name(self) -> str:
        return self.ids[0]

    @property
    def names(self) -> tuple[str, ...]:
        """What a request body's `model` field may say: any served id, or the Hugging Face id it came from."""
        return self.ids + ((self.info.source,) if self.info.source else ())

    def describe(self) -> dict[str, Any]:
        stats = self.worker.stats
        return {
            "id": self.name,
            "ids": list(self.ids),
            "task": self.info.task,
            "source": self.info.source,
            "precision": self.info.precision,
            "labels": list(self.info.labels),
            "state": self.worker.state.value,
            "queued": self.worker.queued,
            "queued_inputs": self.worker.queued_inputs,
            "requests": stats.requests,
            "model_runs": stats.model_runs,
            "inputs": stats.inputs,
            "dropped_requests": stats.dropped_requests,
            "dropped_inputs": stats.dropped_inputs,
        }


def default_loader(info: ModelInfo, threads: int | None, batch_tokens: int) -> Callable[[], Predictor]:
    """Load the model and run one warm-up input, so the first request does not pay for onnxruntime's first run."""

    def load() -> Predictor:
        task = registry.task_of(info)
        model = cast(Predictor, registry.facade(task).load(info.path, threads=threads, batch_tokens=batch_tokens))
        zero_shot = task is TaskName.ZERO_SHOT
        model.predict([WARM_UP_TEXT], ZeroShotClassificationParameters(("yes", "no")) if zero_shot else None)
        return model if zero_shot else TextModel(model)

    return load


class TextModel:
    """A text-classification model behind both of its routes: classification, and /rerank for a cross-encoder
    (one or two logits). The worker hands each group of jobs to `predict` with its parameters; rerank jobs carry
    RerankParameters."""

    def __init__(self, clf: Any) -> None:
        from engine.tasks.rerank import Reranker

        self.clf = clf
        self.reranker = Reranker(clf.model) if registry.is_cross_encoder(clf.model.info) else None

    def predict(self, inputs: Sequence[Any], parameters: Any) -> Sequence[Any]:
        from engine.tasks.rerank import RerankParameters

        if isinstance(parameters, RerankParameters):
            if self.reranker is None:
                raise InvalidRequestError("this model has more than two labels: it is not a cross-encoder")
            return self.reranker.predict(inputs, parameters)
        return list(self.clf.predict(inputs, parameters))


def build_models(
    dirs: Sequence[str | Path],
    aliases: Sequence[tuple[str, str]] = (),
    *,
    policy: BatchPolicy = DEFAULT_POLICY,
    threads: int | None = None,
    batch_tokens: int = batching.DEFAULT_BATCH_TOKENS,
    loader: Callable[[ModelInfo], Callable[[], Predictor]] | None = None,
) -> list[ServedModel]:
    """Read every directory's manifest and assign ids; `loader` replaces the real load (tests use it)."""
    if not dirs:
        raise ModelLoadError("give at least one model directory to serve")
    found = [resolve(d) for d in dirs]  # names are made into the model cache once
    infos = [manifest.read(path).info for path in found]
    # a model given by name (an alias, a Hub id) answers to that name first
    ids = [([str(d)] if path != Path(d) else []) + automatic_ids(info) for d, path, info in zip(dirs, found, infos)]
    ids = [list(dict.fromkeys(names)) for names in ids]
    owners: dict[str, set[int]] = {}
    for i, names in enumerate(ids):
        for name in names:
            owners.setdefault(name, set()).add(i)
    for name, who in owners.items():
        if len(who) > 1:
            print(f"engine serve: id {name!r} fits {len(who)} models and is not served; use --alias", file=sys.stderr)
    ids = [[n for n in names if len(owners[n]) == 1] for names in ids]
    for i, names in enumerate(ids):
        if not names:
            raise ModelLoadError(f"{infos[i].path} has no unambiguous id (same directory name and source as another)")
    for new, known in aliases:
        target = [i for i, names in enumerate(ids) if known in names]
        if not target:
            raise ModelLoadError(f"--alias {new}={known}: no served model is called {known!r}")
        clash = [i for i, names in enumerate(ids) if new in names and i != target[0]]
        if clash:
            raise ModelLoadError(f"--alias {new}={known}: {new!r} already names {infos[clash[0]].path}")
        if new not in ids[target[0]]:
            ids[target[0]].append(new)
    served = []
    for info, names in zip(infos, ids):
        load = (loader or (lambda i: default_loader(i, threads, batch_tokens)))(info)
        size = sum((info.path / f).stat().st_size for f in (MODEL_FILE, DATA_FILE) if (info.path / f).exists())
        worker = ModelWorker(names[0], load, policy, 1.0 + size / LOAD_BYTES_PER_SECOND)
        served.append(ServedModel(info, tuple(names), worker))
    return served


class ResultCache:
    """Bounded LRU of response bodies, keyed by (model, request); used from the event loop thread only."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any | None:
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        if self.size <= 0:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
