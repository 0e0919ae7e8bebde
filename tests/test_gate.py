"""The int8 gate's held-out confirmation (engine/export/gate.py) and `engine check` (engine/export/check.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from engine.export import check as check_mod
from engine.export import gate, quantize
from engine.export.verify import verification_inputs
from engine.model.manifest import FP32_REFERENCE_DATA_FILE, FP32_REFERENCE_FILE

# the built-in corpus itself (conftest points the tests' other exports at a fifth of it)
BUILT_IN = Path(check_mod.__file__).resolve().parent / "verification_texts.txt"


def test_wilson_bound_matches_known_values_and_can_fail() -> None:
    # z = 1.6449 (one-sided 95%): 0 flips in 300 gives n / (n + z^2); 99% point estimates never pass a 99% gate
    assert gate.lower_bound(300, 300, 0.95) == pytest.approx(300 / (300 + 1.6448536**2), rel=1e-6)
    assert gate.lower_bound(990, 1000, 0.95) == pytest.approx(
        0.98334, abs=1e-5
    )  # by hand: (p + z²/2n - z√(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    assert gate.lower_bound(990, 1000, 0.95) < 0.99  # the point estimate alone would pass
    assert gate.lower_bound(240, 240, 0.95) < 0.99  # 240 texts cannot show 99% even with no flip
    assert gate.lower_bound(1197, 1201, gate.look_confidence()) >= 0.99  # the built-in confirm split can
    assert gate.lower_bound(1195, 1201, gate.look_confidence()) < 0.99
    assert gate.lower_bound(0, 10, 0.95) == 0.0
    assert gate.lower_bound(0, 0, 0.95) == 0.0
    # monotone in what was agreed and in the confidence
    values = [gate.lower_bound(k, 500, 0.95) for k in range(0, 501, 25)]
    assert values == sorted(values)
    assert gate.lower_bound(495, 500, 0.99) < gate.lower_bound(495, 500, 0.95)
    with pytest.raises(ValueError, match=r"."):  # more agreed than compared
        gate.lower_bound(11, 10, 0.95)
    assert check_mod.wilson_lower(990, 1000, 0.95) == pytest.approx(gate.lower_bound(990, 1000, 0.95))


def test_confirm_counts_flips_and_gates_on_the_bound() -> None:
    reference = np.zeros((1000, 3), dtype=np.float32)
    reference[:, 1] = 1
    candidate = reference.copy()
    candidate[:4, 2] = 2  # 4 flips: 99.6% point, bound under 99% at this n
    result = gate.confirm(reference, candidate, 0.99, 0.95)
    assert (result.agreed, result.flipped) == (996, (0, 1, 2, 3))
    assert result.point == pytest.approx(0.996)
    assert result.lower < 0.996
    assert result.passed == (result.lower >= 0.99)
    assert gate.confirm(reference, reference, 1.0, 0.95).passed  # a bound of 1: every decision, no bound
    small = gate.confirm(reference[:100], candidate[:100], 0.99, 0.95)  # no bound can reach 99% with 100 texts
    assert not small.bound_reachable
    assert not small.passed
    assert gate.confirm(reference[:100], reference[:100], 0.99, 0.95).passed
    assert gate.ladder(0.99) == pytest.approx([0.99, 0.995, 1.0])
    assert gate.ladder(0.0) == [0.0]


def test_split_is_disjoint_by_text_and_big_enough() -> None:
    items = verification_inputs(BUILT_IN, pairs=False, nli=False)
    search, confirm = gate.split(items)
    assert sorted(search + confirm) == list(range(len(items)))
    assert not {items[i] for i in search} & {items[i] for i in confirm}
    assert len(confirm) >= 1200
    assert len(search) >= 600
    assert gate.split(list(reversed(items)))[1] != confirm  # indices move with the order, texts do not
    assert {items[::-1][i] for i in gate.split(items[::-1])[1]} == {items[i] for i in confirm}
    pairs = verification_inputs(None, pairs=True, nli=False)
    s, c = gate.split(pairs)
    firsts = lambda idx: {p[0] if isinstance(p, tuple) else p for p in (pairs[i] for i in idx)}  # noqa: E731
    assert not firsts(s) & firsts(c)  # a pair goes where its first text goes
    dup = ["same text"] * 5 + [f"text {i}" for i in range(20)]
    s, c = gate.split(dup)
    assert len({dup[i] for i in s} & {dup[i] for i in c}) == 0
    assert s
    assert c


def test_the_gate_counts_clear_decisions_not_near_ties() -> None:
    """A flipped near-tie (fp32 margin below CLEAR_MARGIN) is recorded but not counted; a flipped clear decision
    is counted; when near-ties are most of the texts, or the model has one logit, every decision counts."""
    clear = np.array([[4.0, 0.0]] * 400)  # margin ~0.96
    tie = np.array([[0.05, 0.0]] * 100)  # margin ~0.025
    reference = np.concatenate([clear, tie])
    flip_ties = reference.copy()
    flip_ties[400:410] = [[0.0, 0.05]] * 10
    check = gate.confirm(reference, flip_ties, 0.99, 0.95)
    assert (check.inputs, check.agreed, check.near_ties, check.near_ties_flipped) == (400, 400, 100, 10)
    assert check.passed
    assert check.all_agreement == pytest.approx(490 / 500)
    assert len(check.flipped) == 10  # every flip is listed, counted or not
    flip_clear = reference.copy()
    flip_clear[:10] = [[0.0, 4.0]] * 10
    assert not gate.confirm(reference, flip_clear, 0.99, 0.95).passed
    mostly_ties = np.concatenate([clear[:100], np.array([[0.05, 0.0]] * 300)])
    flipped = mostly_ties.copy()
    flipped[100:110] = [[0.0, 0.05]] * 10
    check = gate.confirm(mostly_ties, flipped, 0.99, 0.95)
    assert (check.inputs, check.near_ties) == (400, 0)  # near-ties are most: all count
    assert not check.passed
    single = np.array([[3.0]] * 50 + [[0.01]] * 10)  # one logit (a regression, a score): every row counts
    assert quantize.counted(single).all()


def test_manifest_records_both_splits_and_the_bound(checkpoint: Callable[[str], Path], tmp_path: Path) -> None:
    from engine.export import export as export_models

    model = tmp_path / "model"
    export_models.export(str(checkpoint("distilbert")), model, "int8", BUILT_IN, log=lambda _m: None, keep_fp32=True)
    manifest = json.loads((model / "manifest.json").read_text())
    v = manifest["verification"]
    g = v["int8_gate"]
    assert g["search_inputs"] >= 600
    assert g["confirm_inputs"] + g["confirm_near_ties"] >= 1200  # the confirm split: clear decisions + near-ties
    assert g["confirm_inputs"] >= 600  # this model's clear decisions are most of the texts
    assert "Wilson" in g["bound"]
    assert g["min_agreement"] == v["int8_min_agreement"] == 0.99
    assert v["int8_confirm_lower_bound"] >= 0.99
    assert v["int8_confirm_lower_bound"] < v["int8_confirm_top1_agreement"]
    assert v["int8_search_top1_agreement"] == v["int8_top1_agreement"]
    last = g["looks"][-1]
    assert last["passed"]
    assert last["lower_bound"] == v["int8_confirm_lower_bound"]
    assert all(not look["passed"] for look in g["looks"][:-1])
    assert set(manifest["extra_files"]) == {FP32_REFERENCE_FILE, FP32_REFERENCE_DATA_FILE}
    assert (model / FP32_REFERENCE_FILE).is_file()
    assert (model / FP32_REFERENCE_DATA_FILE).is_file()
    assert FP32_REFERENCE_FILE not in manifest["files"]  # the run time loads only model, tokenizer, weights


def test_engine_check_reports_agreement_and_flips(exported: Callable[..., Path], tmp_path: Path) -> None:
    model = exported("distilbert", "int8", keep_fp32=True)
    texts = tmp_path / "texts.txt"
    lines = [f"review {i}: the service was {'great' if i % 2 else 'slow'} today" for i in range(60)]
    texts.write_text("\n".join(lines) + "\n\n")
    report = check_mod.check(model, check_mod.read_texts(texts))
    assert report.texts == 60
    assert report.agreed == 60 - len(report.flips)
    assert 0 < report.lower_bound < report.agreement <= 1
    for flip in report.flips:
        assert flip.text == lines[flip.index]
        assert flip.fp32 != flip.int8
    from engine.cli import main

    assert main(["check", str(model), "--texts", str(texts), "--min-agreement", "0"]) == 0
    assert main(["check", str(model), "--texts", str(texts), "--min-agreement", "1"]) == 1  # 60 texts: bound < 1


def test_engine_check_refuses_without_fp32_reference(exported: Callable[..., Path], tmp_path: Path, capsys) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("one text\n")
    from engine.cli import main

    fp32 = exported("distilbert", "fp32")
    assert main(["check", str(fp32), "--texts", str(texts)]) == 2
    assert "no int8 graph" in capsys.readouterr().err
    int8 = exported("distilbert", "int8", keep_fp32=True)
    copy = tmp_path / "no-ref"
    import shutil

    shutil.copytree(int8, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["extra_files"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert main(["check", str(copy), "--texts", str(texts)]) == 2
    assert "--keep-fp32" in capsys.readouterr().err
