"""What a model is, read from its config: labels, window, NLI ids, pad and pooled token. One set of rules for
`engine export` (a transformers config) and `engine adopt` (config.json as published), so that an exported and
an adopted directory of the same weights describe the model alike."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import ExportError
from engine.model.onnx_scan import CorruptGraph, scan_onnx

# Position embeddings of these models start after the padding index, so the window is shorter by that offset.
PADDING_OFFSET_MODELS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text"}
# sequence-classification heads that pool the hidden state of the last EOS token (and need equal EOS counts per batch)
EOS_POOLED_MODELS = {"bart", "mbart", "plbart", "mvp", "led", "bigbird_pegasus"}


def window(model_type: str, max_positions: object, pad_token_id: object, model_max_length: object) -> int:
    """The longest input in tokens: the tokenizer's limit (ignoring transformers' 1e30 "no limit" placeholder),
    capped by the position embeddings (RoBERTa-family positions start after the padding index)."""
    limits = []
    if isinstance(model_max_length, int | float) and 0 < model_max_length < 100_000:
        limits.append(int(model_max_length))
    if isinstance(max_positions, int) and not isinstance(max_positions, bool) and max_positions > 0:
        offset = (
            (pad_token_id if isinstance(pad_token_id, int) else 0) + 1 if model_type in PADDING_OFFSET_MODELS else 0
        )
        limits.append(max_positions - offset)
    return min(limits) if limits else 512


def nli_ids(label2id: Mapping[str, int], num_labels: int) -> tuple[int | None, int | None]:
    """(entailment id, contradiction id) as the zero-shot pipeline finds them; (None, None) if not NLI."""
    for label, idx in label2id.items():
        if label.lower().startswith("entail"):
            entail = int(idx)
            contradiction = num_labels - 1 if entail == 0 else 0  # the reference's -1 means the last
            return entail, contradiction
    return None, None


@dataclass(frozen=True)
class Description:
    """What adopt reads from config.json and tokenizer_config.json, with the export's rules."""

    model_type: str
    labels: tuple[str, ...]
    problem_type: str | None
    max_length: int
    pad_id: int
    entailment_id: int | None
    contradiction_id: int | None
    pooled_id: int | None


def describe(
    config: dict[str, Any], tokenizer_config: dict[str, Any], tokenizer_json: str, graph: bytes
) -> Description:
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise ExportError("config.json has no model_type")
    archs = config.get("architectures") or []
    if archs and not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise ExportError(
            f"config.json describes a {archs[0]}, not a sequence classifier (...ForSequenceClassification)"
        )
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        try:
            by_id = {int(k): str(v) for k, v in id2label.items()}
        except ValueError:
            raise ExportError("config.json: id2label keys must be integers") from None
        labels = tuple(by_id.get(i, f"LABEL_{i}") for i in range(max(by_id) + 1))
    else:  # transformers' default names, as many labels as the graph's logits
        try:
            out = scan_onnx(graph).outputs
        except CorruptGraph:
            out = ()
        width = out[0].shape[1] if out and out[0].shape and len(out[0].shape) == 2 else None
        if not isinstance(width, int):
            raise ExportError("config.json has no id2label and the graph does not say how many labels it has")
        labels = tuple(f"LABEL_{i}" for i in range(width))
    label2id = config.get("label2id") if isinstance(config.get("label2id"), dict) else None
    entail, contra = nli_ids(label2id or {label: i for i, label in enumerate(labels)}, len(labels))
    max_length = window(
        model_type,
        config.get("max_position_embeddings"),
        config.get("pad_token_id"),
        tokenizer_config.get("model_max_length"),
    )
    pooled = config.get("eos_token_id") if model_type in EOS_POOLED_MODELS else None
    return Description(
        model_type=model_type,
        labels=labels,
        problem_type=config.get("problem_type") if isinstance(config.get("problem_type"), str) else None,
        max_length=max_length,
        pad_id=pad_id(config, tokenizer_config, tokenizer_json),
        entailment_id=entail,
        contradiction_id=contra,
        pooled_id=pooled if isinstance(pooled, int) else None,
    )


def pad_id(config: dict[str, Any], tokenizer_config: dict[str, Any], tokenizer_json: str) -> int:
    """The tokenizer's pad token (as transformers' tokenizer.pad_token_id), else config.json's, else 0."""
    from tokenizers import Tokenizer

    token = tokenizer_config.get("pad_token")
    token = token.get("content") if isinstance(token, dict) else token
    if isinstance(token, str):
        found = Tokenizer.from_str(tokenizer_json).token_to_id(token)
        if found is not None:
            return int(found)
    padding = json.loads(tokenizer_json).get("padding") or {}
    if isinstance(padding.get("pad_id"), int) and padding.get("pad_token") is not None:
        return int(padding["pad_id"])
    return config["pad_token_id"] if isinstance(config.get("pad_token_id"), int) else 0
