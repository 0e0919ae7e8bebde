"""What `engine serve` serves: model directories, the ids clients call them by, and a bounded result cache.

Ids of a model directory: its directory name, the manifest's "source" (the Hugging Face id it was exported
from) and that id's last part (the hub's legacy short form, e.g. `bart-large-mnli`), plus Cloudflare's id for
an int8 export of distilbert-sst-2. An automatic id claimed by two directories is dropped (ambiguous); explicit
`--alias NEW_ID=KNOWN_ID` aliases must not collide. Only the manifest is read at start-up; weights load lazily.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import batching, model_files
from .errors import ModelLoadError
from .serving_worker import BatchPolicy, ModelWorker, Predictor

CLOUDFLARE_IDS = {  # Cloudflare Workers AI id -> (Hugging Face id, precision) it runs
    "@cf/huggingface/distilbert-sst-2-int8": ("distilbert/distilbert-base-uncased-finetuned-sst-2-english", "int8"),
}
DEFAULT_POLICY = BatchPolicy()
LOAD_BYTES_PER_SECOND = 100e6  # rough: sha256 + onnxruntime session creation, for `estimated_time`


@dataclass(frozen=True)
class ServedModel:
    info: model_files.ModelInfo
    ids: tuple[str, ...]
    worker: ModelWorker = field(compare=False)

    @property
    def name(self) -> str:
        return self.ids[0]

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
            "requests": stats.requests,
            "model_runs": stats.model_runs,
            "inputs": stats.inputs,
        }


def read_info(path: Path) -> model_files.ModelInfo:
    """The manifest only (cheap): enough to route requests before the weights are loaded."""
    if not path.is_dir():
        raise ModelLoadError(f"{path} is not a model directory; make one with scripts/export_models.py")
    try:
        manifest = json.loads((path / model_files.MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path / model_files.MANIFEST} ({exc}); re-export the model") from None
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"{path / model_files.MANIFEST} must be a JSON object; re-export the model")
    return model_files.parse_manifest(path, manifest)


def default_loader(info: model_files.ModelInfo, threads: int | None, batch_tokens: int) -> Callable[[], Predictor]:
    def load() -> Predictor:
        if info.task == "zero-shot-classification":
            from .zero_shot import ZeroShotClassifier

            return ZeroShotClassifier.load(info.path, threads=threads, batch_tokens=batch_tokens)
        from .text_classification import TextClassifier

        return TextClassifier.load(info.path, threads=threads, batch_tokens=batch_tokens)

    return load


def automatic_ids(info: model_files.ModelInfo) -> list[str]:
    ids = [info.path.name]
    source = info.source
    if source and not source.startswith(("/", ".", "~")) and not Path(source).is_dir():  # a hub id, not a local dir
        ids += [source, source.rsplit("/", 1)[-1]]
    ids += [cf for cf, (hub, precision) in CLOUDFLARE_IDS.items() if (hub, precision) == (source, info.precision)]
    return list(dict.fromkeys(ids))


def build_models(
    dirs: Sequence[str | Path],
    aliases: Sequence[tuple[str, str]] = (),
    *,
    policy: BatchPolicy = DEFAULT_POLICY,
    threads: int | None = None,
    batch_tokens: int = batching.DEFAULT_BATCH_TOKENS,
    loader: Callable[[model_files.ModelInfo], Callable[[], Predictor]] | None = None,
) -> list[ServedModel]:
    """Read every directory's manifest and assign ids; `loader` replaces the real load (tests use it)."""
    if not dirs:
        raise ModelLoadError("give at least one model directory to serve")
    infos = [read_info(Path(d)) for d in dirs]
    ids = [automatic_ids(info) for info in infos]
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
        size = (
            (info.path / model_files.MODEL_FILE).stat().st_size if (info.path / model_files.MODEL_FILE).exists() else 0
        )
        worker = ModelWorker(names[0], load, policy, 1.0 + size / LOAD_BYTES_PER_SECOND)
        served.append(ServedModel(info, tuple(names), worker))
    return served


class ResultCache:
    """Bounded LRU of response bodies, keyed by (model, request); used from the event loop thread only."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self.hits = 0

    def get(self, key: Hashable) -> Any | None:
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return self._items[key]

    def put(self, key: Hashable, value: Any) -> None:
        if self.size <= 0:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
