"""Reranking (issue 16, part 4): parity with sentence-transformers' CrossEncoder (predict and rank) on a tiny
one-logit cross-encoder, with the transformers model itself for a two-logit one; `engine rerank`; and TEI's
/rerank over HTTP next to the HF text-pair shape on the same model."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import ModelLoadError, Reranker, TextTooLongError
from engine.errors import InvalidRequestError

QUERY = "How many people live in Berlin?"
DOCS = [
    "Berlin has a population of 3,520,031 registered inhabitants in an area of 891.82 square kilometers.",
    "New York City is famous for the Metropolitan Museum of Art.",
    "Berlin is well known for its museums.",
    "The weather today is sunny.",
    "Berlin had about 3.7 million inhabitants in 2023, the most of any city in the European Union.",
]
ATOL = 1e-5


@pytest.fixture(scope="module")
def one_logit(exported: Any) -> Reranker:
    return Reranker.load(exported("bert-single", "fp32"), threads=1)


@pytest.fixture(scope="module")
def two_logits(exported: Any) -> Reranker:
    return Reranker.load(exported("bert", "fp32"), threads=1)


def test_parity_with_sentence_transformers_cross_encoder(one_logit: Reranker, checkpoint: Any) -> None:
    st = pytest.importorskip("sentence_transformers")
    ce = st.CrossEncoder(str(checkpoint("bert-single")), device="cpu", max_length=one_logit.model.info.max_length)
    want = ce.predict([(QUERY, d) for d in DOCS])  # sigmoid of the one logit
    got = one_logit.predict_scores(QUERY, DOCS)
    np.testing.assert_allclose(got, want, atol=ATOL)
    ranked = one_logit.rerank(QUERY, DOCS, top_k=3, return_documents=True)
    reference = ce.rank(QUERY, DOCS, top_k=3, return_documents=True)
    assert [r.index for r in ranked] == [r["corpus_id"] for r in reference]
    assert [r.text for r in ranked] == [r["text"] for r in reference]
    np.testing.assert_allclose([r.score for r in ranked], [r["score"] for r in reference], atol=ATOL)
    long = [d * 20 for d in DOCS]  # both truncate the pair to the window (longest first)
    np.testing.assert_allclose(one_logit.predict_scores(QUERY, long), ce.predict([(QUERY, d) for d in long]), atol=ATOL)


def test_two_logit_model_against_transformers(two_logits: Reranker, checkpoint: Any) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = str(checkpoint("bert"))
    model, tok = AutoModelForSequenceClassification.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        enc = tok([QUERY] * len(DOCS), DOCS, padding=True, truncation=True, max_length=64, return_tensors="pt")
        logits = model(**enc).logits.numpy()
    relevant = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()[:, 1]
    np.testing.assert_allclose(two_logits.predict_scores(QUERY, DOCS), relevant, atol=ATOL)
    raw = two_logits.rerank(QUERY, DOCS, raw_scores=True)
    assert [r.index for r in raw] == list(np.argsort(-relevant, kind="stable"))
    # raw scores are logit differences near 40: float32 resolves ~4e-6 there and each CPU's kernels sum in their own
    # order (AVX2 vs AVX-512 gave 2.3e-5), so the bound is relative, as the export's fp32 check is
    raw_want = (logits[:, 1] - logits[:, 0])[[r.index for r in raw]]
    np.testing.assert_allclose([r.score for r in raw], raw_want, rtol=1e-6, atol=ATOL)


def test_results_shape(one_logit: Reranker) -> None:
    everything = one_logit.rerank(QUERY, DOCS)
    assert sorted(r.index for r in everything) == list(range(len(DOCS)))
    assert [r.score for r in everything] == sorted((r.score for r in everything), reverse=True)
    assert all(r.text is None for r in everything)
    assert "text" not in everything[0].to_dict()
    assert one_logit.rerank(QUERY, DOCS, top_k=2) == everything[:2]
    assert one_logit.rerank(QUERY, DOCS, top_k=50) == everything
    twins = one_logit.rerank(QUERY, ["same text", "other", "same text"])  # ties keep the documents' order
    same = [r.index for r in twins if r.index != 1]
    assert same == [0, 2]


@pytest.mark.parametrize(
    ("query", "docs", "kw"),
    [
        ("", DOCS, {}),
        (QUERY, [], {}),
        (QUERY, "one document", {}),
        (QUERY, ["ok", "  "], {}),
        (QUERY, DOCS, {"top_k": 0}),
        (QUERY, DOCS, {"raw_scores": "yes"}),
    ],
)
def test_bad_requests_are_typed_errors(one_logit: Reranker, query: Any, docs: Any, kw: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        one_logit.rerank(query, docs, **kw)


def test_too_long_without_truncation_and_not_a_cross_encoder(one_logit: Reranker, exported: Any) -> None:
    with pytest.raises(TextTooLongError):
        one_logit.rerank(QUERY, [DOCS[0] * 20], truncation=False)
    with pytest.raises(ModelLoadError, match="cross-encoder"):
        Reranker.load(exported("distilbert", "fp32"))


def test_engine_rerank_command(one_logit: Reranker, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from engine.cli import main

    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(DOCS[2:]) + "\n")
    assert main(["rerank", str(one_logit.model.info.path), QUERY, *DOCS[:2], "--documents-file", str(docs)]) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    want = one_logit.rerank(QUERY, DOCS, return_documents=True)
    assert [(g["index"], g["text"]) for g in got] == [(w.index, w.text) for w in want]
    assert [g["score"] for g in got] == pytest.approx([w.score for w in want], abs=1e-6)


# /rerank over HTTP ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(exported: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("starlette")
    from test_server import named, serving

    from engine.serve.app import ServerConfig, create_app
    from engine.serve.models import build_models

    tmp = tmp_path_factory.mktemp("rerank-served")
    dirs = [named(tmp, "ms-marco-tiny", exported("bert-single", "fp32")), named(tmp, "nli", exported("bert-nli"))]
    with serving(create_app(build_models(dirs, threads=1), ServerConfig(preload=True))) as base:
        yield base


def test_tei_rerank_route(served: str, one_logit: Reranker) -> None:
    import httpx

    body = {"query": QUERY, "texts": DOCS, "return_text": True}
    for path in ("/rerank", "/models/ms-marco-tiny/rerank"):  # the only cross-encoder, or named
        got = httpx.post(served + path, json=body).json()
        want = one_logit.rerank(QUERY, DOCS, return_documents=True)
        assert [(g["index"], g["text"]) for g in got] == [(w.index, w.text) for w in want]
        assert [g["score"] for g in got] == pytest.approx([w.score for w in want], abs=1e-6)
    raw = httpx.post(served + "/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    assert set(raw[0]) == {"index", "score"}
    want_raw = one_logit.rerank(QUERY, DOCS, raw_scores=True)
    assert [g["score"] for g in raw] == pytest.approx([w.score for w in want_raw], abs=1e-5)
    # TEI's error body {error, error_type} and statuses (router/src/http/server.rs)
    too_long = httpx.post(served + "/rerank", json={"query": QUERY, "texts": [DOCS[0] * 20], "truncate": False})
    assert too_long.status_code == 413
    assert too_long.json()["error_type"] == "Validation"
    empty = httpx.post(served + "/rerank", json={"query": QUERY, "texts": []})
    assert empty.status_code == 400
    assert empty.json()["error_type"] == "Empty"
    assert "empty" in empty.json()["error"]
    missing = httpx.post(served + "/rerank", json={"query": QUERY})
    assert missing.status_code == 422
    assert set(missing.json()) == {"error", "error_type"}
    assert httpx.post(served + "/models/nli/rerank", json=body).status_code == 400
    # the HF text-pair shape keeps working on the same model
    pair = httpx.post(served + "/models/ms-marco-tiny", json={"inputs": {"text": QUERY, "text_pair": DOCS[0]}})
    (scores,) = pair.json()
    assert scores[0]["score"] == pytest.approx(one_logit.predict_scores(QUERY, DOCS[:1])[0], abs=1e-6)


def test_cohere_and_jina_rerank_route(served: str, one_logit: Reranker) -> None:
    import httpx

    want = one_logit.rerank(QUERY, DOCS, top_k=2, return_documents=True)
    for version in ("v1", "v2"):
        body = {"model": "ms-marco-tiny", "query": QUERY, "documents": DOCS, "top_n": 2, "return_documents": True}
        got = httpx.post(f"{served}/{version}/rerank", json=body).json()
        assert [(r["index"], r["document"]["text"]) for r in got["results"]] == [(w.index, w.text) for w in want]
        assert [r["relevance_score"] for r in got["results"]] == pytest.approx([w.score for w in want], abs=1e-6)
    objects = {"query": QUERY, "documents": [{"text": d} for d in DOCS]}  # Cohere v1's {text} documents, no model
    got = httpx.post(f"{served}/v1/rerank", json=objects).json()
    assert len(got["results"]) == len(DOCS)
    assert "document" not in got["results"][0]
    wrong = httpx.post(f"{served}/v1/rerank", json={**objects, "model": "nli"})
    assert wrong.status_code == 400
    assert "cross-encoder" in wrong.json()["message"]


def test_zero_shot_extensions_over_http(served: str, exported: Any) -> None:
    """Labels per text and long_text on the HF route (the server of this module also serves an NLI model)."""
    import httpx

    from engine import ZeroShotClassifier

    zs = ZeroShotClassifier.load(exported("bert-nli"), threads=1)
    texts, labels = (
        ["I want a refund now.", "The match was a draw."],
        [["refund", "legal"], ["sports", "weather", "art"]],
    )
    body = {"inputs": [{"text": t, "candidate_labels": ls} for t, ls in zip(texts, labels)]}
    pipeline = {"x-zero-shot-format": "pipeline"}
    got = httpx.post(served + "/models/nli", json=body, headers=pipeline).json()
    for g, text, ls in zip(got, texts, labels):
        want = zs.pipeline(text, ls)
        assert g["sequence"] == text
        assert g["labels"] == want.labels
        assert g["scores"] == pytest.approx(want.scores, abs=1e-6)
    long = " ".join(DOCS * 6)
    chunked = {"inputs": long, "parameters": {"candidate_labels": ["cities", "weather"], "long_text": "chunk"}}
    got_long = httpx.post(served + "/models/nli", json=chunked, headers=pipeline).json()
    want_long = zs.pipeline(long, ["cities", "weather"], long_text="chunk")
    assert got_long["scores"] == pytest.approx(want_long.scores, abs=1e-6)
    bad = {**chunked, "parameters": {**chunked["parameters"], "chunk_aggregation": "median"}}
    assert httpx.post(served + "/models/nli", json=bad).status_code == 422


def test_two_batches_at_once_by_default_with_the_same_scores(exported: Any) -> None:
    """A rerank call is one query x many documents, so it runs as zero-shot's pairs do: two runs at once."""
    path = exported("bert-single", "fp32")
    default, serial = Reranker.load(path, threads=2), Reranker.load(path, threads=2, concurrent_batches=1)
    assert (default.model.concurrent_batches, default.model.session.threads) == (2, 1)
    docs = ["The giant panda is a bear.", "hi", "pandas eat bamboo " * 20, "a", "bears"] * 7
    assert default.predict_scores("what is a panda?", docs) == serial.predict_scores("what is a panda?", docs)
