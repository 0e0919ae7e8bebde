"""The benchmark harness end to end in --quick mode: tiny models trained on real labelled text, a few dozen sentences.

Checks that every file is written and well formed, every system ran, every ratio is a finite number and the
training helpers do what they claim; never timings. Checkpoints and exports are built in a temporary cache
(a few minutes on 2 cores), so the test leaves nothing behind. The full run's WordNet data is not needed here.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("openvino")
pytest.importorskip("nncf")

from benchmarks import corpus, labelled, models, peers, run, train
from engine.runtime import batching


def test_corpus_is_real_text_with_sst2_lengths() -> None:
    texts = corpus.sample(200)
    assert texts == corpus.sample(200)  # seeded: every run scores the same sentences
    assert len(set(texts)) == 200
    assert all(corpus.MIN_WORDS <= len(t.split()) <= corpus.MAX_WORDS for t in texts)


def test_distilbert_base_op_count() -> None:
    # 6 x (4 x 768^2 + 2 x 768 x 3072) multiply-adds per token: 42.5 M
    assert models.DISTILBERT_BASE.per_token_macs == 42_467_328


def test_quick_split_is_balanced_and_disjoint() -> None:
    data = labelled.classifier_split(quick=True)
    parts = [data.train, data.test, data.calibration]
    texts = [t for part in parts for t, _ in part]
    assert len(set(texts)) == len(texts)
    for part in parts:
        counts = np.bincount([y for _, y in part], minlength=len(data.labels))
        assert counts.min() == counts.max() > 0


def test_peers_get_the_engines_batches() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        lengths = rng.integers(1, 300, size=int(rng.integers(1, 60))).tolist()
        ours = [b.tolist() for b in peers.plan(lengths, 256)]
        assert ours == [b.tolist() for b in batching.plan(lengths, 256)]


def test_widening_preserves_the_teachers_encoder() -> None:
    pytest.importorskip("torch")
    model = train._tiny_bert(["a", "b", "c"]).eval()
    from transformers import DistilBertTokenizerFast

    tok = DistilBertTokenizerFast.from_pretrained(models.minilm_dir())
    student = train.widen(model, noise=0.0)
    assert student.config.dim == 2 * model.config.hidden_size
    assert student.config.hidden_dim == 2 * model.config.intermediate_size
    assert train.widening_error(model, student, tok, corpus.sample(8)) < 1e-4
    assert train.widening_error(model, train.widen(model, noise=0.5), tok, corpus.sample(8)) > 1e-3


def test_quick_run_writes_well_formed_results(tmp_path: Path) -> None:
    """The harness end to end, at one thread (`--threads 1`: the one-core table; the default differs only in not
    setting BENCH_THREADS, which test_threads_reach_every_system covers)."""
    argv = ["--quick", "--threads", "1", "--name", "t", "--out", str(tmp_path), "--cache", str(tmp_path / "cache")]
    assert run.main(argv) == 0
    data = json.loads((tmp_path / "t.json").read_text())
    summary = data["summary"]
    assert set(summary["models"]) == set(models.MODELS)
    one_thread_systems = set(run.SYSTEMS) - {"engine-int8-concurrent"}  # one batch at a time is engine-int8
    assert data["threads"] == 1
    for model in summary["models"].values():
        assert set(model["systems"]) == one_thread_systems
        assert all(s["disk_mb"] > 0 for s in model["systems"].values())
        ratios = [v for peer in model["ratios"].values() for v in peer.values()]
        assert len(ratios) == len(peers.PEERS) * 6  # throughput, p50, RSS, cold start; in domain: throughput, p50
        assert all(math.isfinite(r) and r > 0 for r in ratios)
        # each system's peak RSS is its own process's, not inherited from the harness
        assert len({round(s["peak_rss_mb"]) for s in model["systems"].values()}) > 1
        assert model["systems"]["transformers"]["top1_agreement_with_torch"] == 1.0
        assert 0.0 <= model["systems"]["engine-fp32"]["held_out_accuracy"] <= 1.0
    for count in map(str, run.QUICK.zs_label_counts):
        assert set(summary["zero_shot"][count]) == one_thread_systems
        assert all(v["texts_per_s"] > 0 for v in summary["zero_shot"][count].values())
    assert {t["model"] for t in summary["targets"]} == {*models.FIDELITY_MODELS, "nli"}
    # every trained model's held-out agreement, default and calibrated, beside its gate's figures
    assert set(summary["fidelity"]) == set(models.FIDELITY_MODELS)
    for model, row in summary["fidelity"].items():
        assert row["texts"] == len(data["fidelity"][model]["labels"]) > 0
        for variant in ("int8", "int8-calibrated"):
            v = row[variant]
            assert v["held_out_flips"] == round(row["texts"] * (1 - v["held_out_agreement"]))
            assert 0 < v["held_out_lower_bound"] <= v["held_out_agreement"]
            assert 0 < v["gate_confirm_lower_bound"] <= v["gate_confirm"]
            assert 0 <= v["held_out_rescored"] <= row["texts"]  # near-ties the default cascade answered in fp32
    assert data["models"]["export_seconds"]["quantize_dynamic-minilm"] > 0
    assert data["classify"]["minilm"]["engine-int8"]["rows_independent"]["texts"] == run.QUICK.independence_texts
    assert data["classify"]["minilm"]["openvino"]["openvino"]["inference_precision_hint"]
    assert set(data["cpu"]["flags"]) >= {"avx2", "avx512_vnni", "avx512_bf16", "amx_int8"}
    table = (tmp_path / "t.md").read_text()
    assert "| engine int8, default export |" in table
    assert "| engine int8, --calibration-file (in-domain) |" in table
    assert "Fidelity on held-out in-domain texts" in table
    assert "| re-scored in fp32 |" in table
    assert "Timed on the model's own held-out texts" in table
    assert any(t["target"].startswith("in domain: throughput") for t in summary["targets"])
    assert "one intra-op thread for every system" in table
    assert "OpenVINO + NNCF static int8" in table
    assert "Targets" in table
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_threads_reach_every_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--threads N sets BENCH_THREADS for each worker, and each runtime's loader reads it."""
    seen = {}

    def fake_run(cmd: list[str], **kwargs: object) -> object:
        seen["env"] = kwargs["env"]
        return type("P", (), {"returncode": 0, "stdout": 'RESULT {"ok": 1}\n', "stderr": ""})()

    monkeypatch.setattr(run.subprocess, "run", fake_run)
    assert run.run_worker({"job": "classify", "threads": 1}, tmp_path) == {"ok": 1}
    assert seen["env"]["BENCH_THREADS"] == "1"  # type: ignore[index]
    run.run_worker({"job": "classify", "threads": None}, tmp_path)
    assert "BENCH_THREADS" not in seen["env"]  # type: ignore[operator]
    monkeypatch.setenv("BENCH_THREADS", "1")
    assert peers._threads() == 1
    monkeypatch.delenv("BENCH_THREADS")
    assert peers._threads() == len(os.sched_getaffinity(0))


def test_rounds_alternate_the_order_and_merge_to_medians(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake(specs: list[dict], workdir: Path, jobs: int, log: object, phase: str | None = None) -> list[dict]:
        calls.append([s["system"] for s in specs])
        return [{"system": s["system"], "round": len(calls)} for s in specs]

    monkeypatch.setattr(run, "in_parallel", fake)
    specs = [{"system": name} for name in ("a", "b", "c")]
    out = run.in_rounds(specs, 3, Path("."), 1, lambda _msg: None)
    assert calls == [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]
    assert [[r["system"] for r in rounds] for rounds in out] == [["a"] * 3, ["b"] * 3, ["c"] * 3]
    assert [r["round"] for r in out[2]] == [1, 2, 3]

    rounds = [
        {
            "sentences_per_s": v,
            "latency_ms_p50": p,
            "latency_ms_p99": 2 * p,
            "in_domain_per_s": 2 * v,
            "in_domain_p50": p / 2,
            "peak_rss_mb": m,
            "held_out_labels": [i],
        }
        for i, (v, p, m) in enumerate([(100.0, 3.0, 50.0), (300.0, 1.0, 70.0), (200.0, 9.0, 60.0)])
    ]
    merged = run.merge_classify(rounds)
    assert (merged["sentences_per_s"], merged["latency_ms_p50"], merged["latency_ms_p99"]) == (200.0, 3.0, 6.0)
    assert (merged["in_domain_per_s"], merged["in_domain_p50"]) == (400.0, 1.5)
    assert merged["peak_rss_mb"] == 70.0
    assert merged["held_out_labels"] == [0]
    assert merged["sentences_per_s_rounds"] == [100.0, 300.0, 200.0]
    zs = run.merge_zero_shot(
        [{"by_labels": {"4": {"texts_per_s": v, "best_labels": [v]}}, "peak_rss_mb": v} for v in (5.0, 1.0, 3.0)]
    )
    assert zs["by_labels"]["4"]["texts_per_s"] == 3.0
    assert zs["by_labels"]["4"]["best_labels"] == [5.0]
    assert zs["peak_rss_mb"] == 5.0


def test_core_round_trip_is_measured_where_it_can_be(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPUs' round trip that labels each measurement's phase: a figure where a C compiler and two CPUs exist,
    None (never an exception) where not."""
    import os
    import shutil

    from benchmarks import core_latency

    figure = core_latency.round_trip_ns(0.1, tmp_path)
    if shutil.which("cc") and len(os.sched_getaffinity(0)) >= 2:
        assert figure is not None
        assert 1 < figure < 1e6
    else:
        assert figure is None
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    assert core_latency.round_trip_ns(0.1, tmp_path / "none") is None


def test_throughput_by_phase_compares_only_rounds_of_one_phase() -> None:
    from benchmarks import report

    assert report.phase([70.0, 80.0]) == "near"
    assert report.phase([360.0, 300.0]) == "far"
    assert report.phase([70.0, 360.0]) is None
    assert report.phase([None, None]) is None
    assert report.phase(None) is None
    assert report.phase([None, 90.0]) == "near"
    engine = ([100.0, 60.0, 110.0, 70.0], [[70.0, 70.0], [360.0, 360.0], [80.0, 80.0], [70.0, 400.0]])
    peer = ([90.0, 70.0, 95.0], [[75.0, 75.0], [350.0, 350.0], [None, None]])
    out = report.by_phase(engine, peer)
    assert out["near"] == {"ratio": 105.0 / 90.0, "rounds": [2, 1]}
    assert out["far"] == {"ratio": 60.0 / 70.0, "rounds": [1, 1]}
    assert report.by_phase(engine, ([90.0], [[70.0, 70.0]])).keys() == {"near"}
    assert report.by_phase(([1.0], []), ([1.0], [])) == {}


def test_waiting_for_a_phase_polls_until_it_comes_or_time_runs_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import core_latency

    figures = iter([360.0, 350.0, 70.0, 360.0])
    monkeypatch.setattr(core_latency, "round_trip_ns", lambda *_a, **_k: next(figures))
    monkeypatch.setattr(core_latency.time, "sleep", lambda _s: None)
    assert core_latency.wait_for("near", 60) == 70.0
    assert core_latency.wait_for("near", 0) == 360.0  # out of time: the figure it ran in
    monkeypatch.setattr(core_latency, "round_trip_ns", lambda *_a, **_k: None)
    assert core_latency.wait_for("far", 60) is None  # cannot measure: nothing to wait for
    assert [core_latency.phase_of(x) for x in (70.0, 149.9, 150.0, None)] == ["near", "near", "far", None]
