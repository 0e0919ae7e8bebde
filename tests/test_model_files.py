"""Loading a model directory: integrity and clear errors for broken directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine import IntegrityError, ModelLoadError, TextClassifier


@pytest.fixture()
def model_copy(exported: Any, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported("distilbert", "int8"), tmp_path / "m"))


def test_changed_byte_is_an_integrity_error(model_copy: Path) -> None:
    data = bytearray((model_copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model_copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256"):
        TextClassifier.load(model_copy)


def test_missing_file_names_it(model_copy: Path) -> None:
    (model_copy / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="tokenizer.json"):
        TextClassifier.load(model_copy)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="export_models"):
        TextClassifier.load(tmp_path / "nothing-here")


def test_manifest_not_json(model_copy: Path) -> None:
    (model_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="JSON"):
        TextClassifier.load(model_copy)


def test_label_map_missing_an_id(model_copy: Path) -> None:
    manifest = json.loads((model_copy / "manifest.json").read_text())
    del manifest["id2label"]["1"]
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="id2label"):
        TextClassifier.load(model_copy)


def test_label_count_must_match_graph_output(model_copy: Path) -> None:
    manifest = json.loads((model_copy / "manifest.json").read_text())
    manifest["id2label"]["3"] = "extra"
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="shape"):
        TextClassifier.load(model_copy)


def test_manifest_records_what_the_run_time_needs(model_copy: Path) -> None:
    manifest = json.loads((model_copy / "manifest.json").read_text())
    assert manifest["max_length"] == 64 and manifest["precision"] == "int8"
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json"}
    assert {"torch", "transformers", "onnxruntime"} <= set(manifest["tools"])
    assert manifest["verification"]["int8_top1_agreement"] >= 0.99
    assert sorted(p.name for p in model_copy.iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]


def test_fixed_padding_in_tokenizer_json_does_not_leak(exported: Any) -> None:
    path = exported("bert", "fp32")
    assert json.loads((path / "tokenizer.json").read_text())["padding"] is not None  # the file carries it...
    clf = TextClassifier.load(path)
    (prediction,) = clf.predict(["two words"])
    assert prediction.num_tokens == 4  # ...and the run time ignores it: [CLS] two words [SEP]
