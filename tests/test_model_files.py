"""Loading a model directory: integrity and clear errors for broken directories."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import IntegrityError, ModelLoadError, TextClassifier


@pytest.fixture
def model_copy(exported: Any, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported("distilbert", "int8"), tmp_path / "m"))


@pytest.mark.parametrize(
    ("name", "match"), [("model.onnx", "sha256"), ("model.onnx.data", "model.onnx.data does not match the sha256")]
)
def test_changed_byte_is_an_integrity_error(model_copy: Path, name: str, match: str) -> None:
    data = bytearray((model_copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model_copy / name).write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=match):
        TextClassifier.load(model_copy)


@pytest.mark.parametrize(
    ("name", "match"), [("tokenizer.json", "tokenizer.json"), ("model.onnx.data", "model.onnx.data is missing")]
)
def test_missing_file_names_it(model_copy: Path, name: str, match: str) -> None:
    (model_copy / name).unlink()
    with pytest.raises(ModelLoadError, match=match):
        TextClassifier.load(model_copy)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="is not a model directory: it does not exist"):
        TextClassifier.load(tmp_path / "nothing-here")


def test_manifest_not_json(model_copy: Path) -> None:
    (model_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="JSON"):
        TextClassifier.load(model_copy)


def edit_manifest(model_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    change(manifest)
    (model_dir / "manifest.json").write_text(json.dumps(manifest))


def test_label_map_missing_an_id(model_copy: Path) -> None:
    edit_manifest(model_copy, lambda m: m["id2label"].pop("1"))
    with pytest.raises(ModelLoadError, match="id2label"):
        TextClassifier.load(model_copy)


def test_label_count_must_match_graph_output(model_copy: Path) -> None:
    edit_manifest(model_copy, lambda m: m["id2label"].update({"3": "extra"}))
    with pytest.raises(ModelLoadError, match="shape"):
        TextClassifier.load(model_copy)


def test_manifest_records_what_the_run_time_needs(model_copy: Path) -> None:
    manifest = json.loads((model_copy / "manifest.json").read_text())
    assert manifest["max_length"] == 64
    assert manifest["precision"] == "int8"
    assert set(manifest["files"]) == {"model.onnx", "model.onnx.data", "tokenizer.json"}
    assert {"torch", "transformers", "onnxruntime"} <= set(manifest["tools"])
    assert manifest["verification"]["int8_top1_agreement"] >= 0.99
    names = sorted(p.name for p in model_copy.iterdir())
    assert names == ["manifest.json", "model.onnx", "model.onnx.data", "tokenizer.json"]


def test_weights_file_must_be_regular(model_copy: Path) -> None:
    (model_copy / "model.onnx.data").unlink()
    (model_copy / "model.onnx.data").mkdir()
    with pytest.raises(ModelLoadError, match="not a regular file"):
        TextClassifier.load(model_copy)
    with pytest.raises(ModelLoadError, match="not a regular file"):
        TextClassifier.load(model_copy, verify=False)


def test_weights_file_not_in_the_manifest_is_refused(model_copy: Path) -> None:
    """The graph reads model.onnx.data only when the manifest lists (and so hashes) it."""
    edit_manifest(model_copy, lambda m: m["files"].pop("model.onnx.data"))
    with pytest.raises(ModelLoadError, match="the manifest lists no weights file"):
        TextClassifier.load(model_copy)


def test_single_file_exports_still_load(model_copy: Path, tmp_path: Path) -> None:
    """Exports made before the weights file (one self-contained model.onnx) load and score the same."""
    import hashlib

    import onnx

    expected = TextClassifier.load(model_copy)(["a fine day", "a grim night"], top_k=None)
    single = Path(shutil.copytree(model_copy, tmp_path / "single"))
    graph = onnx.load(str(single / "model.onnx"))  # reads the weights file beside it
    onnx.save(graph, str(single / "model.onnx"))
    (single / "model.onnx.data").unlink()
    digest = hashlib.sha256((single / "model.onnx").read_bytes()).hexdigest()

    def single_file(manifest: dict[str, Any]) -> None:
        del manifest["files"]["model.onnx.data"]
        manifest["files"]["model.onnx"] = digest

    edit_manifest(single, single_file)
    assert TextClassifier.load(single)(["a fine day", "a grim night"], top_k=None) == expected


def test_fixed_padding_in_tokenizer_json_does_not_leak(exported: Any) -> None:
    path = exported("bert", "fp32")
    assert json.loads((path / "tokenizer.json").read_text())["padding"] is not None  # the file carries it...
    clf = TextClassifier.load(path)
    (prediction,) = clf.predict(["two words"])
    assert prediction.num_tokens == 4  # ...and the run time ignores it: [CLS] two words [SEP]


@pytest.mark.parametrize("name", ["model.onnx", "model.onnx.data"])
@pytest.mark.parametrize("how", ["replaced", "written in place"])
def test_graph_changed_while_loading_is_an_integrity_error(
    model_copy: Path, monkeypatch: pytest.MonkeyPatch, how: str, name: str
) -> None:
    """onnxruntime reads model.onnx and its weights by path after the check: a change in that window must not go
    unnoticed."""
    import os

    from engine.runtime import loaded as model

    graph = model_copy / name

    class ChangedMeanwhile(model.OnnxSession):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if how == "replaced":
                shutil.copyfile(graph, model_copy / "other.onnx")
                os.replace(model_copy / "other.onnx", graph)
            else:
                graph.write_bytes(graph.read_bytes())
                st = graph.stat()
                os.utime(graph, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

    monkeypatch.setattr(model, "OnnxSession", ChangedMeanwhile)
    with pytest.raises(IntegrityError, match="changed while it was being loaded"):
        TextClassifier.load(model_copy)


def test_onnxruntime_reads_the_graph_from_its_path(model_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the graph's bytes handed to onnxruntime doubled peak memory at load: the verified bytes are
    released first (Python holds less than the graph's size when the session is built) and the path is handed."""
    import tracemalloc

    from engine.runtime import session

    seen: list[object] = []
    held: list[int] = []
    real = session.ort.InferenceSession

    def spy(graph: object, *args: Any, **kwargs: Any) -> Any:
        seen.append(graph)
        held.append(tracemalloc.get_traced_memory()[0])
        return real(graph, *args, **kwargs)

    monkeypatch.setattr(session.ort, "InferenceSession", spy)
    tracemalloc.start()
    try:
        clf = TextClassifier.load(model_copy)
    finally:
        tracemalloc.stop()
    assert seen == [str(model_copy / "model.onnx")]
    files = sum((model_copy / name).stat().st_size for name in ("model.onnx", "model.onnx.data"))
    tokenizer = (model_copy / "tokenizer.json").stat().st_size
    # the tokenizer's text and bytes (about twice tokenizer.json), not also the graph or its weights: a copy of
    # the graph would add all of `files`
    assert held[0] - 2 * tokenizer < files / 2
    assert clf("a fine day")[0].label


def test_the_weights_file_is_hashed_in_chunks(
    model_copy: Path, monkeypatch: pytest.MonkeyPatch, graph_reads: list[Path]
) -> None:
    """The weights file (most of the bytes) is never held in Python memory, not even to hash it."""
    import hashlib
    import tracemalloc

    from engine.model import fileio

    monkeypatch.setattr(fileio, "HASH_CHUNK", 64 << 10)
    weights = model_copy / "model.onnx.data"
    size = weights.stat().st_size
    assert size > 8 * fileio.HASH_CHUNK  # several chunks, or the test proves nothing
    tracemalloc.start()
    try:
        digest, _ = fileio.hash_regular(weights)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digest == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert peak < size / 4
    TextClassifier.load(model_copy)
    assert graph_reads.count(weights) == 1  # the loader hashes it that way


def test_manifest_schema_round_trips(model_copy: Path) -> None:
    """The export writes ModelInfo.to_dict(); reading it back gives the same description."""
    import json

    from engine.model import manifest

    found = manifest.read(model_copy)
    written = json.loads((model_copy / "manifest.json").read_text())
    assert {k: written[k] for k in found.info.to_dict()} == found.info.to_dict()
    assert manifest.ModelInfo.parse(model_copy, found.info.to_dict()) == found.info


@pytest.fixture
def verify_cache_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from engine.model import verify_cache

    monkeypatch.setenv("ENGINE_VERIFY_CACHE", str(tmp_path / "verified.json"))
    monkeypatch.setattr(verify_cache, "RACY_NS", 200_000_000)  # 0.2 s instead of 2 s, to keep the test short
    return tmp_path / "verified.json"


@pytest.fixture
def graph_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    from engine.model import files as model_files

    reads: list[Path] = []
    real, real_hash = model_files.read_regular, model_files.hash_regular

    def spy(path: Path) -> Any:
        reads.append(path)
        return real(path)

    def hash_spy(path: Path) -> Any:
        reads.append(path)
        return real_hash(path)

    monkeypatch.setattr(model_files, "read_regular", spy)
    monkeypatch.setattr(model_files, "hash_regular", hash_spy)
    return reads


def test_verified_graph_is_not_read_again_until_it_changes(
    model_copy: Path, verify_cache_file: Path, graph_reads: list[Path]
) -> None:
    import os
    import time

    graph = model_copy / "model.onnx"
    time.sleep(0.3)  # older than the racy window: the check may be remembered
    expected = TextClassifier.load(model_copy)("a fine day", top_k=None)
    assert graph in graph_reads
    assert verify_cache_file.exists()
    graph_reads.clear()
    assert TextClassifier.load(model_copy)("a fine day", top_k=None) == expected
    assert graph not in graph_reads  # verified unchanged: not read, hashed or scanned again
    assert model_copy / "model.onnx.data" not in graph_reads  # nor the weights file
    weights, st = model_copy / "model.onnx.data", (model_copy / "model.onnx.data").stat()
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(IntegrityError, match=r"model\.onnx\.data does not match the sha256"):
        TextClassifier.load(model_copy)
    weights.write_bytes(original)
    data, st = graph.read_bytes(), graph.stat()
    graph.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, and the same mtime put back
    os.utime(graph, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(IntegrityError, match="does not match the sha256"):
        TextClassifier.load(model_copy)
    graph.write_bytes(data)
    edit_manifest(model_copy, lambda m: m["files"].update({"model.onnx": "0" * 64}))
    with pytest.raises(IntegrityError, match="does not match the sha256"):  # the manifest changes: not from cache
        TextClassifier.load(model_copy)


def test_a_graph_written_just_now_is_not_remembered(
    model_copy: Path, verify_cache_file: Path, graph_reads: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within the racy window a later change could keep the file's identity: such a check is not cached."""
    from engine.model import verify_cache

    monkeypatch.setattr(verify_cache, "RACY_NS", 3600 * 10**9)
    TextClassifier.load(model_copy)
    graph_reads.clear()
    TextClassifier.load(model_copy)
    assert model_copy / "model.onnx" in graph_reads


def test_a_cache_others_may_write_is_ignored(
    model_copy: Path, verify_cache_file: Path, graph_reads: list[Path]
) -> None:
    import time

    time.sleep(0.3)
    TextClassifier.load(model_copy)
    verify_cache_file.chmod(0o666)
    graph_reads.clear()
    TextClassifier.load(model_copy)
    assert model_copy / "model.onnx" in graph_reads
