"""The torch side of `engine export`: a transformers checkpoint (alias, Cloudflare id, hub id or directory) loaded
with clear errors, its fp32 ONNX graph (transformers 5's own exporter, else optimum's on transformers 4.57), and the
torch logits every check is held to. torch and transformers are imported inside the functions that use them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ExportError
from engine.export import transformers_onnx
from engine.export.describe import window
from engine.model.aliases import ALIASES, Alias

REFERENCE_BATCH = 32  # texts of one token length per torch forward pass


def resolve(source: str) -> tuple[str, Alias | None]:
    """Alias or Cloudflare id -> hub id; a local directory or a hub id is returned as is."""
    if source in ALIASES:
        return ALIASES[source].hub_id, ALIASES[source]
    if source.startswith("@cf/"):
        raise ExportError(f"unknown Cloudflare model id {source!r}; known ids: {[a for a in ALIASES if a[0] == '@']}")
    return source, None


def load_checkpoint(source: str) -> tuple[Any, Any, Any]:
    """(config, tokenizer, torch model) from a hub id or a local directory, with clear errors."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    local = Path(source).is_dir()
    if not local and Path(source).exists():
        raise ExportError(f"{source} is a file; SOURCE must be a checkpoint directory, a hub id or an alias")
    if local and not (Path(source) / "config.json").is_file():  # else transformers guesses a type from the name
        raise ExportError(f"{source} is not a Hugging Face checkpoint directory: it has no config.json")
    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as exc:
        if local:
            raise ExportError(
                f"{source} is not a Hugging Face checkpoint directory (no usable config.json): {exc}"
            ) from exc
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = "HF_HUB_OFFLINE=1 is set" if offline else "no network, or no such model id"
        raise ExportError(
            f"cannot get {source!r} from the Hugging Face Hub ({hint}). Use an alias from --list, a correct "
            f"model id with network access, or a local checkpoint directory. Detail: {exc}"
        ) from exc
    except ValueError as exc:  # unknown model_type
        raise ExportError(f"{source}: unsupported architecture: {exc}") from exc
    if config.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        raise ExportError(f"{source}: model type {config.model_type!r} has no sequence-classification head")
    archs = getattr(config, "architectures", None) or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ExportError(
            f"{source} is a {archs[0]}, not a sequence classifier (…ForSequenceClassification); "
            "its classification head would be random. Export a fine-tuned classification checkpoint."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # transformers raises many kinds for missing or unconvertible tokenizer files
        raise ExportError(f"{source}: cannot load its tokenizer ({type(exc).__name__}: {exc})") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{source}: no fast tokenizer (tokenizer.json) could be built; the run time needs one")
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):  # transformers 5 builds an empty one from no files
        raise ExportError(f"{source}: cannot load its tokenizer (no tokenizer files: its vocabulary is empty)")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source).eval()
    except OSError as exc:  # no weights file
        raise ExportError(f"{source}: cannot load its weights: {exc}") from exc
    return config, tokenizer, model


def torch_logits(model: Any, tokenizer: Any, items: Sequence[str | tuple[str, str]], max_length: int) -> np.ndarray:
    """torch's logits of each item, tokenized alone and unpadded as the reference pipeline runs it. Items of the
    same token length run together (no padding then, so each row's computation is its own up to float rounding):
    a few dozen forward passes instead of one per text. Rows of one pass also have as many end-of-sequence tokens
    (BART's head pools them and needs the same count in every row)."""
    import inspect

    import torch

    accepted = set(inspect.signature(model.forward).parameters)
    encoded = []
    for item in items:
        a, b = item if isinstance(item, tuple) else (item, None)
        enc = tokenizer(a, b, return_tensors="pt", truncation="only_first" if b else True, max_length=max_length)
        encoded.append({k: v for k, v in enc.items() if k in accepted})
    eos = getattr(tokenizer, "eos_token_id", None)
    by_length: dict[tuple[int, int], list[int]] = {}
    for i, enc in enumerate(encoded):
        ids = enc["input_ids"]
        by_length.setdefault((int(ids.shape[1]), int((ids == eos).sum()) if eos is not None else 0), []).append(i)
    out: list[Any] = [None] * len(items)
    with torch.no_grad():
        for rows in by_length.values():
            for start in range(0, len(rows), REFERENCE_BATCH):
                chunk = rows[start : start + REFERENCE_BATCH]
                feed = {k: torch.cat([encoded[i][k] for i in chunk]) for k in encoded[chunk[0]]}
                logits = model(**feed).logits.float().numpy()
                for i, row in zip(chunk, logits, strict=True):
                    out[i] = row
    return np.stack(out)


def export_fp32(model: Any, workdir: Path) -> Path:
    """The fp32 graph: through transformers' own exporter (transformers 5), else optimum's (transformers 4.57)."""
    out = workdir / "fp32"
    if transformers_onnx.available():
        import importlib.util

        if importlib.util.find_spec("onnxscript") is None:
            raise ExportError("transformers 5 exports through onnxscript: pip install 'offline-textclf-engine[export]'")
        config = model.config
        limit = window(config.model_type, getattr(config, "max_position_embeddings", None), config.pad_token_id, None)
        try:
            transformers_onnx.export_fp32(model, out, limit)
        except Exception as exc:  # torch.export and the ONNX translation raise many kinds
            raise ExportError(f"transformers could not export this architecture to ONNX: {exc}") from exc
    else:
        from optimum.exporters.onnx import onnx_export_from_model

        try:
            onnx_export_from_model(model, out, task="text-classification", do_validation=False)
        except Exception as exc:  # optimum raises many kinds
            raise ExportError(f"optimum could not export this architecture to ONNX: {exc}") from exc
    onnx_path = out / "model.onnx"
    if not onnx_path.exists() or any(p.suffix in (".data", ".onnx_data") for p in out.iterdir()):
        raise ExportError("the export produced external-data files; models over 2 GB are not supported")
    return onnx_path
