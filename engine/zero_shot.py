"""Zero-shot classification with an NLI model: each candidate label becomes a hypothesis about the text.

request -> validate (spec) -> tokenize every (text, hypothesis) pair, premise cut only -> one batched run over all
pairs of all texts, length-sorted -> postprocess.zero_shot_scores per text -> response.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import batching, postprocess
from .errors import InvalidRequestError, ModelLoadError
from .model import LoadedModel
from .spec import (
    DEFAULT_HYPOTHESIS_TEMPLATE,
    ClassificationOutput,
    ZeroShotClassificationInput,
    ZeroShotClassificationParameters,
    ZeroShotPipelineOutput,
    parse_texts,
)
from .tokenize import Strategy, Truncation

log = logging.getLogger("engine")


@dataclass(frozen=True)
class ZeroShotPrediction:
    """One text's labels, best first, and whether the text was cut to fit the window."""

    sequence: str
    outputs: list[ClassificationOutput]
    truncated: bool

    def to_pipeline(self) -> ZeroShotPipelineOutput:
        return ZeroShotPipelineOutput(self.sequence, [o.label for o in self.outputs], [o.score for o in self.outputs])


class ZeroShotClassifier:
    """Score texts against labels chosen at call time, with an exported NLI model.

    >>> zs = ZeroShotClassifier.load("models/bart-large-mnli")
    >>> zs("I want my money back", candidate_labels=["refund", "legal", "faq"])
    [ClassificationOutput(label='refund', score=0.9...), ...]
    """

    def __init__(self, model: LoadedModel) -> None:
        info = model.info
        if info.entailment_id is None or info.contradiction_id is None:
            raise ModelLoadError(
                f"{info.path} is not an NLI model: its labels {list(info.labels)} have no 'entailment' label, so "
                "zero-shot scores would be meaningless. Use an NLI checkpoint (e.g. bart-large-mnli) or "
                "TextClassifier for this model."
            )
        self.model = model
        self.entailment_id = info.entailment_id
        self.contradiction_id = info.contradiction_id

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        threads: int | None = None,
        batch_tokens: int = batching.DEFAULT_BATCH_TOKENS,
        verify: bool = True,
    ) -> ZeroShotClassifier:
        return cls(LoadedModel.load(path, threads=threads, batch_tokens=batch_tokens, verify=verify))

    def predict(
        self,
        texts: Sequence[str],
        parameters: ZeroShotClassificationParameters,
        *,
        truncation: bool = True,
        truncation_direction: str = "right",
    ) -> list[ZeroShotPrediction]:
        """Ranked labels for validated texts; all pairs of all texts go through one batched run."""
        trunc = Truncation.parse(truncation, truncation_direction, Strategy.ONLY_FIRST)
        labels = parameters.candidate_labels
        hypotheses = [parameters.hypothesis_template.format(label) for label in labels]
        encoded = self.model.tokenizer.encode_product(texts, hypotheses, trunc)
        logits = self.model.logits(encoded)
        n = len(labels)
        predictions = []
        for i, text in enumerate(texts):
            scores = postprocess.zero_shot_scores(
                logits[i * n : (i + 1) * n], self.entailment_id, self.contradiction_id, parameters.multi_label
            )
            outputs = [
                ClassificationOutput(label, score) for label, score in postprocess.ranked_labels(scores, labels, None)
            ]
            predictions.append(ZeroShotPrediction(text, outputs, encoded[i * n].truncated))
        return predictions

    def _call(
        self, inputs: object, params: ZeroShotClassificationParameters | None, truncation: bool, side: str
    ) -> tuple[list[ZeroShotPrediction], bool]:
        if isinstance(inputs, ZeroShotClassificationInput):
            params, inputs = inputs.parameters, inputs.inputs
        if params is None:
            raise InvalidRequestError("zero-shot classification needs candidate_labels")
        texts = parse_texts(inputs)
        predictions = self.predict(texts, params, truncation=truncation, truncation_direction=side)
        cut = sum(p.truncated for p in predictions)
        if cut:
            log.warning(
                "%d of %d texts were truncated to the model's window of %d tokens",
                cut,
                len(texts),
                self.model.info.max_length,
            )
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
        results = [p.outputs for p in predictions]
        return results if is_batch else results[0]

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
        results = [p.to_pipeline() for p in predictions]
        return results if is_batch else results[0]


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
    return ZeroShotClassificationParameters(candidate_labels, template, multi_label)  # type: ignore[arg-type]
