"""Ready-made ONNX exports laid out as they are published, built from the tests' tiny checkpoints (no network).

- optimum: model.onnx and model_quantized.onnx at the root, with config.json and the tokenizer files;
- transformers.js (Xenova/...): the same root files, graphs under onnx/ (model.onnx, model_quantized.onnx,
  model_int8.onnx);
- a Hugging Face Hub cache holding one of them (models--org--name/blobs, snapshots/REV, refs/main), as the hub
  client lays it out, for `engine adopt org/name` with HF_HUB_OFFLINE=1.

The quantized files are made as those repositories make theirs: onnxruntime's quantize_dynamic, per-tensor
weights, no reduce_range (QUInt8 for model_quantized, QInt8 for model_int8).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

ROOT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def quantize_like_the_hub(fp32: Path, out: Path, signed: bool = False) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight_type = QuantType.QInt8 if signed else QuantType.QUInt8
    quantize_dynamic(str(fp32), str(out), weight_type=weight_type, per_channel=False, reduce_range=False)
    return out


def root_files(checkpoint: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name in ROOT_FILES:
        if (checkpoint / name).is_file():
            shutil.copyfile(checkpoint / name, out / name)
    return out


def optimum_layout(checkpoint: Path, fp32_graph: Path, out: Path) -> Path:
    root_files(checkpoint, out)
    shutil.copyfile(fp32_graph, out / "model.onnx")
    quantize_like_the_hub(out / "model.onnx", out / "model_quantized.onnx")
    return out


def transformers_js_layout(checkpoint: Path, fp32_graph: Path, out: Path) -> Path:
    root_files(checkpoint, out)
    (out / "onnx").mkdir()
    shutil.copyfile(fp32_graph, out / "onnx" / "model.onnx")
    quantize_like_the_hub(out / "onnx" / "model.onnx", out / "onnx" / "model_quantized.onnx")
    quantize_like_the_hub(out / "onnx" / "model.onnx", out / "onnx" / "model_int8.onnx", signed=True)
    return out


def hub_cache(layout: Path, cache: Path, repo: str, revision: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """`layout`'s files in a hub cache under `cache` (HF_HUB_CACHE): blobs named by digest, snapshot symlinks,
    refs/main naming the revision. Returns the snapshot directory."""
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / revision
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in layout.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / path.relative_to(layout)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (len(path.relative_to(layout).parts) + 1)) / "blobs" / blob.name)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot
