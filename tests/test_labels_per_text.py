"""Zero-shot with one label list per text (issue 16, part 2): Python API, record scoring and the request shape.

Each text scored with its own labels equals that text scored alone with them; all pairs of all texts still go
through one length-sorted run.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine import InvalidRequestError, ZeroShotClassificationInput, ZeroShotClassifier, score_records
from engine.serve.wire import parse_hf
from engine.tasks.inputs import LabeledText

TEXTS = [
    "I want my money back, the device broke after two days.",
    "The match ended in a draw after extra time.",
    "Parliament passed the new budget today after a long debate about taxes and spending.",
]
PER_TEXT = [["refund", "legal", "faq"], ["sports", "weather"], ["politics", "economy", "sports", "cooking"]]
ATOL = 1e-6


@pytest.fixture(scope="module", params=["bert-nli", "bart-nli"])
def zs(request: pytest.FixtureRequest, exported: Any) -> ZeroShotClassifier:
    return ZeroShotClassifier.load(exported(request.param, "fp32"), threads=1)


def close(got: Any, want: Any) -> None:
    assert [o.label for o in got] == [o.label for o in want]
    assert [o.score for o in got] == pytest.approx([o.score for o in want], abs=ATOL)


@pytest.mark.parametrize("multi_label", [False, True])
def test_each_text_equals_itself_scored_alone(zs: ZeroShotClassifier, multi_label: bool) -> None:
    together = zs(TEXTS, candidate_labels=PER_TEXT, multi_label=multi_label)
    assert len(together) == len(TEXTS)
    for text, labels, got in zip(TEXTS, PER_TEXT, together):
        assert sorted(o.label for o in got) == sorted(labels)
        close(got, zs(text, candidate_labels=labels, multi_label=multi_label))
    pipeline = zs.pipeline(TEXTS, candidate_labels=PER_TEXT)
    assert [p.sequence for p in pipeline] == TEXTS


def test_all_pairs_share_one_run(zs: ZeroShotClassifier) -> None:
    calls: list[int] = []
    logits = zs.model.logits

    def counting(encoded: Any) -> Any:
        calls.append(len(encoded))
        return logits(encoded)

    object.__setattr__(zs.model, "logits", counting)  # LoadedModel is frozen
    try:
        zs(TEXTS, candidate_labels=PER_TEXT)
    finally:
        object.__delattr__(zs.model, "logits")
    assert calls == [sum(len(labels) for labels in PER_TEXT)]


@pytest.mark.parametrize(
    ("texts", "labels"),
    [
        (TEXTS[:2], PER_TEXT),  # three lists for two texts
        (TEXTS[0], [["a", "b"]]),  # one text is not a list of texts
        (TEXTS[:2], [["a", "b"], []]),  # an empty list
        (TEXTS[:2], [["a", "a"], ["b"]]),  # duplicates
    ],
)
def test_bad_label_lists_are_typed_errors(zs: ZeroShotClassifier, texts: Any, labels: Any) -> None:
    with pytest.raises(InvalidRequestError):
        zs(texts, candidate_labels=labels)


def test_request_shape_extension(zs: ZeroShotClassifier) -> None:
    body = {
        "inputs": [{"text": t, "candidate_labels": labels} for t, labels in zip(TEXTS, PER_TEXT)],
        "parameters": {"multi_label": True},
    }
    request = ZeroShotClassificationInput.from_dict(body)
    assert request.inputs == [LabeledText(t, tuple(labels)) for t, labels in zip(TEXTS, PER_TEXT)]
    assert ZeroShotClassificationInput.from_dict(request.to_dict()) == request
    for got, text, labels in zip(zs(request), TEXTS, PER_TEXT):
        close(got, zs(text, labels, multi_label=True))
    parsed = parse_hf("zero-shot-classification", body)
    assert parsed.cost == sum(len(labels) for labels in PER_TEXT)
    assert parsed.is_batch
    for bad in (
        {**body, "parameters": {"candidate_labels": ["x"]}},  # labels twice
        {"inputs": [{"text": TEXTS[0], "candidate_labels": ["a"]}, TEXTS[1]]},  # mixed
        {"inputs": [{"text": TEXTS[0]}]},  # no labels
        {"inputs": [TEXTS[0]]},  # plain texts still need parameters.candidate_labels
    ):
        with pytest.raises(InvalidRequestError):
            ZeroShotClassificationInput.from_dict(bad)


def test_labels_column(zs: ZeroShotClassifier) -> None:
    records: list[dict[str, Any]] = [
        {"text": TEXTS[0], "labels": PER_TEXT[0]},  # a list column (JSON lines, Parquet)
        {"text": TEXTS[1], "labels": ", ".join(PER_TEXT[1])},  # a comma string (CSV)
        {"text": TEXTS[2], "labels": PER_TEXT[2]},
        {"text": TEXTS[0], "labels": []},  # bad rows become error rows
        {"text": TEXTS[0]},
    ]
    rows = list(score_records(records, zs, labels_column="labels", chunk_rows=16))
    for row, text, labels in zip(rows[:3], TEXTS, PER_TEXT):
        assert row.error is None
        close(row.outputs, zs(text, labels))
    assert rows[3].error
    assert "candidate_labels" in rows[3].error
    assert rows[4].error
    assert "'labels'" in rows[4].error
    with pytest.raises(InvalidRequestError, match="not both"):
        list(score_records(records, zs, labels_column="labels", candidate_labels="a,b"))


def test_engine_score_labels_column_and_long_text(zs: ZeroShotClassifier, tmp_path: Any) -> None:
    import json

    from engine.cli import main

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    long = " ".join([TEXTS[2]] * 12)
    lines = [{"text": t, "labels": labels} for t, labels in zip(TEXTS, PER_TEXT)] + [{"text": long, "labels": "a,b"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in lines))
    model_dir = str(zs.model.info.path)
    args = ["score", model_dir, str(src), str(out), "--labels-column", "labels", "--long-text", "chunk", "--quiet"]
    assert main(args) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    for row, text, labels in zip(got, TEXTS, PER_TEXT):
        want = zs(text, labels)
        assert row["labels"] == [o.label for o in want]
        assert row["scores"] == pytest.approx([o.score for o in want], abs=ATOL)
    want = zs(long, ["a", "b"], long_text="chunk")
    assert got[3]["scores"] == pytest.approx([o.score for o in want], abs=ATOL)
    assert not got[3]["truncated"]
