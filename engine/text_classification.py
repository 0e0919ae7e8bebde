"""Text classification: request -> validate -> tokenize -> session -> postprocess -> response."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import postprocess
from .errors import TextTooLongError, first_error
from .model import LoadedModel
from .spec import (
    ClassificationOutput,
    TextClassificationInput,
    TextClassificationParameters,
    TextInput,
    TextPair,
    parse_inputs,
)
from .task import Task, single_or_batch
from .tokenize import Encoded, Side, Strategy, Truncation


@dataclass(frozen=True)
class Prediction:
    """One input's ranked labels, plus what the spec shape cannot say: whether the text was cut to fit."""

    outputs: list[ClassificationOutput]
    truncated: bool
    num_tokens: int


class TextClassifier(Task):
    """Classify texts or text pairs with an exported sequence-classification model.

    >>> clf = TextClassifier.load("models/distilbert-sst-2")
    >>> clf("I like you. I love you")
    [ClassificationOutput(label='POSITIVE', score=0.99...)]
    """

    def __init__(self, model: LoadedModel) -> None:
        super().__init__(model)
        self.labels = model.info.labels
        self.default_activation = postprocess.default_activation(model.info.problem_type, len(self.labels))

    def predict(
        self,
        inputs: Sequence[TextInput],
        parameters: TextClassificationParameters | None = None,
        *,
        truncation: bool = True,
        truncation_direction: str | Side = "right",
    ) -> list[Prediction]:
        """Ranked labels for already-validated inputs, in input order, with truncation flags."""
        return first_error(self._predict(inputs, parameters, truncation, truncation_direction, per_row=False))

    def predict_rows(
        self,
        inputs: Sequence[TextInput],
        parameters: TextClassificationParameters | None = None,
        *,
        truncation: bool = True,
        truncation_direction: str | Side = "right",
    ) -> list[Prediction | TextTooLongError]:
        """Like `predict`, but an input too long for the window (truncation off) comes back as its error."""
        return self._predict(inputs, parameters, truncation, truncation_direction, per_row=True)

    def _predict(
        self,
        inputs: Sequence[TextInput],
        parameters: TextClassificationParameters | None,
        truncation: bool,
        truncation_direction: str | Side,
        per_row: bool,
    ) -> list[Prediction | TextTooLongError]:
        parameters = parameters or TextClassificationParameters()
        trunc = Truncation.parse(truncation, truncation_direction, Strategy.LONGEST_FIRST)
        items = [(x.text, x.text_pair) if isinstance(x, TextPair) else x for x in inputs]
        tokenizer = self.model.tokenizer
        rows: Sequence[Encoded | TextTooLongError] = (
            tokenizer.encode_rows(items, trunc) if per_row else tokenizer.encode(items, trunc)
        )
        encoded = [r for r in rows if isinstance(r, Encoded)]
        logits = self.model.logits(encoded)
        scores = iter(postprocess.activate(logits, parameters.function_to_apply or self.default_activation))
        out: list[Prediction | TextTooLongError] = []
        for row in rows:
            if isinstance(row, TextTooLongError):
                out.append(row)
                continue
            ranked = postprocess.ranked_labels(next(scores), self.labels, parameters.top_k)
            out.append(Prediction([ClassificationOutput(label, s) for label, s in ranked], row.truncated, len(row.ids)))
        return out

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
            params = TextClassificationParameters.parse(function_to_apply, top_k)
        items, is_batch = parse_inputs(inputs)
        predictions = self.predict(items, params, truncation=truncation, truncation_direction=truncation_direction)
        self.warn_truncated([p.truncated for p in predictions])
        outputs: list[list[ClassificationOutput]] = [p.outputs for p in predictions]
        return single_or_batch(outputs, is_batch)
