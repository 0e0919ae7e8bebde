"""Text classification: request -> validate -> tokenize -> session -> postprocess -> response."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import batching, postprocess
from .model import LoadedModel
from .spec import (
    ClassificationOutput,
    TextClassificationInput,
    TextClassificationParameters,
    TextInput,
    TextPair,
    parse_inputs,
)
from .tokenize import Strategy, Truncation

log = logging.getLogger("engine")


@dataclass(frozen=True)
class Prediction:
    """One input's ranked labels, plus what the spec shape cannot say: whether the text was cut to fit."""

    outputs: list[ClassificationOutput]
    truncated: bool
    num_tokens: int


class TextClassifier:
    """Classify texts or text pairs with an exported sequence-classification model.

    >>> clf = TextClassifier.load("models/distilbert-sst-2")
    >>> clf("I like you. I love you")
    [ClassificationOutput(label='POSITIVE', score=0.99...)]
    """

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.labels = model.info.labels
        self.default_activation = postprocess.default_activation(model.info.problem_type, len(self.labels))

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        threads: int | None = None,
        batch_tokens: int = batching.DEFAULT_BATCH_TOKENS,
        verify: bool = True,
    ) -> TextClassifier:
        """Load a directory made by scripts/export_models.py; its sha256 manifest is checked unless verify=False."""
        return cls(LoadedModel.load(path, threads=threads, batch_tokens=batch_tokens, verify=verify))

    def predict(
        self,
        inputs: Sequence[TextInput],
        parameters: TextClassificationParameters | None = None,
        *,
        truncation: bool = True,
        truncation_direction: str = "right",
    ) -> list[Prediction]:
        """Ranked labels for already-validated inputs, in input order, with truncation flags."""
        parameters = parameters or TextClassificationParameters()
        trunc = Truncation.parse(truncation, truncation_direction, Strategy.LONGEST_FIRST)
        encoded = self.model.tokenizer.encode(
            [(x.text, x.text_pair) if isinstance(x, TextPair) else x for x in inputs], trunc
        )
        logits = self.model.logits(encoded)
        scores = postprocess.activate(logits, parameters.function_to_apply or self.default_activation)
        return [
            Prediction(
                [
                    ClassificationOutput(label, score)
                    for label, score in postprocess.ranked_labels(row, self.labels, parameters.top_k)
                ],
                enc.truncated,
                len(enc.ids),
            )
            for row, enc in zip(scores, encoded)
        ]

    def __call__(
        self,
        inputs: object,
        *,
        top_k: int | None = 1,
        function_to_apply: str | None = None,
        truncation: bool = True,
        truncation_direction: str = "right",
    ) -> list[ClassificationOutput] | list[list[ClassificationOutput]]:
        """Spec-shaped result: a list of outputs for one input, a list of such lists for a list of inputs.

        `inputs` may also be a TextClassificationInput, whose parameters are then used.
        """
        if isinstance(inputs, TextClassificationInput):
            params = inputs.parameters
            inputs = inputs.inputs
        else:
            params = TextClassificationParameters(function_to_apply=function_to_apply, top_k=top_k)  # type: ignore[arg-type]
        items, is_batch = parse_inputs(inputs)
        predictions = self.predict(items, params, truncation=truncation, truncation_direction=truncation_direction)
        cut = sum(p.truncated for p in predictions)
        if cut:
            log.warning(
                "%d of %d inputs were truncated to the model's window of %d tokens",
                cut,
                len(items),
                self.model.info.max_length,
            )
        results = [p.outputs for p in predictions]
        return results if is_batch else results[0]
