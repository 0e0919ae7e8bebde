"""Models by name (engine.model.resolve): a directory, an alias or a Hugging Face id -> a verified model directory
in the engine's cache, made once (a lock), offline from the local Hugging Face cache, never used when tampered; and
error messages that say what a path is and the one command that fixes it."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import published
import pytest

from engine import ModelLoadError, TextClassifier
from engine.model import resolve as resolving

REPO = "tiny-org/tiny-bert-onnx"


@pytest.fixture
def hub(published_layout: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local Hugging Face cache holding an ONNX export of the tiny BERT, and an empty engine home; offline."""
    cache = tmp_path / "hub"
    published.hub_cache(published_layout("bert", "optimum"), cache, REPO)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants  # read at import: set it where the download functions look

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ENGINE_HOME", str(tmp_path / "home"))
    return cache


def test_a_hub_id_is_made_once_into_the_cache_and_reused(hub: Path, tmp_path: Path) -> None:
    said: list[str] = []
    first = resolving.resolve(REPO, log=said.append)
    assert first == tmp_path / "home" / "models" / "tiny-org--tiny-bert-onnx--int8"
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["source"] == REPO
    assert manifest["precision"] == "int8"
    assert any("not in the model cache" in s for s in said)
    said.clear()
    assert resolving.resolve(REPO, log=said.append) == first
    assert said == []
    clf = TextClassifier.load(REPO)
    assert clf.model.info.path == first
    assert clf("I like you.")


def test_concurrent_first_uses_make_it_once(hub: Path) -> None:
    said: list[str] = []
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(resolving.resolve(REPO, log=said.append))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert len(results) == 3
    assert sum("not in the model cache" in s for s in said) == 1


def test_a_tampered_cached_model_is_refused_offline(hub: Path) -> None:
    made = resolving.resolve(REPO, log=lambda _m: None)
    data = made / "model.onnx.data"
    blob = bytearray(data.read_bytes())
    blob[-1] ^= 0xFF
    data.write_bytes(bytes(blob))
    with pytest.raises(ModelLoadError, match="fails its checks and HF_HUB_OFFLINE=1"):
        resolving.resolve(REPO, log=lambda _m: None)


def test_a_hub_id_without_an_onnx_export_is_exported(
    hub: Path, checkpoint: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repository of a plain checkpoint: adopt finds no ONNX graph, so the export extra makes it (transformers 5's
    exporter, or optimum's with transformers 4.57), offline from the same hub cache."""
    import transformers.utils.hub as transformers_hub

    if hasattr(transformers_hub, "TRANSFORMERS_CACHE"):  # transformers 4.57 reads the cache path once, at import
        monkeypatch.setattr(transformers_hub, "TRANSFORMERS_CACHE", str(hub))
    repo = "tiny-org/tiny-bert-checkpoint"
    published.hub_cache(checkpoint("bert"), hub, repo)
    assert resolving.export_installed()
    said: list[str] = []
    made = resolving.resolve(repo, log=said.append)
    assert made == tmp_path / "home" / "models" / "tiny-org--tiny-bert-checkpoint--int8"
    assert any(f"no usable ONNX export of {repo}" in s for s in said)
    manifest = json.loads((made / "manifest.json").read_text())
    assert manifest["source"] == repo
    assert manifest["precision"] == "int8"
    assert "adopted" not in manifest
    assert TextClassifier.load(repo)("I like you.")


def test_offline_with_nothing_cached_says_so(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolving.importlib.util, "find_spec", lambda name: None if name == "torch" else object())
    with pytest.raises(ModelLoadError) as info:
        resolving.resolve("tiny-org/not-cached", log=lambda _m: None)
    assert "not-cached" in str(info.value)
    assert "export extra" in str(info.value)


def test_the_cache_root_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGINE_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolving.home() == tmp_path / "xdg" / "offline-textclf-engine"
    monkeypatch.setenv("ENGINE_HOME", str(tmp_path / "mine"))
    assert resolving.home() == tmp_path / "mine"


def test_error_texts_say_what_the_path_is_and_the_command(tmp_path: Path) -> None:
    """Each text, asserted: a pip user has no scripts/ folder, so every message names an `engine` command."""
    missing = tmp_path / "nope"
    with pytest.raises(ModelLoadError, match=r"nope is not a model directory: it does not exist\. Give a model"):
        TextClassifier.load(missing)
    a_file = tmp_path / "model.onnx"
    a_file.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"model\.onnx is a file; give the model directory that holds it"):
        TextClassifier.load(a_file)
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"is a transformers checkpoint.*`engine export .*ckpt --output NEW`"):
        TextClassifier.load(checkpoint)
    onnx_export = tmp_path / "onnx-export"
    (onnx_export / "onnx").mkdir(parents=True)
    (onnx_export / "onnx" / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"it is an ONNX export.*`engine adopt .*onnx-export --output NEW`"):
        TextClassifier.load(onnx_export)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"has no manifest\.json: it is not a model directory made by"):
        TextClassifier.load(empty)
