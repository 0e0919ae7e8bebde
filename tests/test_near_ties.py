"""Near-ties re-scored in fp32 (engine.runtime.loaded.NearTies; `engine export --rescore-near-ties`): the rows whose
int8 margin is below the manifest's `rescore_margin` are answered by the fp32 graph kept beside, the others by
int8; each row's answer depends on that row alone; the gate confirms the cascade's output on every decision."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from engine import TextClassifier
from engine.errors import IntegrityError, ModelLoadError
from engine.export import gate
from engine.export.verify import RESCORE_MARGIN
from engine.model.manifest import FP32_REFERENCE_DATA_FILE, FP32_REFERENCE_FILE, MANIFEST_FILE, MODEL_FILE
from engine.runtime import batching
from engine.runtime.loaded import LoadedModel
from engine.runtime.postprocess import margins
from engine.runtime.session import OnnxSession
from engine.runtime.tokenization import Strategy, Truncation

TEXTS = [
    f"review {i}: the {w} was {s} today"
    for i, (w, s) in enumerate(
        (w, s)
        for w in ("service", "food", "room", "screen", "battery", "app")
        for s in ("great", "slow", "fine", "awful")
    )
]


def graph_logits(model: Path, graph: Path, texts: list[str]) -> np.ndarray:
    """A graph of `model` alone (no cascade) on `texts`, batched as the run time batches them."""
    loaded = LoadedModel.load(model, threads=1)
    encoded = loaded.tokenizer.encode(texts, Truncation(strategy=Strategy.LONGEST_FIRST))
    session = OnnxSession(graph, loaded.info.num_labels, 1)
    out = np.empty((len(texts), loaded.info.num_labels), dtype=np.float32)
    for batch in batching.batches(encoded, loaded.info.pad_id, pooled_id=loaded.info.pooled_token_id):
        out[batch.index] = session.run(batch)
    return out


def with_margin(model: Path, margin: object, where: Path) -> Path:
    """A copy of `model` whose manifest says `rescore_margin: margin` (every file still matches its digest)."""
    copy = where / f"margin-{margin}"
    shutil.copytree(model, copy)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["rescore_margin"] = margin
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    return copy


@pytest.fixture(scope="module")
def cascaded(exported: Callable[..., Path]) -> Path:
    """The tiny BERT's int8 export with the default --rescore-near-ties."""
    return exported("bert", "int8", rescore=RESCORE_MARGIN)


def test_the_default_export_keeps_fp32_for_near_ties_and_confirms_every_decision(cascaded: Path) -> None:
    manifest = json.loads((cascaded / MANIFEST_FILE).read_text())
    assert manifest["rescore_margin"] == RESCORE_MARGIN
    # the fp32 graph keeps its weights in a file of their own, which onnxruntime maps as it maps model.onnx.data
    assert set(manifest["extra_files"]) == {FP32_REFERENCE_FILE, FP32_REFERENCE_DATA_FILE}
    assert FP32_REFERENCE_FILE not in manifest["files"]
    graph, weights = (
        (cascaded / FP32_REFERENCE_FILE).stat().st_size,
        (cascaded / FP32_REFERENCE_DATA_FILE).stat().st_size,
    )
    assert weights > 10 * graph
    g = manifest["verification"]["int8_gate"]
    assert g["confirm_near_ties"] == 0  # every decision counted: the cascade answers the near-ties
    assert 0 < g["confirm_rescored_in_fp32"] < g["confirm_inputs"]
    assert "every decision" in g["counts"]
    assert g["looks"][-1]["passed"]


def test_without_rescoring_no_fp32_graph_is_written(exported: Callable[..., Path]) -> None:
    manifest = json.loads((exported("bert", "int8") / MANIFEST_FILE).read_text())
    assert "rescore_margin" not in manifest
    assert "extra_files" not in manifest
    assert "every decision" not in manifest["verification"]["int8_gate"]["counts"]


def test_zero_shot_exports_do_not_rescore(exported: Callable[..., Path]) -> None:
    """An NLI row is one (premise, label) pair: a zero-shot decision spans a text's pairs, so no row margin says it is
    near; the export keeps no fp32 graph for it."""
    manifest = json.loads((exported("bert-nli", "int8", rescore=RESCORE_MARGIN) / MANIFEST_FILE).read_text())
    assert "rescore_margin" not in manifest
    assert "extra_files" not in manifest


def test_rows_below_the_margin_come_from_fp32_and_the_others_from_int8(cascaded: Path, tmp_path: Path) -> None:
    int8 = graph_logits(cascaded, cascaded / MODEL_FILE, TEXTS)
    fp32 = graph_logits(cascaded, cascaded / FP32_REFERENCE_FILE, TEXTS)
    margin = float(np.median(margins(int8)))  # half the rows each way
    near = margins(int8) < margin
    assert 0 < near.sum() < len(TEXTS)
    assert np.abs(int8 - fp32)[near].max() > 1e-4  # the two graphs differ, so the test can tell them apart
    model = LoadedModel.load(with_margin(cascaded, margin, tmp_path), threads=1)
    encoded = model.tokenizer.encode(TEXTS, Truncation(strategy=Strategy.LONGEST_FIRST))
    got = model.logits(encoded)
    np.testing.assert_allclose(got[near], fp32[near], atol=1e-5)
    np.testing.assert_allclose(got[~near], int8[~near], atol=1e-5)
    assert model.near_ties is not None
    assert model.near_ties.rescored == int(near.sum())
    for i in (int(np.flatnonzero(near)[0]), int(np.flatnonzero(~near)[0])):  # each row as it is alone
        np.testing.assert_allclose(model.logits([encoded[i]])[0], got[i], atol=1e-5)
    gate_view, rescored = gate.cascade(int8, fp32, margin)  # the gate measures the same output
    np.testing.assert_allclose(gate_view, got, atol=1e-5)
    assert rescored == int(near.sum())


def test_the_fp32_graph_is_loaded_only_when_a_near_tie_comes(cascaded: Path, tmp_path: Path) -> None:
    clf = TextClassifier.load(with_margin(cascaded, 1e-9, tmp_path), threads=1)
    clf(TEXTS)
    near_ties = clf.model.near_ties
    assert near_ties is not None
    assert near_ties._session is None
    assert near_ties.rescored == 0
    everything = TextClassifier.load(with_margin(cascaded, 1.0, tmp_path), threads=1)
    fp32 = graph_logits(cascaded, cascaded / FP32_REFERENCE_FILE, TEXTS)
    got = everything(TEXTS, function_to_apply="none", top_k=None)
    labels = everything.model.info.labels
    as_array = np.array([[{o.label: o.score for o in row}[label] for label in labels] for row in got])
    np.testing.assert_allclose(as_array, fp32, atol=1e-5)


def test_the_fp32_session_does_not_spin_beside_the_int8_one(cascaded: Path, tmp_path: Path) -> None:
    """onnxruntime's threads spin after each run by default; the occasional fp32 session's must not take the cores
    from the int8 session's (OnnxSession's doc, experiments/cascade_spinning.py)."""
    clf = TextClassifier.load(with_margin(cascaded, 1.0, tmp_path))
    clf(TEXTS[:2])
    near_ties = clf.model.near_ties
    assert near_ties is not None
    assert near_ties._session is not None
    options = near_ties._session._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(RuntimeError, match="allow_spinning"):  # the int8 session keeps onnxruntime's default
        clf.model.session._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")


@pytest.mark.parametrize("margin", [0, -0.1, 1.5, "0.2", True])
def test_a_bad_margin_is_refused_at_load(cascaded: Path, tmp_path: Path, margin: object) -> None:
    with pytest.raises(ModelLoadError, match="rescore_margin"):
        LoadedModel.load(with_margin(cascaded, margin, tmp_path))


def test_a_margin_without_the_fp32_graph_is_refused(cascaded: Path, tmp_path: Path) -> None:
    copy = with_margin(cascaded, 0.2, tmp_path)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    del manifest["extra_files"]
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="extra_files"):
        LoadedModel.load(copy)


def test_a_changed_fp32_graph_is_refused_at_load(cascaded: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(cascaded, copy)
    graph = copy / FP32_REFERENCE_FILE
    data = bytearray(graph.read_bytes())
    data[-1] ^= 1
    graph.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.fp32\.onnx"):
        LoadedModel.load(copy)
    (copy / FP32_REFERENCE_FILE).unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        LoadedModel.load(copy)


def test_a_changed_fp32_weights_file_is_refused_at_load(cascaded: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(cascaded, copy)
    weights = copy / FP32_REFERENCE_DATA_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.fp32\.onnx\.data"):
        LoadedModel.load(copy)
    weights.unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        LoadedModel.load(copy)


def test_an_fp32_graph_reading_weights_elsewhere_is_refused(cascaded: Path, tmp_path: Path) -> None:
    """Digests that match do not make external data safe: a reference whose tensors point outside its own weights
    file is refused before onnxruntime reads it, as model.onnx's are."""
    import onnx

    copy = with_margin(cascaded, 1.0, tmp_path)
    graph = onnx.load(str(copy / FP32_REFERENCE_FILE), load_external_data=False)
    tensor = next(t for t in graph.graph.initializer if t.external_data)
    next(e for e in tensor.external_data if e.key == "location").value = "../model.onnx.data"
    raw = graph.SerializeToString()
    (copy / FP32_REFERENCE_FILE).write_bytes(raw)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["extra_files"][FP32_REFERENCE_FILE] = hashlib.sha256(raw).hexdigest()
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    clf = TextClassifier.load(copy, threads=1)
    with pytest.raises(ModelLoadError, match=r"external data.*model\.fp32\.onnx\.data"):
        clf(TEXTS[:2])


def test_an_fp32_graph_in_one_file_still_loads(cascaded: Path, tmp_path: Path) -> None:
    """Exports made before the reference kept a weights file hold it as one self-contained graph."""
    import onnx

    copy = with_margin(cascaded, 1.0, tmp_path)
    whole = onnx.load(str(copy / FP32_REFERENCE_FILE)).SerializeToString()  # its weights read back in
    (copy / FP32_REFERENCE_DATA_FILE).unlink()
    (copy / FP32_REFERENCE_FILE).write_bytes(whole)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    del manifest["extra_files"][FP32_REFERENCE_DATA_FILE]
    manifest["extra_files"][FP32_REFERENCE_FILE] = hashlib.sha256(whole).hexdigest()
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    fp32 = graph_logits(cascaded, cascaded / FP32_REFERENCE_FILE, TEXTS)
    got = LoadedModel.load(copy, threads=1)
    encoded = got.tokenizer.encode(TEXTS, Truncation(strategy=Strategy.LONGEST_FIRST))
    np.testing.assert_allclose(got.logits(encoded), fp32, atol=1e-5)  # margin 1.0: every row from fp32


def test_the_gate_confirms_the_cascade_on_every_decision() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 3, size=(1200, 3)).astype(np.float32)
    candidate = reference.copy()
    near = np.flatnonzero(margins(reference) < 0.05)[:30]
    candidate[near] = reference[near][:, [1, 0, 2]]  # int8 swaps the near-ties' top two
    assert (margins(candidate[near]) < 0.2).all()
    alone = gate.confirm(reference, candidate, 0.99, 0.95)
    rescored = gate.confirm(reference, candidate, 0.99, 0.95, rescore_margin=0.2)
    assert alone.near_ties_flipped > 0
    assert alone.all_agreement < 1
    assert rescored.inputs == 1200
    assert rescored.near_ties == 0
    assert rescored.point == 1.0
    assert rescored.passed
    assert rescored.rescored >= len(near)
    clear = np.flatnonzero(margins(reference) > 0.9)[:20]
    candidate[clear] = reference[clear][:, ::-1] * 2  # confidently wrong: the cascade does not see these
    assert not gate.confirm(reference, candidate, 0.99, 0.95, rescore_margin=0.2).passed


def test_the_fp32_graph_is_scanned_like_model_onnx_before_onnxruntime_reads_it(cascaded: Path, tmp_path: Path) -> None:
    """A directory may come from anywhere: a reference whose digest matches its manifest is still refused when it is
    not a classifier graph the engine would load as model.onnx."""
    copy = with_margin(cascaded, 1.0, tmp_path)
    garbage = b"\x0a\xff\xff\xff\x0f not a graph"
    (copy / FP32_REFERENCE_FILE).write_bytes(garbage)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["extra_files"][FP32_REFERENCE_FILE] = hashlib.sha256(garbage).hexdigest()
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    clf = TextClassifier.load(copy, threads=1)  # hashed at load: it matches
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        clf(TEXTS[:2])
