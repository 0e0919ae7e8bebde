"""Zero-shot parity with transformers.pipeline("zero-shot-classification") on the same weights, fp32: every
score within 1e-5, for three NLI architectures (BART entailment@2, DeBERTa-v2 entailment@0, BERT entailment@2);
and a typed error for every bad request."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine import (
    ClassificationOutput,
    InvalidRequestError,
    ModelLoadError,
    TextClassifier,
    TextTooLongError,
    ZeroShotClassificationInput,
    ZeroShotClassificationParameters,
    ZeroShotClassifier,
    ZeroShotPipelineOutput,
)
from engine.runtime.loaded import LoadedModel
from engine.runtime.tokenization import Strategy, Truncation

NLI_MODELS = ["bart-nli", "deberta-nli", "bert-nli"]
TEXT = "Hi, I recently bought a device from your company but it is not working as advertised and I want a refund!"
TEXTS = [TEXT, "The match ended in a draw after extra time.", "Parliament passed the new budget today."]
LABELS = ["refund", "legal", "faq", "sports", "politics"]
MANY = [f"topic number {i}" for i in range(55)]
LONG = "the quick brown fox jumps over the lazy dog and keeps on running " * 30
TEMPLATE = "This text is about {}."
ATOL = 1e-5

# name -> (texts, keyword arguments), each run through both the reference and the engine
CASES: dict[str, tuple[Any, dict[str, Any]]] = {
    "single label": (TEXT, {"candidate_labels": LABELS}),
    "multi label": (TEXT, {"candidate_labels": LABELS, "multi_label": True}),
    "one label": (TEXT, {"candidate_labels": ["refund"]}),
    "one label multi": (TEXT, {"candidate_labels": ["refund"], "multi_label": True}),
    "many labels": (TEXT, {"candidate_labels": MANY}),
    "many labels multi": (TEXT, {"candidate_labels": MANY, "multi_label": True}),
    "custom template": (TEXT, {"candidate_labels": LABELS, "hypothesis_template": TEMPLATE}),
    "comma string": (TEXT, {"candidate_labels": " refund, legal ,, faq ,"}),
    "several texts": (TEXTS, {"candidate_labels": LABELS}),
    "several texts multi": (TEXTS, {"candidate_labels": LABELS, "multi_label": True}),
    "long premise": ([LONG, TEXT], {"candidate_labels": LABELS}),
    # BART reads "</s>" as its special token (as transformers does) and pools the last one: rows batched apart
    "literal special token": (["hello </s> world", TEXT, "a [SEP] b"], {"candidate_labels": LABELS}),
}


@pytest.fixture(scope="module", params=NLI_MODELS)
def pair_of(request: pytest.FixtureRequest, checkpoint: Any, exported: Any) -> tuple[Any, ZeroShotClassifier]:
    from transformers import pipeline

    reference = pipeline("zero-shot-classification", model=str(checkpoint(request.param)), device="cpu")
    return reference, ZeroShotClassifier.load(exported(request.param, "fp32"), threads=1)


def rows(result: Any) -> list[dict[str, Any]]:
    """Reference dicts, or the engine's ZeroShotPipelineOutput, as a list of plain dicts."""
    items = result if isinstance(result, list) else [result]
    return [r.to_dict() if isinstance(r, ZeroShotPipelineOutput) else r for r in items]


def check_same(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Same sequences, same label -> score within ATOL, engine sorted descending; labels whose reference scores
    differ by more than 2 * ATOL come in the reference's order (closer ones may swap)."""
    assert [g["sequence"] for g in got] == [e["sequence"] for e in expected]
    for g, e in zip(got, expected):
        assert sorted(g["labels"]) == sorted(e["labels"])
        assert len(g["labels"]) == len(set(g["labels"]))
        want = dict(zip(e["labels"], e["scores"]))
        np.testing.assert_allclose(g["scores"], [want[label] for label in g["labels"]], rtol=0, atol=ATOL)
        assert g["scores"] == sorted(g["scores"], reverse=True)
        ref = np.array([want[label] for label in g["labels"]])  # reference scores in the engine's order
        assert (ref[1:] <= np.minimum.accumulate(ref)[:-1] + 2 * ATOL).all()  # no clear inversion


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference_pipeline(pair_of: Any, case: str) -> None:
    reference, zs = pair_of
    inputs, kwargs = CASES[case]
    expected = rows(reference(inputs, **kwargs))
    check_same(rows(zs.pipeline(inputs, **kwargs)), expected)
    spec = zs(inputs, **kwargs)  # the spec's shape: sorted [ClassificationOutput], one list per text for a list
    per_text = spec if isinstance(inputs, list) else [spec]
    assert isinstance(spec, list)
    assert all(isinstance(o, ClassificationOutput) for r in per_text for o in r)
    as_pipeline = [
        {"sequence": t, "labels": [o.label for o in r], "scores": [o.score for o in r]}
        for t, r in zip(inputs if isinstance(inputs, list) else [inputs], per_text)
    ]
    check_same(as_pipeline, expected)
    if not kwargs.get("multi_label") and len(expected[0]["labels"]) > 1:
        for r in per_text:
            assert sum(o.score for o in r) == pytest.approx(1.0, abs=1e-5)


def test_long_premise_is_cut_and_hypothesis_kept(pair_of: Any) -> None:
    reference, zs = pair_of
    hypothesis = TEMPLATE.format("a very long label that must survive truncation intact")
    (premise,) = zs.model.tokenizer.encode_pairs([LONG], [[hypothesis]], Truncation(strategy=Strategy.ONLY_FIRST))
    (enc,) = premise.rows
    want = reference.tokenizer(LONG, hypothesis, truncation="only_first")  # to model_max_length, like the pipeline
    assert enc.ids == want["input_ids"]
    assert len(enc.ids) == zs.model.info.max_length
    assert enc.truncated
    alone = reference.tokenizer(hypothesis, add_special_tokens=False)["input_ids"]
    tail = enc.ids[len(enc.ids) - len(alone) - 1 : -1]  # before the final special token
    assert tail == alone
    short, long_ = zs.predict(["I want a refund.", LONG], ZeroShotClassificationParameters(("refund", "legal")))
    assert long_.truncated
    assert not short.truncated
    with pytest.raises(TextTooLongError):
        zs(LONG, ["refund"], truncation=False)


@pytest.mark.parametrize("shape", ["current", "older"])
def test_both_request_shapes(pair_of: Any, shape: str) -> None:
    reference, zs = pair_of
    if shape == "current":
        body: dict[str, Any] = {
            "inputs": TEXT,
            "parameters": {"candidate_labels": LABELS, "hypothesis_template": TEMPLATE, "multi_label": True},
        }
    else:
        body = {
            "inputs": {"text": TEXT, "candidateLabels": LABELS},
            "parameters": {"hypothesisTemplate": TEMPLATE, "multiLabel": True},
        }
    request = ZeroShotClassificationInput.from_dict(body)
    assert request.parameters == ZeroShotClassificationParameters(tuple(LABELS), TEMPLATE, True)
    expected = rows(reference(TEXT, candidate_labels=LABELS, hypothesis_template=TEMPLATE, multi_label=True))
    check_same(rows(zs.pipeline(request)), expected)
    spec = zs(request)
    assert [o.label for o in spec] == rows(zs.pipeline(request))[0]["labels"]


def test_request_object_and_keyword_parameters_are_not_mixed(bert_nli: ZeroShotClassifier) -> None:
    request = ZeroShotClassificationInput.from_dict({"inputs": TEXT, "parameters": {"candidate_labels": LABELS}})
    for kwargs in ({"candidate_labels": ["x"]}, {"multi_label": True}, {"hypothesis_template": TEMPLATE}):
        with pytest.raises(InvalidRequestError, match="already carries its parameters"):
            bert_nli(request, **kwargs)


def test_all_pairs_of_a_call_run_in_one_batched_pass(pair_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, zs = pair_of
    calls: list[int] = []
    original = LoadedModel.logits

    def counting(self: LoadedModel, encoded: Any) -> np.ndarray:
        calls.append(len(encoded))
        return original(self, encoded)

    monkeypatch.setattr(LoadedModel, "logits", counting)
    zs(TEXTS, MANY)
    assert calls == [len(TEXTS) * len(MANY)]


# Bad requests: each a typed error, raised before the model runs --------------------------------------------------

BAD: list[tuple[str, Any, dict[str, Any]]] = [
    ("no labels", TEXT, {"candidate_labels": []}),
    ("labels None", TEXT, {}),
    ("blank comma string", TEXT, {"candidate_labels": " , ,"}),
    ("empty text", "", {"candidate_labels": LABELS}),
    ("whitespace text", " \n", {"candidate_labels": LABELS}),
    ("empty list of texts", [], {"candidate_labels": LABELS}),
    ("text not a string", 42, {"candidate_labels": LABELS}),
    ("template without {}", TEXT, {"candidate_labels": LABELS, "hypothesis_template": "This example is good."}),
    ("template with a named field", TEXT, {"candidate_labels": LABELS, "hypothesis_template": "About {topic}."}),
    ("template not a string", TEXT, {"candidate_labels": LABELS, "hypothesis_template": 3}),
    ("non-string labels", TEXT, {"candidate_labels": ["refund", 3]}),
    ("labels as a dict", TEXT, {"candidate_labels": {"refund": 1}}),
    ("blank label", TEXT, {"candidate_labels": ["refund", "  "]}),
    ("duplicate labels", TEXT, {"candidate_labels": ["refund", "legal", "refund"]}),
    ("duplicate labels in a string", TEXT, {"candidate_labels": "refund, legal, refund"}),
    ("multi_label not a bool", TEXT, {"candidate_labels": LABELS, "multi_label": "yes"}),
]


@pytest.fixture(scope="module")
def bert_nli(exported: Any) -> ZeroShotClassifier:
    return ZeroShotClassifier.load(exported("bert-nli", "fp32"), threads=1)


@pytest.mark.parametrize(("name", "inputs", "kwargs"), BAD, ids=[b[0] for b in BAD])
def test_bad_request_is_a_typed_error(
    bert_nli: ZeroShotClassifier, name: str, inputs: Any, kwargs: dict[str, Any]
) -> None:
    for call in (bert_nli, bert_nli.pipeline):
        with pytest.raises(InvalidRequestError) as info:
            call(inputs, **kwargs)
        assert not isinstance(info.value, TextTooLongError)


def test_error_messages_say_what_to_do(bert_nli: ZeroShotClassifier) -> None:
    with pytest.raises(InvalidRequestError, match=r"duplicates \['refund'\]; give each label once"):
        bert_nli(TEXT, ["refund", "legal", "refund"])
    with pytest.raises(InvalidRequestError, match=r"no \{\} for the label"):
        bert_nli(TEXT, LABELS, hypothesis_template="This example is good.")
    with pytest.raises(InvalidRequestError, match="at least one label"):
        bert_nli(TEXT, [])


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": TEXT},
        {"inputs": TEXT, "parameters": {"candidate_labels": []}},
        {"inputs": {"text": TEXT}},
        {"inputs": {"text": TEXT, "candidateLabels": LABELS}, "parameters": {"candidate_labels": LABELS}},
        {"inputs": TEXT, "parameters": {"candidate_labels": LABELS, "candidateLabels": LABELS}},
        {"inputs": "", "parameters": {"candidate_labels": LABELS}},
        {"inputs": TEXT, "parameters": {"candidate_labels": LABELS, "top_k": 2}},
        {"inputs": TEXT, "parameters": {"candidate_labels": ["a", "a"]}},
        [TEXT],
    ],
)
def test_bad_json_request_is_a_typed_error(body: Any) -> None:
    with pytest.raises(InvalidRequestError):
        ZeroShotClassificationInput.from_dict(body)


def test_model_without_entailment_label_is_refused(exported: Any) -> None:
    path = exported("bert", "fp32")  # labels NEGATIVE / POSITIVE
    with pytest.raises(ModelLoadError, match="no 'entailment' label"):
        ZeroShotClassifier.load(path)


def test_two_batches_at_once_by_default_with_the_same_answers(exported: Any) -> None:
    """A zero-shot call is texts x labels pairs: by default two runs at once, each on half the cores, with the
    answers of one batch at a time. TextClassifier keeps one batch at a time (a lone text's latency)."""
    path = exported("bert-nli", "fp32")
    default = ZeroShotClassifier.load(path, threads=2)
    assert (default.model.concurrent_batches, default.model.session.threads) == (2, 1)
    assert ZeroShotClassifier.load(path, threads=4).model.session.threads == 2
    assert ZeroShotClassifier.load(path, threads=1).model.concurrent_batches == 1
    serial = ZeroShotClassifier.load(path, threads=2, concurrent_batches=1)
    assert (serial.model.concurrent_batches, serial.model.session.threads) == (1, 2)
    assert TextClassifier.load(exported("bert", "fp32"), threads=2).model.concurrent_batches == 1
    for texts, labels in ((TEXT, LABELS), (TEXTS, MANY), ([LONG, TEXT], LABELS)):
        assert rows(default(texts, candidate_labels=labels)) == rows(serial(texts, candidate_labels=labels))
