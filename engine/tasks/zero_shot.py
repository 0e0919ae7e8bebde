"""Zero-shot classification with an NLI model: each candidate label becomes a hypothesis about the text.

request -> validate (spec) -> tokenize every (text, hypothesis) pair, premise cut only -> one batched run over all
pairs of all texts, length-sorted -> postprocess.zero_shot_scores per text -> response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import InvalidRequestError, ModelLoadError, TextTooLongError, first_error
from engine.runtime import postprocess
from engine.runtime.loaded import LoadedModel
from engine.runtime.tokenization import Premise, Side, Strategy, Truncation
from engine.tasks.base import Task, single_or_batch
from engine.tasks.inputs import LabeledText, ZeroShotText, parse_texts
from engine.tasks.params import (
    DEFAULT_HYPOTHESIS_TEMPLATE,
    ClassificationOutput,
    ZeroShotClassificationInput,
    ZeroShotClassificationParameters,
    ZeroShotPipelineOutput,
)
from engine.tasks.registry import TaskName


@dataclass(frozen=True)
class ZeroShotPrediction:
    """One text's labels, best first, and whether the text was cut to fit the window."""

    sequence: str
    outputs: list[ClassificationOutput]
    truncated: bool
    num_chunks: int = 1  # windows of the text scored: more than 1 only with long_text="chunk"

    def to_pipeline(self) -> ZeroShotPipelineOutput:
        return ZeroShotPipelineOutput(self.sequence, [o.label for o in self.outputs], [o.score for o in self.outputs])


class ZeroShotClassifier(Task):
    """Score texts against labels chosen at call time, with an exported NLI model.

    >>> zs = ZeroShotClassifier.load("models/bart-large-mnli")
    >>> zs("I want my money back", candidate_labels=["refund", "legal", "faq"])
    [ClassificationOutput(label='refund', score=0.9...), ...]
    """

    task = TaskName.ZERO_SHOT

    def __init__(self, model: LoadedModel) -> None:
        info = model.info
        if info.entailment_id is None or info.contradiction_id is None:
            raise ModelLoadError(
                f"{info.path} is not an NLI model: its labels {list(info.labels)} have no 'entailment' label, so "
                "zero-shot scores would be meaningless. Use an NLI checkpoint (e.g. bart-large-mnli) or "
                "TextClassifier for this model."
            )
        super().__init__(model)
        self.entailment_id = info.entailment_id
        self.contradiction_id = info.contradiction_id

    def predict(
        self,
        texts: Sequence[ZeroShotText],
        parameters: ZeroShotClassificationParameters,
        *,
        truncation: bool = True,
        truncation_direction: str | Side = "right",
    ) -> list[ZeroShotPrediction]:
        """Ranked labels for validated texts; all pairs of all texts go through one batched run."""
        return first_error(self._predict(texts, parameters, truncation, truncation_direction, per_row=False))

    def predict_rows(
        self,
        texts: Sequence[ZeroShotText],
        parameters: ZeroShotClassificationParameters,
        *,
        truncation: bool = True,
        truncation_direction: str | Side = "right",
    ) -> list[ZeroShotPrediction | TextTooLongError]:
        """Like `predict`, but a text too long for the window (truncation off) comes back as its error."""
        return self._predict(texts, parameters, truncation, truncation_direction, per_row=True)

    def _predict(
        self,
        texts: Sequence[ZeroShotText],
        parameters: ZeroShotClassificationParameters,
        truncation: bool,
        truncation_direction: str | Side,
        per_row: bool,
    ) -> list[ZeroShotPrediction | TextTooLongError]:
        trunc = Truncation.parse(truncation, truncation_direction, Strategy.ONLY_FIRST)
        labels = [parameters.labels_of(t) for t in texts]
        template = parameters.hypothesis_template
        premises = [t.text if isinstance(t, LabeledText) else t for t in texts]
        hypotheses = [[template.format(label) for label in ls] for ls in labels]
        groups = self.model.tokenizer.encode_pairs(premises, hypotheses, trunc, parameters.long_text)
        if not per_row:
            first_error(groups)
        encoded = [p for g in groups if isinstance(g, Premise) for p in g.rows]
        logits = self.model.logits(encoded)  # every pair of every text, in one length-sorted run
        out: list[ZeroShotPrediction | TextTooLongError] = []
        start = 0  # of this text's pairs in `encoded`
        for text, text_labels, group in zip(premises, labels, groups):
            if isinstance(group, TextTooLongError):
                out.append(group)
                continue
            scores = postprocess.zero_shot_scores(
                logits[start : start + len(group.rows)],
                self.entailment_id,
                self.contradiction_id,
                parameters.multi_label,
                group.windows,
                parameters.long_text.aggregation,
            )
            start += len(group.rows)
            ranked = postprocess.ranked_labels(scores, text_labels, None)
            outputs = [ClassificationOutput(label, score) for label, score in ranked]
            out.append(ZeroShotPrediction(text, outputs, group.rows[0].truncated, group.windows))
        return out

    def _call(
        self, inputs: object, params: ZeroShotClassificationParameters | None, options: _Options
    ) -> tuple[list[ZeroShotPrediction], bool]:
        texts: list[ZeroShotText]
        if isinstance(inputs, ZeroShotClassificationInput):
            params, inputs = inputs.parameters, inputs.inputs
        if params is None:
            raise InvalidRequestError("zero-shot classification needs candidate_labels")
        if isinstance(inputs, list) and inputs and all(isinstance(x, LabeledText) for x in inputs):
            texts = list(inputs)
        else:
            texts = list(parse_texts(inputs))
        if _per_text(options.candidate_labels):
            texts = _labeled(texts, options.candidate_labels, inputs)
        predictions = self.predict(texts, params, truncation=options.truncation, truncation_direction=options.side)
        self.warn_truncated([p.truncated for p in predictions])
        return predictions, isinstance(inputs, (list, tuple))

    def __call__(
        self,
        inputs: object,
        candidate_labels: object = None,
        *,
        hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE,
        multi_label: bool = False,
        truncation: bool = True,
        truncation_direction: str = "right",
        long_text: str = "truncate",
        chunk_stride: int | None = None,
        chunk_aggregation: str | None = None,
    ) -> list[ClassificationOutput] | list[list[ClassificationOutput]]:
        """The spec's shape: a sorted list of {label, score} per text (a list of those for a list of texts).

        `candidate_labels` is one list for every text, or one list per text (`[[...], [...]]`, as many as texts).
        `long_text="chunk"` pairs every window of a long text with every hypothesis and aggregates per label
        (`chunk_aggregation`: mean of entailment logits by default, max of entailment shares with multi_label).
        `inputs` may also be a ZeroShotClassificationInput, whose parameters are then used.
        """
        options = _Options(candidate_labels, truncation, truncation_direction)
        params = _params(
            inputs, candidate_labels, hypothesis_template, multi_label, long_text, chunk_stride, chunk_aggregation
        )
        predictions, is_batch = self._call(inputs, params, options)
        outputs: list[list[ClassificationOutput]] = [p.outputs for p in predictions]
        return single_or_batch(outputs, is_batch)

    def pipeline(
        self,
        inputs: object,
        candidate_labels: object = None,
        *,
        hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE,
        multi_label: bool = False,
        truncation: bool = True,
        truncation_direction: str = "right",
        long_text: str = "truncate",
        chunk_stride: int | None = None,
        chunk_aggregation: str | None = None,
    ) -> ZeroShotPipelineOutput | list[ZeroShotPipelineOutput]:
        """The transformers pipeline's shape, {sequence, labels, scores} per text, for code ported from it."""
        options = _Options(candidate_labels, truncation, truncation_direction)
        params = _params(
            inputs, candidate_labels, hypothesis_template, multi_label, long_text, chunk_stride, chunk_aggregation
        )
        predictions, is_batch = self._call(inputs, params, options)
        return single_or_batch([p.to_pipeline() for p in predictions], is_batch)


@dataclass(frozen=True)
class _Options:
    candidate_labels: object
    truncation: bool
    side: str


def _per_text(candidate_labels: object) -> bool:
    """`[[...], [...]]`: one label list per text."""
    return (
        isinstance(candidate_labels, (list, tuple))
        and bool(candidate_labels)
        and all(isinstance(x, (list, tuple)) for x in candidate_labels)
    )


def _labeled(texts: list[ZeroShotText], candidate_labels: object, inputs: object) -> list[ZeroShotText]:
    lists = list(candidate_labels) if isinstance(candidate_labels, (list, tuple)) else []
    if not isinstance(inputs, (list, tuple)) or len(lists) != len(texts):
        raise InvalidRequestError(
            f"candidate_labels has {len(lists)} label lists for "
            f"{len(texts) if isinstance(inputs, (list, tuple)) else 'a single'} text(s); give a list of texts and "
            "one label list per text"
        )
    return [LabeledText.parse(t, labels) for t, labels in zip(texts, lists)]


def _params(
    inputs: object,
    candidate_labels: object,
    template: str,
    multi_label: bool,
    long_text: str,
    chunk_stride: int | None,
    chunk_aggregation: str | None,
) -> ZeroShotClassificationParameters | None:
    """Keyword parameters, unless the request object carries its own (then giving both is ambiguous)."""
    if isinstance(inputs, ZeroShotClassificationInput):
        given = (candidate_labels, chunk_stride, chunk_aggregation) != (None, None, None) or long_text != "truncate"
        if given or template != DEFAULT_HYPOTHESIS_TEMPLATE or multi_label:
            raise InvalidRequestError(
                "the request already carries its parameters; do not pass candidate_labels, hypothesis_template, "
                "multi_label or long-text options as well"
            )
        return None
    if candidate_labels is None:
        raise InvalidRequestError("zero-shot classification needs candidate_labels")
    shared = None if _per_text(candidate_labels) else candidate_labels
    return ZeroShotClassificationParameters.parse(
        shared, template, multi_label, long_text, chunk_stride, chunk_aggregation
    )
