"""The model types engine/export/support.py lists as tested that no other test file covers, each on its tiny random
checkpoint (tests/checkpoints.py): ModernBERT (a 1,024-token window, a local layer whose 16-token window is shorter
than the texts, no token_type_ids), DeBERTa-v3 with a SentencePiece Unigram tokenizer, ELECTRA, CamemBERT and
XLM-RoBERTa. For each: the fp32 export against transformers.pipeline("text-classification") at the tolerances of
test_text_classification.py, the int8 export through its gate, `engine adopt` of a plain ONNX export of it, and
what the manifest says of the attention fusion. Then the warning on a model type nothing has tested."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import checkpoints
import numpy as np
import pytest

from engine import TextClassifier
from engine.export import adopt as adopt_module
from engine.export import export as export_models
from engine.export import support
from engine.export.graph.fuse import FUSED_MODEL_TYPES

pytest.importorskip("transformers")

ARCHITECTURES = ["modernbert", "deberta-v3", "electra", "camembert", "xlm-roberta"]
# the other tested types and the files that hold them
COVERED_ELSEWHERE = {
    "bert": "test_text_classification.py",
    "distilbert": "test_text_classification.py",
    "roberta": "test_text_classification.py",
    "bart": "test_zero_shot.py",
}
TEXTS = [
    "I like you. I love you",
    "This movie was a complete waste of time, and the popcorn was stale as well.",
    "Meh.",
    "the quick brown fox jumps over the lazy dog " * 12,  # past the window of the 64-token checkpoints: truncated
]
PAIRS = [
    {"text": "What is Paris?", "text_pair": "Paris is the capital and most populous city of France."},
    {"text": "Who won the match?", "text_pair": "The weather was cold, and the match was called off at half time."},
]


def manifest(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "manifest.json").read_text())


def model_type(checkpoint_dir: Path) -> str:
    return str(json.loads((checkpoint_dir / "config.json").read_text())["model_type"])


def assert_matches_pipeline(clf: TextClassifier, checkpoint_dir: Path, inputs: list[Any]) -> None:
    from transformers import pipeline

    reference = pipeline("text-classification", model=str(checkpoint_dir), device="cpu")
    window = clf.model.info.max_length
    for item in inputs:
        expected = reference(item, top_k=None, truncation=True, max_length=window)
        got = clf(item, top_k=None)
        assert [o.label for o in got] == [e["label"] for e in expected]
        np.testing.assert_allclose([o.score for o in got], [e["score"] for e in expected], rtol=1e-5, atol=1e-5)


def test_every_tested_type_has_its_checkpoint_and_test(checkpoint: Any) -> None:
    for name, tested in support.TESTED.items():
        assert tested.checkpoint in ARCHITECTURES or name in COVERED_ELSEWHERE, name
        assert model_type(checkpoint(tested.checkpoint)) == name


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_fp32_export_matches_the_pipeline(exported: Any, checkpoint: Any, name: str) -> None:
    path = exported(name, "fp32")
    m = manifest(path)
    assert m["model_type"] == model_type(checkpoint(name))
    assert m["precision"] == "fp32"
    assert_matches_pipeline(TextClassifier.load(path), checkpoint(name), [*TEXTS, *PAIRS])


# Random tiny checkpoints make near-tied decisions, which int8 flips more often than a trained model's: the
# held-out gate (engine/export/gate.py, a lower bound) holds them to 90%, not the 99% a trained model is held to.
TINY_GATE = 0.9


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_int8_export_passes_the_gate(checkpoint: Any, name: str, tmp_path: Path) -> None:
    from engine.export import export as export_models

    path = tmp_path / "int8"
    export_models.export(str(checkpoint(name)), path, "int8", log=lambda _m: None, min_agreement=TINY_GATE)
    m = manifest(path)
    assert m["precision"] == "int8"
    v = m["verification"]
    assert v["int8_min_agreement"] == TINY_GATE
    assert v["int8_top1_agreement"] >= TINY_GATE
    assert TextClassifier.load(path)(TEXTS[0], top_k=None)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_manifest_says_whether_attention_was_fused(exported: Any, name: str) -> None:
    m = manifest(exported(name, "fp32"))
    v, kind = m["verification"], m["model_type"]
    if kind in FUSED_MODEL_TYPES:
        assert v["fused_attention_layers"] == 2
        assert v["attention_fusion"] == "fused (2 layers)"
    else:  # ModernBERT (local attention), DeBERTa (disentangled attention): the graph as exported, and why
        assert v["fused_attention_layers"] == 0
        assert v["attention_fusion"].startswith(f"not fused: the fusion is not written for model type {kind!r}")


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_adopted_plain_export_matches_the_pipeline(
    published_layout: Any, checkpoint: Any, name: str, tmp_path: Path
) -> None:
    said: list[str] = []
    out = tmp_path / "model"
    m = adopt_module.adopt(str(published_layout(name, "optimum")), out, log=said.append)
    assert m["adopted"]["file"] == "model.onnx"
    assert m["precision"] == "fp32"
    assert not any("has not been tested" in line for line in said)
    assert_matches_pipeline(TextClassifier.load(out), checkpoint(name), [*TEXTS, *PAIRS])


def test_modernbert_reads_past_512_tokens_through_its_local_layers(exported: Any, checkpoint: Any) -> None:
    """A 700-token text, unpadded and beside short ones: the whole window, no truncation, torch's logits."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    clf = TextClassifier.load(exported("modernbert", "fp32"))
    assert clf.model.info.max_length == checkpoints.MODERNBERT_WINDOW
    ckpt = checkpoint("modernbert")
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    words = " ".join(checkpoints.sample_texts()).split()
    long_text = ""
    while len(tokenizer(long_text)["input_ids"]) < 700:
        long_text = " ".join(words[: len(long_text.split()) + 10])
    (prediction,) = clf.predict([long_text])
    assert not prediction.truncated
    assert 700 <= prediction.num_tokens <= checkpoints.MODERNBERT_WINDOW
    model = AutoModelForSequenceClassification.from_pretrained(ckpt).eval()
    texts = [long_text, "short", "a text of some twenty tokens, longer than the local window of sixteen tokens"]
    with torch.no_grad():
        expected = [model(**tokenizer(t, return_tensors="pt")).logits[0].numpy() for t in texts]
    got = clf(texts, top_k=None, function_to_apply="none")
    for g, e in zip(got, expected):
        by_label = {o.label: o.score for o in g}
        labels = [clf.model.info.labels[i] for i in range(len(e))]
        np.testing.assert_allclose([by_label[label] for label in labels], e, rtol=1e-4, atol=1e-4)


def test_an_untested_model_type_is_warned(checkpoint: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert support.untested("bert") is None
    warning = support.untested("funnel")
    assert warning is not None
    assert "'funnel' has not been tested" in warning
    assert "bert" in warning
    monkeypatch.delitem(support.TESTED, "bert")  # as if bert were new: the export warns, then does its checks
    said: list[str] = []
    m = export_models.export(str(checkpoint("bert")), tmp_path / "model", "fp32", log=said.append)
    assert said[0].startswith("warning: model type 'bert' has not been tested")
    assert m["verification"]["fp32_vs_torch_max_logit_diff"] <= 1e-3
