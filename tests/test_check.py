"""`engine check MODEL --texts FILE --recalibrate OUT` (engine/export/recalibrate.py): a new int8 directory made
from MODEL's kept fp32 reference by adopt --requantize's pipeline, calibrated and gated on the user's texts.
(`engine check` itself, and the gate's bound, are tested in test_gate.py.)"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import TextClassifier
from engine.cli import main
from engine.export import check as check_mod
from engine.export.check import CheckError
from engine.export.recalibrate import recalibrate
from engine.export.writer import write_directory
from engine.model.manifest import FP32_REFERENCE_DATA_FILE, FP32_REFERENCE_FILE, read

QUIET: Callable[[str], None] = lambda _msg: None  # noqa: E731
THINGS = ["printer", "router", "laptop", "screen", "app", "battery", "keyboard", "server"]
STATES = ["broken", "fine", "slow", "great", "noisy", "dead", "fast", "flaky", "perfect", "awful"]


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    """80 support tickets: a domain the built-in corpus does not cover."""
    path = tmp_path / "tickets.txt"
    lines = [
        f"ticket {i}: the {t} was {s} after the update"
        for i, (t, s) in enumerate((t, s) for t in THINGS for s in STATES)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def digests(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def fp32_directory(model: Path, out: Path) -> Path:
    """MODEL's fp32 reference as a model directory of its own, so TextClassifier runs it."""
    manifest: dict[str, Any] = json.loads((model / "manifest.json").read_text())
    keep = {k: v for k, v in manifest.items() if k not in ("files", "extra_files")}
    tokenizer = (model / "tokenizer.json").read_text(encoding="utf-8")
    import onnx

    whole = onnx.load(str(model / FP32_REFERENCE_FILE)).SerializeToString()  # with its weights file read in
    write_directory(out, whole, tokenizer, {**keep, "precision": "fp32"})
    return out


def labels(model: Path, texts: list[str]) -> list[str]:
    return [row[0].label for row in TextClassifier.load(model)(texts, top_k=1)]


def test_recalibrated_directory_keeps_fp32_decisions_records_provenance_and_checks(
    exported: Callable[..., Path], texts: Path, tmp_path: Path
) -> None:
    model = exported("bert", "int8", keep_fp32=True)
    before = digests(model)
    out = tmp_path / "recalibrated"
    done = recalibrate(model, texts, out, log=QUIET)
    assert done.output == out.resolve()
    assert digests(model) == before  # MODEL is never changed

    lines = check_mod.read_texts(texts)
    held = [t for t in lines if t not in done.seen_texts]
    assert 0 < len(held) < len(lines)  # the search split saw some texts, the confirm split the others
    # the gate ran on these texts, not the built-in ones: split between search and confirm
    gate = done.manifest["verification"]["int8_gate"]
    # confirm_inputs counts the clear decisions the gate judged; confirm_near_ties the rest of the split
    assert gate["search_inputs"] + gate["confirm_inputs"] + gate["confirm_near_ties"] == len(lines) == 80
    assert gate["confirm_inputs"] + gate["confirm_near_ties"] == len(held)
    # under 100 held-out texts no bound reaches 99%: the gate then asks every held-out decision kept
    fp32 = fp32_directory(model, tmp_path / "fp32")
    assert labels(out, held) == labels(fp32, held)

    manifest = json.loads((out / "manifest.json").read_text())
    source = json.loads((model / "manifest.json").read_text())
    assert manifest == done.manifest
    assert manifest["precision"] == "int8"
    assert manifest["source"] == source["source"]
    assert "adopted" not in manifest  # not an adopted export: where it came from is below
    assert manifest["extra_files"] == source["extra_files"]  # MODEL's reference, graph and weights, as it was
    assert set(source["extra_files"]) == {FP32_REFERENCE_FILE, FP32_REFERENCE_DATA_FILE}
    for key in ("id2label", "max_length", "pad_token_id", "problem_type", "task", "model_type"):
        assert manifest[key] == source[key]
    provenance = manifest["recalibrated_from"]
    assert provenance["model"] == str(model.resolve())
    assert provenance["manifest_sha256"] == read(model).sha256
    assert provenance["files"] == source["files"]
    assert provenance["texts"] == {
        "file": str(texts.resolve()),
        "sha256": hashlib.sha256(texts.read_bytes()).hexdigest(),
        "count": 80,
    }
    assert manifest["files"]["model.onnx"] != source["files"]["model.onnx"]  # a new int8 graph

    # OUT can be checked again: its reference is there and matches its manifest
    report = check_mod.compare(out, lines).report([lines.index(t) for t in held])
    assert report.texts == len(held)
    assert report.flips == ()
    assert main(["check", str(out), "--texts", str(texts), "--min-agreement", "0"]) == 0


def test_recalibrate_refuses_an_export_without_reference(
    exported: Callable[..., Path], texts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "no-ref"
    shutil.copytree(exported("bert", "int8", keep_fp32=True), copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["extra_files"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    with pytest.raises(CheckError, match="--keep-fp32"):
        recalibrate(copy, texts, out, log=QUIET)
    assert main(["check", str(copy), "--texts", str(texts), "--recalibrate", str(out)]) == 2
    assert "re-export it with `engine export SOURCE" in capsys.readouterr().err
    assert not out.exists()


def test_recalibrate_refuses_zero_shot_exports(exported: Callable[..., Path], texts: Path, tmp_path: Path) -> None:
    copy = tmp_path / "nli"
    shutil.copytree(exported("bert", "int8", keep_fp32=True), copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.update(task="zero-shot-classification", entailment_id=1, contradiction_id=0)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckError, match=r"zero-shot-classification model.*--zero-shot-labels"):
        recalibrate(copy, texts, tmp_path / "out", log=QUIET)
    assert not (tmp_path / "out").exists()


def test_recalibrate_refuses_a_taken_output_and_model_itself(
    exported: Callable[..., Path], texts: Path, tmp_path: Path
) -> None:
    model = exported("bert", "int8", keep_fp32=True)
    before = digests(model)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(CheckError, match="not an empty directory"):
        recalibrate(model, texts, taken, log=QUIET)
    assert (taken / "notes.txt").read_text() == "mine"
    assert len(list(taken.iterdir())) == 1
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(CheckError, match="not an empty directory"):
        recalibrate(model, texts, a_file, log=QUIET)
    for inside in (model, model / "reference", model / "new"):
        with pytest.raises(CheckError, match="MODEL is never changed"):
            recalibrate(model, texts, inside, log=QUIET)
    assert digests(model) == before
    assert not list(tmp_path.glob(".*recalibrate*"))  # no staging left behind


def test_engine_check_recalibrate_end_to_end(
    exported: Callable[..., Path], texts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = exported("bert", "int8", keep_fp32=True)
    out = tmp_path / "out"
    out.mkdir()  # an empty directory is taken over, as a new one would be
    argv = ["check", str(model), "--texts", str(texts), "--recalibrate", str(out), "--min-agreement", "0.9", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["output"] == str(out.resolve())
    assert report["recalibrated_from"] == json.loads((out / "manifest.json").read_text())["recalibrated_from"]
    held, everything = report["held_out"], report["all_texts"]
    assert everything["after"]["texts"] == everything["before"]["texts"] == 80
    assert 0 < held["after"]["texts"] == held["before"]["texts"] < 80
    confirm = report["gate"]["int8_gate"]
    assert held["after"]["texts"] == confirm["confirm_inputs"] + confirm["confirm_near_ties"]
    assert held["after"]["lower_bound"] >= 0.9
    assert report["passed"] is True
    assert report["gate"]["int8_gate"]["min_agreement"] == 0.9  # --min-agreement is the gate's too
    TextClassifier.load(out)  # a loadable model directory (digests verified)

    # the default 99%: 80 texts leave too few held out for the bound to show it, and the report says so
    again = tmp_path / "again"
    assert main(["check", str(model), "--texts", str(texts), "--recalibrate", str(again)]) == 1
    printed = capsys.readouterr().out
    assert "held out:" in printed
    assert "cannot show 99% as a lower bound" in printed
    assert (again / FP32_REFERENCE_FILE).is_file()

    # never over an existing directory
    assert main(["check", str(model), "--texts", str(texts), "--recalibrate", str(out)]) == 2
    assert "not an empty directory" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        main(["check", "--help"])
    assert "--recalibrate OUT" in capsys.readouterr().out
