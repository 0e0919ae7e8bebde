"""The export script's command line: aliases, clear refusals with a non-zero exit, failed checks, atomic output,
and the manifest of NLI models. Runs the script as a subprocess twice (it imports torch); in-process otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import checkpoints
import numpy as np
import onnx
import pytest

from engine import TextClassifier, ZeroShotClassifier
from engine.export import export as export_models
from engine.export import quantize, writer
from engine.export.verify import ZERO_SHOT_LABEL_SETS

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "export_models.py"  # the thin wrapper
CF_ID = "@cf/huggingface/distilbert-sst-2-int8"


@pytest.fixture(scope="module")
def few_texts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20-line calibration file: the CLI tests check behaviour, not figures, so a short check is enough."""

    path = tmp_path_factory.mktemp("calibration") / "texts.txt"
    path.write_text("\n".join(checkpoints.sample_texts()[:20]) + "\n", encoding="utf-8")
    return path


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


def test_list_shows_every_alias_and_the_cloudflare_id() -> None:
    done = run_script("--list")
    assert done.returncode == 0, done.stderr
    for name, alias in export_models.ALIASES.items():
        line = next(line for line in done.stdout.splitlines() if line.startswith(name + " "))
        assert alias.hub_id in line
    assert "precision int8" in next(line for line in done.stdout.splitlines() if line.startswith(CF_ID))


def test_unknown_hub_id_offline_is_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "model"
    done = run_script("no-such-org/no-such-model", "--output", str(out))
    assert done.returncode != 0
    assert "export failed" in done.stderr
    assert "HF_HUB_OFFLINE=1" in done.stderr
    assert "--list" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


def test_cloudflare_id_resolves_to_distilbert_sst2_at_int8() -> None:
    hub_id, alias = export_models.resolve(CF_ID)
    assert hub_id == export_models.ALIASES["distilbert-sst-2"].hub_id
    assert alias is not None
    assert alias.precision == "int8"
    assert export_models.resolve("bart-large-mnli")[0] == "facebook/bart-large-mnli"
    assert export_models.resolve("some-org/some-model") == ("some-org/some-model", None)
    with pytest.raises(export_models.ExportError, match="unknown Cloudflare model id"):
        export_models.resolve("@cf/huggingface/no-such-model")


def test_cloudflare_id_forces_int8(
    checkpoint: Any, few_texts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The id names int8, so --precision fp32 is overridden; the weights come from the alias's hub id.
    (The int8 recipe search itself is stubbed: it is tested with the quantization code.)"""
    asked: list[str] = []
    load = export_models.load_checkpoint

    def offline(source: str) -> Any:
        asked.append(source)
        return load(str(checkpoint("distilbert")))  # stands in for the hub model: same architecture, tiny

    def search(fp32_path: Path, *args: Any, **kwargs: Any) -> Any:
        return quantize.SearchResult(fp32_path, {"name": "stub"}, {"int8_top1_agreement": 1.0})

    monkeypatch.setattr(export_models, "load_checkpoint", offline)
    monkeypatch.setattr(quantize, "search", search)
    manifest = export_models.export(CF_ID, tmp_path / "m", "fp32", few_texts, log=lambda _m: None)
    assert asked == [export_models.ALIASES["distilbert-sst-2"].hub_id]
    assert manifest["precision"] == "int8"
    assert manifest["source"] == asked[0]
    assert manifest["quantization"] == {"name": "stub"}


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run main in-process, expect exit code 1, return stderr."""
    assert export_models.main(argv) == 1
    return capsys.readouterr().err


def test_unknown_cloudflare_id_exits_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(["@cf/meta/no-such-model", "-o", str(tmp_path / "m")], capsys)
    assert "unknown Cloudflare model id" in err
    assert CF_ID in err


def test_model_without_head_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import BertConfig, BertModel

    source = tmp_path / "bare"
    tok = checkpoints.bert_tokenizer(fixed_padding=False)
    BertModel(BertConfig(vocab_size=tok.vocab_size, **checkpoints.TINY)).save_pretrained(source)
    tok.save_pretrained(source)
    assert json.loads((source / "config.json").read_text())["architectures"] == ["BertModel"]
    err = refused([str(source), "-o", str(tmp_path / "m")], capsys)
    assert "BertModel, not a sequence classifier" in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "vit", "architectures": ["ViTForImageClassification"]}, "has no sequence-classification head"),
        ({"model_type": "no-such-architecture"}, "unsupported architecture"),
    ],
)
def test_unsupported_architecture_is_refused(
    config: dict[str, Any], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "ckpt"
    source.mkdir()
    (source / "config.json").write_text(json.dumps(config))
    err = refused([str(source), "-o", str(tmp_path / "m")], capsys)
    assert message in err


def test_not_a_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()  # "empty" contains "mpt": transformers alone would guess an MPT config from it
    assert "has no config.json" in refused([str(tmp_path / "empty"), "-o", "x"], capsys)
    (tmp_path / "no-tokenizer").mkdir()
    (tmp_path / "no-tokenizer" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert "cannot load its tokenizer" in refused([str(tmp_path / "no-tokenizer"), "-o", "x"], capsys)
    (tmp_path / "file.bin").write_bytes(b"x")
    assert "is a file" in refused([str(tmp_path / "file.bin"), "-o", "x"], capsys)


def existing_model(parent: Path) -> tuple[Path, dict[str, bytes]]:
    """An output directory from an earlier export, and its bytes, to check a failed export leaves it alone."""
    out = parent / "model"
    out.mkdir(parents=True)
    files = {"model.onnx": b"earlier graph", "tokenizer.json": b"{}", "manifest.json": b'{"earlier": true}'}
    for name, data in files.items():
        (out / name).write_bytes(data)
    return out, files


def untouched(out: Path, files: dict[str, bytes]) -> bool:
    """Same files with the same bytes, and no staging directory left next to it."""
    same = {p.name: p.read_bytes() for p in out.iterdir()} == files
    return same and [p.name for p in out.parent.iterdir()] == [out.name]


def test_failing_fp32_parity_exits_nonzero_and_keeps_the_old_directory(
    checkpoint: Any,
    few_texts: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import onnx
    from onnx import numpy_helper

    real_export = export_models.export_fp32

    def corrupted(model: Any, workdir: Path) -> Path:
        path = real_export(model, workdir)
        graph = onnx.load(str(path))
        init = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))  # the largest weight
        weight = numpy_helper.to_array(init).copy()
        weight.reshape(-1)[::2] += 0.5  # not a uniform shift, which a LayerNorm would cancel
        init.CopyFrom(numpy_helper.from_array(weight, init.name))
        onnx.save(graph, str(path))
        return path

    monkeypatch.setattr(export_models, "export_fp32", corrupted)
    out, files = existing_model(tmp_path / "out")
    argv = [str(checkpoint("bert")), "-o", str(out), "--precision", "fp32", "--calibration-file", str(few_texts)]
    err = refused(argv, capsys)
    assert "fp32 ONNX does not match torch" in err
    assert untouched(out, files)


def graph_with_weights(rows: int = 128) -> bytes:
    """y = x @ W with W [rows, 128] float32 (64 KiB at 128 rows: large enough for the weights file)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(rows * 128, dtype=np.float32).reshape(rows, 128), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"]), helper.make_node("Add", ["y", "b0"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 128])],
        [w, numpy_helper.from_array(np.zeros(128, dtype=np.float32), "b0")],
    )
    return onnx.helper.make_model(graph).SerializeToString()


def test_split_weights_moves_large_tensors_to_page_aligned_ranges() -> None:
    """Tensors of 64 KiB and more go to the weights file, each at a page-aligned offset; the rest stay inline;
    onnx reads the pair back to the same tensors."""
    import onnx
    from onnx import numpy_helper

    from engine.export.writer import PAGE, WEIGHTS_MIN_BYTES, split_weights

    original = onnx.load_from_string(graph_with_weights())
    graph, weights = split_weights(graph_with_weights())
    model = onnx.load_from_string(graph)
    external = {t.name: {e.key: e.value for e in t.external_data} for t in model.graph.initializer if t.external_data}
    assert list(external) == ["W"]
    assert external["W"]["location"] == "model.onnx.data"
    assert int(external["W"]["offset"]) % PAGE == 0
    assert int(external["W"]["length"]) == WEIGHTS_MIN_BYTES
    assert len(graph) < 4096 <= WEIGHTS_MIN_BYTES <= len(weights)
    _, more = split_weights(onnx.load_from_string(graph_with_weights(130)).SerializeToString())
    assert len(more) == 130 * 128 * 4  # one tensor, at offset 0
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "model.onnx").write_bytes(graph)
        Path(tmp, "model.onnx.data").write_bytes(weights)
        back = onnx.load(str(Path(tmp, "model.onnx")))
    for a, b in zip(original.graph.initializer, back.graph.initializer):
        assert a.name == b.name
        assert np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))


@pytest.mark.parametrize("exists", [False, True])
def test_output_is_written_atomically(exists: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while the directory is being written (here: the disk refuses fsync, after every file was
    written to the staging directory) leaves nothing half-written and the earlier export intact."""
    parent = tmp_path / "out"
    parent.mkdir()
    out, files = existing_model(parent) if exists else (parent / "model", {})

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        writer.write_directory(out, graph_with_weights(), "{}", {"format": "engine-model/1"})
    if exists:
        assert untouched(out, files)
    else:
        assert list(parent.iterdir()) == []


def test_successful_export_replaces_the_old_directory(
    checkpoint: Any, few_texts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = existing_model(tmp_path / "out")
    argv = [str(checkpoint("bert")), "-o", str(out), "--precision", "fp32", "--calibration-file", str(few_texts)]
    assert export_models.main(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.onnx.data", "tokenizer.json"]
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["verification"]["inputs"] == 20
    assert manifest["source"] == str(checkpoint("bert"))
    assert TextClassifier.load(out)("I like you.")[0].label in ("NEGATIVE", "POSITIVE")


def test_a_model_in_use_survives_its_directory_being_exported_again(exported: Any, tmp_path: Path) -> None:
    """onnxruntime maps model.onnx.data; a new export swaps whole directories (the old files are unlinked, never
    rewritten in place), so a process still scoring with the old model keeps its weights and its results."""
    import shutil

    source = exported("distilbert", "int8")
    out = Path(shutil.copytree(source, tmp_path / "model"))
    clf = TextClassifier.load(out)
    texts = ["I like you.", "I hate this.", "It is fine, I guess. " * 8]
    before = clf(texts, top_k=None)
    manifest = json.loads((out / "manifest.json").read_text())
    graph = onnx.load(str(out / "model.onnx")).SerializeToString()
    weights = (out / "model.onnx.data").read_bytes()
    writer.write_directory(out, graph, (out / "tokenizer.json").read_text(), manifest)
    assert (out / "model.onnx.data").read_bytes() == weights  # the same model written again, as new files
    assert clf(texts, top_k=None) == before
    assert TextClassifier.load(out)(texts, top_k=None) == before


# NLI checkpoints: task, entailment/contradiction ids, int8 figures ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "entailment", "contradiction", "model_type"),
    [("bart-nli", 2, 0, "bart"), ("deberta-nli", 0, 2, "deberta-v2"), ("bert-nli", 2, 0, "bert")],
)
def test_nli_manifest_records_task_and_ids(
    exported: Any, name: str, entailment: int, contradiction: int, model_type: str
) -> None:
    manifest = json.loads((exported(name, "fp32") / "manifest.json").read_text())
    assert manifest["task"] == "zero-shot-classification"
    assert manifest["model_type"] == model_type
    assert (manifest["entailment_id"], manifest["contradiction_id"]) == (entailment, contradiction)
    assert manifest["id2label"][str(entailment)] == "entailment"
    assert manifest["id2label"][str(contradiction)] == "contradiction"
    assert manifest["verification"]["fp32_vs_torch_max_logit_diff"] <= 1e-4


def test_zero_shot_gate_ranks_the_label_sets_given(
    checkpoint: Any, few_texts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--zero-shot-labels replaces the gate's generic label sets with the user's: the manifest records them and
    the gate's figure is taken over them."""
    out = tmp_path / "nli"
    argv = [str(checkpoint("bert-nli")), "-o", str(out), "--calibration-file", str(few_texts)]
    argv += ["--zero-shot-labels", "refund, legal,faq", "--zero-shot-labels", "cats,dogs"]
    assert export_models.main(argv) == 0
    assert "zero-shot ranking: top-1 agreement" in capsys.readouterr().out
    v = json.loads((out / "manifest.json").read_text())["verification"]
    assert v["int8_zero_shot_label_sets"] == [["refund", "legal", "faq"], ["cats", "dogs"]]
    assert v["int8_zero_shot_top1_agreement"] >= v["int8_zero_shot_min_agreement"]


@pytest.mark.parametrize(
    ("sets", "why"),
    [([["only"]], "two or more"), ([["a", " "]], "non-blank"), ([["a", "a"]], "distinct"), ([], "at least one")],
)
def test_zero_shot_label_sets_are_checked(sets: list[list[str]], why: str) -> None:
    with pytest.raises(export_models.ExportError, match=why):
        export_models.check_label_sets(sets)
    assert export_models.check_label_sets(None) == [list(s) for s in ZERO_SHOT_LABEL_SETS]


def test_zero_shot_labels_are_refused_for_a_plain_classifier(checkpoint: Any, tmp_path: Path) -> None:
    with pytest.raises(export_models.ExportError, match="for NLI models"):
        export_models.export(str(checkpoint("bert")), tmp_path / "m", "fp32", zero_shot_labels=[["a", "b"]])


def test_plain_classifier_manifest_has_no_nli_ids(exported: Any) -> None:
    manifest = json.loads((exported("bert", "fp32") / "manifest.json").read_text())
    assert manifest["task"] == "text-classification"
    assert manifest["entailment_id"] is None
    assert manifest["contradiction_id"] is None


def test_bart_nli_int8_export_reports_agreement_and_runs(exported: Any) -> None:
    path = exported("bart-nli", "int8")
    v = json.loads((path / "manifest.json").read_text())["verification"]
    assert v["int8_top1_agreement"] >= export_models.MIN_INT8_AGREEMENT
    assert v["int8_zero_shot_top1_agreement"] >= v["int8_zero_shot_min_agreement"] == 0.99  # the gate held
    assert 0.0 <= v["int8_zero_shot_max_score_diff"] <= 1.0
    premises = len(export_models.verification_inputs(None, pairs=False, nli=False))
    assert 0 < v["int8_zero_shot_texts"] <= min(240, premises)  # search-split premises only, at most 240
    assert v["int8_zero_shot_label_sets"] == [list(s) for s in ZERO_SHOT_LABEL_SETS]
    assert all("int8_zero_shot_top1_agreement" in t for t in v["int8_recipes_tried"])  # every recipe measured
    int8 = ZeroShotClassifier.load(path, threads=1).pipeline("I want my money back", ["refund", "legal", "faq"])
    fp32 = ZeroShotClassifier.load(exported("bart-nli", "fp32"), threads=1).pipeline(
        "I want my money back", ["refund", "legal", "faq"]
    )
    assert sorted(int8.labels) == sorted(fp32.labels)
    assert sum(int8.scores) == pytest.approx(1.0, abs=1e-5)
    got = dict(zip(int8.labels, int8.scores))
    assert max(abs(got[label] - s) for label, s in zip(fp32.labels, fp32.scores)) <= 0.25


def test_exported_directories_get_the_umasks_permissions(exported: Any) -> None:
    """mkdtemp's 0700 used to stay on the renamed directory: a service account could not serve the model."""
    import stat

    from engine.export.writer import current_umask

    model = exported("bert", "fp32")
    assert stat.S_IMODE(model.stat().st_mode) == 0o777 & ~current_umask()
    for f in model.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~current_umask(), f.name


@pytest.mark.parametrize("name", ["bert", "roberta", "bart-nli", "deberta-nli"])
def test_the_torch_reference_runs_texts_of_one_length_together_as_if_alone(checkpoint: Any, name: str) -> None:
    """Grouping texts by token length (and end-of-sequence count: BART pools its </s>) changes no text's logits
    beyond float rounding: each row is unpadded either way, so the export checks against the same reference."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from engine.export.checkpoint import torch_logits

    path = checkpoint(name)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    words = ["a", "cat", "sat", "on", "the", "mat", "and", "the", "dog", "barked", "at", "it", "twice"]
    singles = [" ".join(words[: 2 + i % 9]) for i in range(24)]  # repeated lengths: groups of several texts
    items: list[str | tuple[str, str]] = [*singles, *((s, "This example is about animals.") for s in singles[:12])]
    items.append("a text with </s> inside it")  # BART: one more </s> than the other texts of its length
    got = torch_logits(model, tokenizer, items, 64)
    with torch.no_grad():
        alone = [
            model(**tokenizer(*(i if isinstance(i, tuple) else (i,)), return_tensors="pt")).logits[0].numpy()
            for i in items
        ]
    np.testing.assert_allclose(got, np.stack(alone), rtol=1e-5, atol=1e-5)  # a misplaced row is off by ~1
