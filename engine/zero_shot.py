"""Zero-shot classification with an NLI model: each candidate label becomes a hypothesis about the text.

request -> validate (spec) -> tokenize every (text, hypothesis) pair, premise cut only -> one batched run over all
pairs of all texts, length-sorted -> postprocess.zero_shot_scores per text -> response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import postprocess
from .errors import InvalidRequestError, ModelLoadError, TextTooLongError, first_error
from .model import LoadedModel
from .spec import (
    DEFAULT_HYPOTHESIS_TEMPLATE,
    ClassificationOutput,
    ZeroShotClassificationInput,
    ZeroShotClassificationParameters,
    ZeroShotPipelineOutput,
    parse_texts,
)
from .task import Task, single_or_batch
from .tokenize import Encoded, Side, Strategy, Truncation


@dataclass(frozen=True)
class ZeroShotPrediction:
    """One text's labels, best first, and whether the text was cut to fit the window."""

    sequence: str
    outputs: list[ClassificationOutput]
    truncated: bool

    def to_pipeline(self) -> ZeroShotPipelineOutput:
        return ZeroShotPipelineOutput(self.sequence, [o.label for o in self.outputs], [o.score for o in self.outputs])


class ZeroShotClassifier(Task):
    """Score texts against labels chosen at call time, with an exported NLI model.

    >>> zs = ZeroShotClassifier.load("models/bart-large-mnli")
    >>> zs("I want my money back", candidate_labels=["refund", "legal", "faq"])
    [ClassificationOutput(label='refund', score=0.9...), ...]
    """

    what = "texts"

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
        texts: Sequence[str],
        parameters: ZeroShotClassificationParameters,
        *,
        truncation: bool = True,
        truncation_direction: str | Side = "right",
    ) -> list[ZeroShotPrediction]:
        """Ranked labels for validated texts; all pairs of all texts go through one batched run."""
        return first_error(self._predict(texts, parameters, truncation, truncation_direction, per_row=False))

    def predict_rows(
        self,
        texts: Sequence[str],
        parameters: ZeroShotClassificationParameters,
        *,
        truncation: bool = True,
        truncation_direction: str | Side = "right",
    ) -> list[ZeroShotPrediction | TextTooLongError]:
        """Like `predict`, but a text too long for the window (truncation off) comes back as its error."""
        return self._predict(texts, parameters, truncation, truncation_direction, per_row=True)

    def _predict(
        self,
        texts: Sequence[str],
        parameters: ZeroShotClassificationParameters,
        truncation: bool,
        truncation_direction: str | Side,
        per_row: bool,
    ) -> list[ZeroShotPrediction | TextTooLongError]:
        trunc = Truncation.parse(truncation, truncation_direction, Strategy.ONLY_FIRST)
        labels = parameters.candidate_labels
        hypotheses = [parameters.hypothesis_template.format(label) for label in labels]
        tokenizer = self.model.tokenizer
        pairs: Sequence[Encoded | TextTooLongError] = (
            tokenizer.encode_product_rows(texts, hypotheses, trunc)
            if per_row
            else tokenizer.encode_product(texts, hypotheses, trunc)
        )
        n = len(labels)
        groups = [pairs[i * n : (i + 1) * n] for i in range(len(texts))]
        errors = [next((p for p in group if isinstance(p, TextTooLongError)), None) for group in groups]
        encoded = [p for group, e in zip(groups, errors) if e is None for p in group if isinstance(p, Encoded)]
        logits = self.model.logits(encoded)
        out: list[ZeroShotPrediction | TextTooLongError] = []
        start = 0  # of this text's pairs in `encoded`
        for text, error in zip(texts, errors):
            if error is not None:
                out.append(error)
                continue
            scores = postprocess.zero_shot_scores(
                logits[start : start + n], self.entailment_id, self.contradiction_id, parameters.multi_label
            )
            ranked = postprocess.ranked_labels(scores, labels, None)
            outputs = [ClassificationOutput(label, score) for label, score in ranked]
            out.append(ZeroShotPrediction(text, outputs, encoded[start].truncated))
            start += n
        return out

    def _call(
        self, inputs: object, params: ZeroShotClassificationParameters | None, truncation: bool, side: str
    ) -> tuple[list[ZeroShotPrediction], bool]:
        if isinstance(inputs, ZeroShotClassificationInput):
            params, inputs = inputs.parameters, inputs.inputs
        if params is None:
            raise InvalidRequestError("zero-shot classification needs candidate_labels")
        texts = parse_texts(inputs)
        predictions = self.predict(texts, params, truncation=truncation, truncation_direction=side)
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
    ) -> list[ClassificationOutput] | list[list[ClassificationOutput]]:
        """The spec's shape: a sorted list of {label, score} per text (a list of those for a list of texts).

        `inputs` may also be a ZeroShotClassificationInput, whose parameters are then used.
        """
        params = _params(inputs, candidate_labels, hypothesis_template, multi_label)
        predictions, is_batch = self._call(inputs, params, truncation, truncation_direction)
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
    ) -> ZeroShotPipelineOutput | list[ZeroShotPipelineOutput]:
        """The transformers pipeline's shape, {sequence, labels, scores} per text, for code ported from it."""
        params = _params(inputs, candidate_labels, hypothesis_template, multi_label)
        predictions, is_batch = self._call(inputs, params, truncation, truncation_direction)
        return single_or_batch([p.to_pipeline() for p in predictions], is_batch)


def _params(
    inputs: object, candidate_labels: object, template: str, multi_label: bool
) -> ZeroShotClassificationParameters | None:
    """Keyword parameters, unless the request object carries its own (then giving both is ambiguous)."""
    if isinstance(inputs, ZeroShotClassificationInput):
        if candidate_labels is not None or template != DEFAULT_HYPOTHESIS_TEMPLATE or multi_label:
            raise InvalidRequestError(
                "the request already carries its parameters; do not pass candidate_labels, hypothesis_template "
                "or multi_label as well"
            )
        return None
    if candidate_labels is None:
        raise InvalidRequestError("zero-shot classification needs candidate_labels")
    return ZeroShotClassificationParameters.parse(candidate_labels, template, multi_label)
