"""The benchmark harness end to end in --quick mode: tiny models, a few dozen sentences, one repetition.

Checks that every file is written and well formed and that every ratio is a finite number; never timings.
Checkpoints and exports are built in a temporary cache (about a minute), so the test leaves nothing behind.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("optimum.onnxruntime")

from benchmarks import corpus, models, run  # noqa: E402


def test_corpus_is_real_text_with_sst2_lengths() -> None:
    texts = corpus.sample(200)
    assert texts == corpus.sample(200)  # seeded: every run scores the same sentences
    assert len(set(texts)) == 200
    assert all(corpus.MIN_WORDS <= len(t.split()) <= corpus.MAX_WORDS for t in texts)


def test_distilbert_base_op_count() -> None:
    # 6 x (4 x 768^2 + 2 x 768 x 3072) multiply-adds per token: 42.5 M
    assert models.DISTILBERT_BASE.per_token_macs == 42_467_328


def test_quick_run_writes_well_formed_results(tmp_path: Path) -> None:
    assert run.main(["--quick", "--name", "t", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 0
    data = json.loads((tmp_path / "t.json").read_text())
    summary = data["summary"]
    ratios = [v for peer in summary["ratios"].values() for v in peer.values()]
    ratios += list(summary["zero_shot_ratio"].values()) + [summary["ceiling_fraction_int8"]]
    assert len(ratios) == 3 * 5 + 2 + 1
    assert all(math.isfinite(r) and r > 0 for r in ratios)
    assert {t["target"] for t in summary["targets"]} >= {"import + load + first result (s)"}
    systems = summary["systems"]
    assert set(systems) == set(run.SYSTEMS)
    # each system's peak RSS is its own process's, not inherited from the harness
    assert len({round(s["peak_rss_mb"]) for s in systems.values()}) > 1
    assert systems["engine-fp32"]["top1_agreement_with_torch"] == 1.0
    table = (tmp_path / "t.md").read_text()
    assert "| engine int8 / peer |" in table and "| 4 labels |" in table
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(data["scaling"]["ms_per_sequence_by_tokens"]) == {str(n) for n in run.QUICK.lengths}
