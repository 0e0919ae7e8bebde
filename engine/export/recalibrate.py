"""`engine check MODEL --texts FILE --recalibrate OUT`: a new int8 graph calibrated and gated on the user's texts.

An export's static int8 scales were calibrated on the texts it was given (the built-in corpus by default); a
user's domain can move the activation ranges past them, and `engine check` shows the decisions that moved. The
fix used to be a new export with `--calibration-file`, which needs torch and the checkpoint. The kept fp32
reference (`--keep-fp32`) is all the int8 pipeline needs, so this hands it to `engine adopt --requantize`
(engine/export/adopt.py) as an fp32 ONNX export: the same fusion, recipe search, held-out gate and pruning, with
the user's texts as calibration and verification texts. No second int8 pipeline, no torch.

adopt reads a config.json and a tokenizer_config.json, which a model directory does not have: `adopt_files`
writes them from the manifest so that adopt's rules (engine/export/describe.py `describe`) give back the manifest's
own labels, window, pad id, pooled token and problem type, and `recalibrate` refuses the result if they do not.

OUT is a new directory, never MODEL: it keeps the same fp32 reference (so that it can be checked again) and
records where it came from under the manifest's `recalibrated_from`. The texts that chose and calibrated the
recipe (the gate's search split, `seen_texts`) are not held out: `engine check` reports the others as its
headline.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from engine.errors import ExportError
from engine.export import gate
from engine.export.adopt import adopt
from engine.export.check import CheckError, read_texts, reference_path
from engine.export.describe import PADDING_OFFSET_MODELS
from engine.export.verify import MIN_INT8_AGREEMENT, verification_inputs
from engine.model.fileio import fsync_dir, hash_regular, read_regular, sha256_hex, write_atomic
from engine.model.manifest import (
    FP32_REFERENCE_DATA_FILE,
    FP32_REFERENCE_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    ModelInfo,
    read,
)

# what adopt's description must give back unchanged: the run time's contract with the graph
DESCRIPTION_KEYS = (
    "task",
    "model_type",
    "id2label",
    "problem_type",
    "max_length",
    "pad_token_id",
    "pooled_token_id",
    "entailment_id",
    "contradiction_id",
)


@dataclass(frozen=True)
class Recalibration:
    output: Path
    manifest: dict[str, Any]  # OUT's manifest as written
    seen_texts: frozenset[str]  # texts of the gate's search split: they chose and calibrated the recipe


def adopt_files(info: ModelInfo, tokenizer_json: str) -> dict[str, dict[str, Any]]:
    """config.json and tokenizer_config.json from which adopt's `describe` reads back `info`: the labels (and
    label2id, where adopt finds NLI ids as the export did), the problem type, the window (as
    max_position_embeddings and model_max_length, the RoBERTa family's padding offset added back), the pad token
    by name, and BART's pooled eos id."""
    offset = info.pad_id + 1 if info.model_type in PADDING_OFFSET_MODELS else 0
    config: dict[str, Any] = {
        "model_type": info.model_type,
        "id2label": {str(i): label for i, label in enumerate(info.labels)},
        "label2id": {label: i for i, label in enumerate(info.labels)},
        "max_position_embeddings": info.max_length + offset,
        "pad_token_id": info.pad_id,
    }
    if info.problem_type is not None:
        config["problem_type"] = info.problem_type
    if info.pooled_token_id is not None:
        config["eos_token_id"] = info.pooled_token_id
    tokenizer_config: dict[str, Any] = {"model_max_length": info.max_length}
    pad_token = Tokenizer.from_str(tokenizer_json).id_to_token(info.pad_id)
    if pad_token is not None:
        tokenizer_config["pad_token"] = pad_token
    return {"config.json": config, "tokenizer_config.json": tokenizer_config}


def check_output(model_dir: Path, output: Path) -> Path:
    """OUT resolved; refused when it is MODEL, inside it, or an existing non-empty path. `engine export` and
    `engine adopt` replace their --output (re-making the same model is their point); here OUT sits beside an
    export that is being judged, and a slip (OUT = MODEL) would replace the very reference it is judged by."""
    out, src = output.resolve(), model_dir.resolve()
    if out == src or src in out.parents:
        raise CheckError(f"--recalibrate {output}: that is {model_dir} or inside it; MODEL is never changed")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckError(
            f"--recalibrate {output} exists and is not an empty directory; give a new directory (it is never replaced)"
        )
    return out


def seen_texts(items: list[Any]) -> frozenset[str]:
    """Every text of the gate's search split, second texts of pairs included."""
    search, _ = gate.split(items)
    return frozenset(t for i in search for t in (items[i] if isinstance(items[i], tuple) else (items[i],)))


def recalibrate(
    model_dir: str | Path,
    texts_file: Path,
    output: Path,
    min_agreement: float = MIN_INT8_AGREEMENT,
    log: Callable[[str], Any] = print,
) -> Recalibration:
    """Write OUT: MODEL's fp32 reference re-quantized, calibrated and gated on `texts_file` by adopt. Raises
    CheckError, before any work, when MODEL has no reference, is not a text classifier or OUT is taken, and when
    adopt refuses (too few texts, no int8 recipe passes the gate). Nothing is written then."""
    model_dir = Path(model_dir)
    reference = read_regular(reference_path(model_dir))[0]  # its digests checked: CheckError says --keep-fp32
    source = read(model_dir)
    kept = {
        rel: sha for rel, sha in source.extra_files.items() if rel in (FP32_REFERENCE_FILE, FP32_REFERENCE_DATA_FILE)
    }
    info = source.info
    if info.task != "text-classification":
        raise CheckError(
            f"{model_dir} is a {info.task} model: its int8 gate ranks label sets, which `engine check` does not "
            "measure, so it is not recalibrated here; re-export it with `engine export SOURCE --calibration-file "
            f"{texts_file} --zero-shot-labels A,B,...`"
        )
    out = check_output(model_dir, output)
    count = len(read_texts(texts_file))  # CheckError when unreadable or empty
    texts_sha256 = sha256_hex(read_regular(texts_file)[0])
    manifest_raw = json.loads(read_regular(model_dir / MANIFEST_FILE)[0])
    tokenizer_json = read_regular(model_dir / TOKENIZER_FILE)[0].decode("utf-8")

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.recalibrate-", dir=out.parent) as tmp:
        src = Path(tmp) / "source"
        src.mkdir()
        (src / MODEL_FILE).write_bytes(reference)
        if FP32_REFERENCE_DATA_FILE in kept:  # the reference's weights, where its graph reads them (adopt inlines)
            shutil.copyfile(model_dir / FP32_REFERENCE_DATA_FILE, src / Path(FP32_REFERENCE_DATA_FILE).name)
        (src / TOKENIZER_FILE).write_text(tokenizer_json, encoding="utf-8")
        for name, content in adopt_files(info, tokenizer_json).items():
            (src / name).write_text(json.dumps(content, indent=2), encoding="utf-8")
        staged = Path(tmp) / "model"
        try:
            manifest = adopt(
                str(src),
                staged,
                requantize=True,
                calibration_file=texts_file,
                min_agreement=min_agreement,
                log=log,
                rescore_margin=info.rescore_margin,
            )
        except ExportError as exc:  # its words name adopt's own files and options: say whose they are
            raise CheckError(
                f"recalibrating {model_dir} on {texts_file} failed in the int8 pipeline of `engine adopt "
                f"--requantize`, which said: {exc}"
            ) from exc
        before, after = source_description(manifest_raw), source_description(manifest)
        if before != after:
            changed = sorted(k for k in DESCRIPTION_KEYS if before.get(k) != after.get(k))
            raise CheckError(f"recalibrating {model_dir} changed its description ({changed}); nothing was written")
        manifest = {k: v for k, v in manifest.items() if k not in ("adopted", "source_revision")}
        manifest.update(
            source=manifest_raw.get("source", ""),
            **({"source_revision": manifest_raw["source_revision"]} if "source_revision" in manifest_raw else {}),
            extra_files=kept,
            recalibrated_from={
                "model": str(model_dir.resolve()),
                "manifest_sha256": source.sha256,
                "files": source.files,
                "quantization": (manifest_raw.get("quantization") or {}).get("name"),
                "texts": {"file": str(texts_file.resolve()), "sha256": texts_sha256, "count": count},
            },
        )
        # MODEL's reference as it is (adopt wrote the fused graph it verified): the one `engine check` measured
        shutil.rmtree((staged / FP32_REFERENCE_FILE).parent, ignore_errors=True)
        (staged / FP32_REFERENCE_FILE).parent.mkdir(parents=True)
        write_atomic(staged / FP32_REFERENCE_FILE, reference)
        if FP32_REFERENCE_DATA_FILE in kept:
            copied = staged / FP32_REFERENCE_DATA_FILE
            shutil.copyfile(src / Path(FP32_REFERENCE_DATA_FILE).name, copied)
            if hash_regular(copied)[0] != kept[FP32_REFERENCE_DATA_FILE]:
                raise CheckError(
                    f"{model_dir / FP32_REFERENCE_DATA_FILE} changed while it was copied; nothing was written"
                )
        write_atomic(staged / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
        os.replace(staged, out)  # onto nothing or an empty directory: a rename, so OUT is whole or absent
        fsync_dir(out.parent)
    items = verification_inputs(texts_file, pairs=info.num_labels == 1, nli=False)  # adopt's own items
    return Recalibration(out, manifest, seen_texts(items))


def source_description(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: manifest.get(k) for k in DESCRIPTION_KEYS}
