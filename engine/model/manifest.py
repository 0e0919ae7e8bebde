"""The manifest schema of a model directory (manifest.json): the one place that reads and writes it.

It holds everything the run time needs (labels, problem_type, window, pad id, NLI ids) plus the sha256 of every
file, checked at load. scripts/export_models.py writes it with `ModelInfo.to_dict()`; the loader and the
server read it with `read()`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ModelLoadError
from engine.model.fileio import NotRegularFileError, read_regular, sha256_hex

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"  # the graph's large tensors (optional), memory-mapped by onnxruntime
TOKENIZER_FILE = "tokenizer.json"
# the verified fp32 graph beside an int8 one (under `extra_files`): it re-scores the int8 graph's near-ties
# (`rescore_margin`) and is the reference `engine check` measures against
FP32_REFERENCE_FILE = "reference/model.fp32.onnx"
# its large tensors, beside it (exports since this file was introduced; older ones keep the graph in one file):
# onnxruntime maps them as it maps DATA_FILE, so a loaded reference is not held twice in memory
FP32_REFERENCE_DATA_FILE = "reference/model.fp32.onnx.data"
FORMAT = "engine-model/1"
TASKS = ("text-classification", "zero-shot-classification")


@dataclass(frozen=True)
class ModelInfo:
    """What the run time needs to know about an exported model."""

    path: Path
    task: str
    model_type: str
    labels: tuple[str, ...]
    problem_type: str | None
    max_length: int
    pad_id: int
    precision: str
    entailment_id: int | None = None
    contradiction_id: int | None = None
    source: str = ""
    pooled_token_id: int | None = None  # BART-family heads pool the last of this token: batch rows by its count
    # rows whose int8 decision margin (engine.runtime.postprocess.margins) is below this are re-scored by the fp32
    # graph FP32_REFERENCE_FILE (engine.runtime.loaded); None: the int8 graph answers every row
    rescore_margin: float | None = None

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's fields (without `files`, added by the writer with the files' digests)."""
        return {
            "format": FORMAT,
            "task": self.task,
            "source": self.source,
            "model_type": self.model_type,
            "id2label": {str(i): label for i, label in enumerate(self.labels)},
            "problem_type": self.problem_type,
            "max_length": self.max_length,
            "pad_token_id": self.pad_id,
            "pooled_token_id": self.pooled_token_id,
            "entailment_id": self.entailment_id,
            "contradiction_id": self.contradiction_id,
            "precision": self.precision,
            **({"rescore_margin": self.rescore_margin} if self.rescore_margin is not None else {}),
        }

    @classmethod
    def parse(cls, path: Path, manifest: dict[str, Any]) -> ModelInfo:
        """Validate a manifest's fields (ModelLoadError naming the bad one) into a ModelInfo for `path`."""
        where = path / MANIFEST_FILE
        if manifest.get("format") != FORMAT:
            raise ModelLoadError(
                f"{where}: unknown format {manifest.get('format')!r}, expected {FORMAT!r}; re-export the model"
            )
        task = _field(manifest, "task", str, where)
        if task not in TASKS:
            raise ModelLoadError(f"{where}: unknown task {task!r}; expected one of {TASKS}; re-export the model")
        labels = _labels(manifest.get("id2label"), where)
        problem_type = manifest.get("problem_type")
        if problem_type is not None and not isinstance(problem_type, str):
            raise ModelLoadError(f"{where}: problem_type must be a string or null; re-export the model")
        max_length = _field(manifest, "max_length", int, where)
        if not 2 < max_length <= 1_000_000:
            raise ModelLoadError(f"{where}: max_length {max_length} is not a usable window; re-export the model")
        pad_id = _field(manifest, "pad_token_id", int, where)
        if pad_id < 0:
            raise ModelLoadError(f"{where}: pad_token_id {pad_id} is negative; re-export the model")
        ids: dict[str, int | None] = {}
        for key in ("entailment_id", "contradiction_id"):
            value = manifest.get(key)
            if value is not None and (not isinstance(value, int) or not 0 <= value < len(labels)):
                raise ModelLoadError(f"{where}: {key} {value!r} is not a label id of this model; re-export the model")
            ids[key] = value
        pooled = manifest.get("pooled_token_id")
        if pooled is not None and (isinstance(pooled, bool) or not isinstance(pooled, int) or pooled < 0):
            raise ModelLoadError(f"{where}: pooled_token_id {pooled!r} is not a token id; re-export the model")
        rescore = manifest.get("rescore_margin")
        if rescore is not None and (
            isinstance(rescore, bool) or not isinstance(rescore, (int, float)) or not 0 < rescore <= 1
        ):
            raise ModelLoadError(f"{where}: rescore_margin {rescore!r} is not within (0, 1]; re-export the model")
        return cls(
            path=path,
            task=task,
            model_type=_field(manifest, "model_type", str, where),
            labels=labels,
            problem_type=problem_type,
            max_length=max_length,
            pad_id=pad_id,
            precision=_field(manifest, "precision", str, where),
            entailment_id=ids["entailment_id"],
            contradiction_id=ids["contradiction_id"],
            source=str(manifest.get("source", "")),
            pooled_token_id=pooled,
            rescore_margin=None if rescore is None else float(rescore),
        )


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest.json: the description, the sha256 of each file, and the digest of the manifest itself
    (which identifies the export: a scoring job records it to refuse resuming with another model)."""

    info: ModelInfo
    files: dict[str, str]
    sha256: str
    extra_files: dict[str, str] = field(default_factory=dict)  # beside the run time's files: the fp32 reference


def cannot_read(path: Path, exc: OSError) -> ModelLoadError:
    if isinstance(exc, NotRegularFileError):
        return ModelLoadError(f"{path} is not a regular file; re-export the model")
    if isinstance(exc, FileNotFoundError):
        return ModelLoadError(
            f"{path.name} is missing from {path.parent}; re-export the model (`engine export` or `engine adopt` "
            "into a new directory)"
        )
    return ModelLoadError(f"cannot read {path}: {exc}; check its permissions or re-export the model")


def read(directory: str | Path) -> Manifest:
    """Read and validate `directory`/manifest.json (the manifest only: cheap, no weights)."""
    path = Path(directory)
    if not os.path.lexists(path / MANIFEST_FILE):  # a special file there is refused below, by read_regular
        from engine.model.resolve import describe_path

        raise ModelLoadError(describe_path(path))
    where = path / MANIFEST_FILE
    try:
        data, _ = read_regular(where)
    except OSError as exc:
        raise cannot_read(where, exc) from exc
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{where} is not valid JSON ({exc}); re-export the model") from exc
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"{where} must be a JSON object; re-export the model")
    info = ModelInfo.parse(path, manifest)
    files = manifest.get("files")
    if (
        not isinstance(files, dict)
        or set(files) - {DATA_FILE} != {MODEL_FILE, TOKENIZER_FILE}
        or not all(isinstance(v, str) for v in files.values())
    ):
        raise ModelLoadError(
            f"{where}: 'files' must list exactly {MODEL_FILE} and {TOKENIZER_FILE} (and {DATA_FILE} if the graph "
            "keeps its weights there); re-export the model"
        )
    extras = manifest.get("extra_files") or {}
    if not isinstance(extras, dict) or not all(isinstance(v, str) for v in extras.values()):
        raise ModelLoadError(f"{where}: 'extra_files' must map file names to sha256 digests; re-export the model")
    if info.rescore_margin is not None and FP32_REFERENCE_FILE not in extras:
        raise ModelLoadError(
            f"{where}: rescore_margin needs the fp32 graph {FP32_REFERENCE_FILE} listed under 'extra_files'; "
            "re-export the model"
        )
    return Manifest(info, dict(files), sha256_hex(data), dict(extras))


def _field(manifest: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    value = manifest.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ModelLoadError(f"{where}: field {key!r} is missing or of the wrong type; re-export the model")
    return value


def _labels(id2label: object, where: Path) -> tuple[str, ...]:
    if not isinstance(id2label, dict) or not id2label:
        raise ModelLoadError(f"{where}: id2label is missing or empty; re-export the model")
    try:
        by_id = {int(k): v for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise ModelLoadError(f"{where}: id2label keys must be integers 0..n-1; re-export the model") from None
    n = max(by_id) + 1
    missing = sorted(set(range(n)) - set(by_id))
    if min(by_id) < 0 or missing or not all(isinstance(v, str) for v in by_id.values()):
        raise ModelLoadError(
            f"{where}: id2label must map every id 0..{n - 1}, and no other, to a string label "
            f"(missing ids: {missing}); re-export the model"
        )
    labels = tuple(by_id[i] for i in range(n))
    if len(set(labels)) != n:
        dupes = sorted({label for label in labels if labels.count(label) > 1})
        raise ModelLoadError(
            f"{where}: id2label names {dupes} more than once, so outputs would be ambiguous; re-export the model"
        )
    return labels
