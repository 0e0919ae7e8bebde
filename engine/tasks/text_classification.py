"""Text classification: request -> validate -> tokenize -> session -> postprocess -> response."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.errors import InvalidRequestError, TextTooLongError, first_error
from engine.runtime import postprocess
from engine.runtime.loaded import LoadedModel
from engine.runtime.tokenization import Encoded, Side, Strategy, Truncation
from engine.tasks.base import Task, single_or_batch
from engine.tasks.inputs import TextInput, TextPair, parse_inputs
from engine.tasks.params import ClassificationOutput, TextClassificationInput, TextClassificationParameters


@dataclass(frozen=True)
class Prediction:
    """One input's ranked labels, plus what the spec shape cannot say: whether the text was cut to fit."""

    outputs: list[ClassificationOutput]
    truncated: bool
    num_tokens: int  # of the (first) window
    num_chunks: int = 1  # windows scored: more than 1 only with long_text="chunk"


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
        tokenizer = self.model.tokenizer
        windows: list[list[Encoded] | TextTooLongError]
        if parameters.long_text.chunk:
            if any(isinstance(x, TextPair) for x in inputs):
                raise InvalidRequestError('long_text="chunk" takes single texts; text pairs are truncated')
            windows = tokenizer.encode_chunks([x for x in inputs if isinstance(x, str)], parameters.long_text)
        else:
            items = [(x.text, x.text_pair) if isinstance(x, TextPair) else x for x in inputs]
            rows = tokenizer.encode_rows(items, trunc) if per_row else tokenizer.encode(items, trunc)
            windows = [r if isinstance(r, TextTooLongError) else [r] for r in rows]
        if not per_row:
            first_error(windows)
        encoded = [w for row in windows if not isinstance(row, TextTooLongError) for w in row]
        activation = parameters.function_to_apply or self.default_activation
        scores = postprocess.activate(self.model.logits(encoded), activation)
        how = parameters.long_text.aggregation or postprocess.default_aggregation(activation)
        kept = [row for row in windows if not isinstance(row, TextTooLongError)]
        if len(kept) < len(encoded):  # some texts have several windows: one aggregated row per text
            bounds = np.cumsum([0] + [len(row) for row in kept])
            scores = np.stack([postprocess.aggregate(scores[a:b], how) for a, b in itertools.pairwise(bounds)])
        ranked = iter(postprocess.ranked_rows(scores, self.labels, parameters.top_k))
        out: list[Prediction | TextTooLongError] = []
        for row in windows:
            if isinstance(row, TextTooLongError):
                out.append(row)
                continue
            outputs = [ClassificationOutput(label, s) for label, s in next(ranked)]
            out.append(Prediction(outputs, row[0].truncated, len(row[0].ids), len(row)))
        return out

    def __call__(
        self,
        inputs: object,
        *,
        top_k: int | None = 1,
        function_to_apply: str | None = None,
        truncation: bool = True,
        truncation_direction: str = "right",
        long_text: str = "truncate",
        chunk_stride: int | None = None,
        chunk_aggregation: str | None = None,
    ) -> list[ClassificationOutput] | list[list[ClassificationOutput]]:
        """Spec-shaped result: a list of outputs for one input, a list of such lists for a list of inputs.

        `long_text="chunk"` scores every window of a long text (`chunk_stride` tokens of overlap, default a
        quarter of the window) and aggregates them (`chunk_aggregation` "mean" or "max"; default mean for
        softmax, max for sigmoid). `inputs` may also be a TextClassificationInput, whose parameters are then used.
        """
        if isinstance(inputs, TextClassificationInput):
            params = inputs.parameters
            inputs = inputs.inputs
        else:
            params = TextClassificationParameters.parse(
                function_to_apply, top_k, long_text, chunk_stride, chunk_aggregation
            )
        items, is_batch = parse_inputs(inputs)
        predictions = self.predict(items, params, truncation=truncation, truncation_direction=truncation_direction)
        self.warn_truncated([p.truncated for p in predictions])
        outputs: list[list[ClassificationOutput]] = [p.outputs for p in predictions]
        return single_or_batch(outputs, is_batch)
