"""A model directory made by scripts/export_models.py: manifest, integrity check, run-time description.

Layout: model.onnx, tokenizer.json, manifest.json. The manifest holds everything the run time needs (labels,
problem_type, window, pad id, NLI ids) plus the sha256 of every file, checked at load: bytes are hashed as read
and the same bytes are handed on, so what was checked is what runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import IntegrityError, ModelLoadError

MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
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

    @property
    def num_labels(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ModelFiles:
    """A loaded, verified directory: the description and the raw bytes of the graph and tokenizer."""

    info: ModelInfo
    onnx_bytes: bytes
    tokenizer_json: str
    manifest: dict[str, Any]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(
            f"{path.name} is missing from {path.parent}; re-export the model with scripts/export_models.py"
        ) from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


def _field(manifest: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    value = manifest.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ModelLoadError(f"{where}: field {key!r} is missing or of the wrong type; re-export the model")
    return value


def _labels(id2label: object, where: Path) -> tuple[str, ...]:
    if not isinstance(id2label, dict) or not id2label:
        raise ModelLoadError(f"{where}: id2label is missing or empty; re-export the model")
    try:
        by_id = {int(k): v for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise ModelLoadError(f"{where}: id2label keys must be integers 0..n-1") from None
    n = len(by_id)
    if sorted(by_id) != list(range(n)) or not all(isinstance(v, str) for v in by_id.values()):
        raise ModelLoadError(f"{where}: id2label must map every id 0..{n - 1} to a string label")
    return tuple(by_id[i] for i in range(n))


def parse_manifest(path: Path, manifest: dict[str, Any]) -> ModelInfo:
    where = path / MANIFEST
    if manifest.get("format") != FORMAT:
        raise ModelLoadError(f"{where}: unknown format {manifest.get('format')!r}, expected {FORMAT!r}")
    task = _field(manifest, "task", str, where)
    if task not in TASKS:
        raise ModelLoadError(f"{where}: unknown task {task!r}; expected one of {TASKS}")
    labels = _labels(manifest.get("id2label"), where)
    problem_type = manifest.get("problem_type")
    if problem_type is not None and not isinstance(problem_type, str):
        raise ModelLoadError(f"{where}: problem_type must be a string or null")
    max_length = _field(manifest, "max_length", int, where)
    if not 2 < max_length <= 1_000_000:
        raise ModelLoadError(f"{where}: max_length {max_length} is not a usable window")
    ids: dict[str, int | None] = {}
    for key in ("entailment_id", "contradiction_id"):
        value = manifest.get(key)
        if value is not None and (not isinstance(value, int) or not 0 <= value < len(labels)):
            raise ModelLoadError(f"{where}: {key} {value!r} is not a label id of this model")
        ids[key] = value
    return ModelInfo(
        path=path,
        task=task,
        model_type=_field(manifest, "model_type", str, where),
        labels=labels,
        problem_type=problem_type,
        max_length=max_length,
        pad_id=_field(manifest, "pad_token_id", int, where),
        precision=_field(manifest, "precision", str, where),
        entailment_id=ids["entailment_id"],
        contradiction_id=ids["contradiction_id"],
        source=str(manifest.get("source", "")),
    )


def load(path: str | Path, verify: bool = True) -> ModelFiles:
    """Read and check a model directory. verify=False skips the sha256 check (not recommended)."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(
            f"{path} is not a model directory; make one with `python scripts/export_models.py SOURCE --output {path}`"
        )
    try:
        manifest = json.loads(_read(path / MANIFEST))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path / MANIFEST} is not valid JSON ({exc}); re-export the model") from exc
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"{path / MANIFEST} must be a JSON object; re-export the model")
    info = parse_manifest(path, manifest)
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != {MODEL_FILE, TOKENIZER_FILE}:
        raise ModelLoadError(f"{path / MANIFEST}: 'files' must list exactly {MODEL_FILE} and {TOKENIZER_FILE}")
    blobs = {name: _read(path / name) for name in (MODEL_FILE, TOKENIZER_FILE)}
    if verify:
        for name, data in blobs.items():
            if sha256_bytes(data) != files[name]:
                raise IntegrityError(
                    f"{path / name} does not match the sha256 in its manifest: the file was changed or corrupted "
                    "after export. Re-export the model."
                )
    try:
        tokenizer_json = blobs[TOKENIZER_FILE].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{path / TOKENIZER_FILE} is not UTF-8 text; re-export the model") from exc
    return ModelFiles(info, blobs[MODEL_FILE], tokenizer_json, manifest)
