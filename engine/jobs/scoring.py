"""Record scoring: any iterable of dict records in, one result row per record out, in input order.

Records are taken in chunks of `chunk_rows`; each chunk is validated row by row (a bad row becomes an error row,
it never stops the job) and scored in one call, inside which rows are sorted by length into token-budget
batches. Files, resumability and the errors file are engine.jobs.file_job's; the command line is engine.cli's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar, cast

from engine.errors import InvalidRequestError, TextTooLongError
from engine.jobs.formats import RESULT_COLUMNS, JsonId, Row, StateRow, to_json_id
from engine.runtime.tokenization import Side, Strategy, Truncation
from engine.tasks.inputs import LabeledText, TextPair, check_text
from engine.tasks.params import (
    DEFAULT_HYPOTHESIS_TEMPLATE,
    ClassificationOutput,
    TextClassificationParameters,
    ZeroShotClassificationParameters,
)
from engine.tasks.text_classification import TextClassifier
from engine.tasks.zero_shot import ZeroShotClassifier

DEFAULT_CHUNK_ROWS = 2048
Classifier = TextClassifier | ZeroShotClassifier
T = TypeVar("T")


@dataclass(frozen=True)
class ScoringOptions:
    """What to read from each record and how to score it, validated once by `ScoringOptions.parse`.

    zero_shot_parameters set = zero-shot (with an NLI model). text_parameters.top_k None keeps every label
    (sorted), and also cuts zero-shot results; function_to_apply None = the model's default.
    """

    text_column: str = "text"
    pair_column: str | None = None
    id_column: str | None = None
    labels_column: str | None = None  # zero-shot labels per row: a list, or a comma-separated string
    text_parameters: TextClassificationParameters = TextClassificationParameters(top_k=None)  # noqa: RUF009  (frozen)
    zero_shot_parameters: ZeroShotClassificationParameters | None = None
    truncation: bool = True
    truncation_side: Side = Side.RIGHT
    chunk_rows: int = DEFAULT_CHUNK_ROWS

    @classmethod
    def parse(
        cls,
        text_column: str = "text",
        pair_column: str | None = None,
        id_column: str | None = None,
        candidate_labels: object = None,
        hypothesis_template: object = DEFAULT_HYPOTHESIS_TEMPLATE,
        multi_label: object = False,
        top_k: object = None,
        function_to_apply: object = None,
        truncation: object = True,
        truncation_direction: object = "right",
        chunk_rows: object = DEFAULT_CHUNK_ROWS,
        labels_column: str | None = None,
        long_text: object = "truncate",
        chunk_stride: object = None,
        chunk_aggregation: object = None,
    ) -> ScoringOptions:
        """From caller-supplied values (keywords of score_records/score_file, command-line arguments)."""
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise InvalidRequestError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
        columns = [c for c in (text_column, pair_column, id_column, labels_column) if c is not None]
        if not all(isinstance(c, str) and c for c in columns):
            raise InvalidRequestError(f"column names must be non-empty strings, got {columns}")
        if len(set(columns)) != len(columns):
            raise InvalidRequestError(f"the text, pair, id and labels columns must differ, got {columns}")
        if id_column in RESULT_COLUMNS:
            raise InvalidRequestError(f"the id column cannot be named {id_column!r}: the output has that column")
        long = (long_text, chunk_stride, chunk_aggregation)
        text_parameters = TextClassificationParameters.parse(function_to_apply, top_k, *long)
        trunc = Truncation.parse(truncation, truncation_direction, Strategy.LONGEST_FIRST)
        zero_shot = None
        if candidate_labels is not None and labels_column is not None:
            raise InvalidRequestError("give candidate labels or a labels column, not both")
        if candidate_labels is not None or labels_column is not None:
            zero_shot = ZeroShotClassificationParameters.parse(
                candidate_labels, hypothesis_template, multi_label, *long
            )
            if pair_column is not None:
                raise InvalidRequestError("zero-shot classification takes single texts: drop the pair column")
            if text_parameters.function_to_apply is not None:
                raise InvalidRequestError("function_to_apply is for text classification, not zero-shot")
        return cls(
            text_column,
            pair_column,
            id_column,
            labels_column,
            text_parameters,
            zero_shot,
            trunc.enabled,
            trunc.side,
            chunk_rows,
        )

    @property
    def zero_shot(self) -> bool:
        return self.zero_shot_parameters is not None

    @property
    def top_k(self) -> int | None:
        return self.text_parameters.top_k

    @property
    def columns(self) -> list[str]:
        return [c for c in (self.text_column, self.pair_column, self.id_column, self.labels_column) if c is not None]

    @property
    def id_name(self) -> str:
        """The output's id column: the input's own id column, else `row` (the row number from 0)."""
        return self.id_column or "row"

    def to_dict(self) -> dict[str, object]:
        """Every result-changing option, as the resume state records it."""
        zs = self.zero_shot_parameters
        activation = self.text_parameters.function_to_apply
        added = {"labels_column": self.labels_column} if self.labels_column else {}  # new keys only when used, so
        added |= self.text_parameters.long_text.to_dict()  # jobs started before they existed still resume
        return added | {
            "text_column": self.text_column,
            "pair_column": self.pair_column,
            "id_column": self.id_column,
            "candidate_labels": list(zs.candidate_labels) if zs else None,
            "hypothesis_template": zs.hypothesis_template if zs else DEFAULT_HYPOTHESIS_TEMPLATE,
            "multi_label": zs.multi_label if zs else False,
            "top_k": self.top_k,
            "function_to_apply": activation.value if activation else None,
            "truncation": self.truncation,
            "truncation_direction": self.truncation_side.value,
            "chunk_rows": self.chunk_rows,
        }


@dataclass(frozen=True)
class ScoredRow:
    """One record's result: labels best first, or `error` saying why the row could not be scored."""

    row: int
    id: JsonId
    outputs: list[ClassificationOutput]
    truncated: bool = False
    error: str | None = None

    def to_state(self) -> StateRow:
        if self.error is not None:
            return {"row": self.row, "id": self.id, "error": self.error}
        return {
            "row": self.row,
            "id": self.id,
            "labels": [o.label for o in self.outputs],
            "scores": [o.score for o in self.outputs],
            "truncated": self.truncated,
        }


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _column_text(value: object, column: str) -> str:
    if value is None:
        raise InvalidRequestError(f"column {column!r} is missing or null")
    return check_text(value, f"column {column!r}")


Item = str | TextPair | LabeledText
# (id, input, problem) of one row: the input is None when the row cannot be scored, and `problem` says why
Prepared = tuple[JsonId, Item | None, str | None]


def _prepare(row: Row, opts: ScoringOptions) -> Prepared:
    """One decoded record's fields, prepared as `_prepare_fields` does."""
    if row.problem is not None:
        return (None if opts.id_column else row.index), None, row.problem
    get = row.record.get
    pair, ident, labels = (
        get(c) if c is not None else None for c in (opts.pair_column, opts.id_column, opts.labels_column)
    )
    return _prepare_fields(row.index, opts, get(opts.text_column), pair, ident, labels)


def _prepare_fields(
    index: int, opts: ScoringOptions, text: object, pair: object, ident: object, labels: object
) -> Prepared:
    """A row from its column values (None: missing or null): the row number is the id when there is no id column."""
    key: JsonId = index
    if opts.id_column is not None:
        if ident is None:
            return None, None, f"id column {opts.id_column!r} is missing or null"
        key = to_json_id(ident)
    try:
        first = _column_text(text, opts.text_column)
        if opts.pair_column is not None:
            return key, TextPair(first, _column_text(pair, opts.pair_column)), None
        if opts.labels_column is not None:
            if labels is None:
                raise InvalidRequestError(f"column {opts.labels_column!r} is missing or null")
            return key, LabeledText.parse(first, _listed(labels)), None
        return key, first, None
    except InvalidRequestError as exc:
        return key, None, str(exc)


def _listed(value: object) -> object:
    """A list column arrives as a list (JSON) or an array (Parquet); a comma string stays a string."""
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, str) else value


RowResult = tuple[list[ClassificationOutput], bool] | TextTooLongError
# what became of one row: (labels best first, truncated), or why it could not be scored
Outcome = tuple[list[ClassificationOutput], bool] | str


def _predict(model: Classifier, opts: ScoringOptions, items: list[Item]) -> list[RowResult]:
    """(outputs, truncated) per item, or the item's error when it does not fit with truncation off."""
    on, side = opts.truncation, opts.truncation_side
    if isinstance(model, ZeroShotClassifier):
        if opts.zero_shot_parameters is None:
            raise InvalidRequestError("a ZeroShotClassifier needs candidate labels")
        # ScoringOptions.parse refuses a pair column with zero-shot, and a labels column makes it zero-shot
        zs = model.predict_rows(
            cast("list[str | LabeledText]", items), opts.zero_shot_parameters, truncation=on, truncation_direction=side
        )
        return [p if isinstance(p, TextTooLongError) else (p.outputs[: opts.top_k], p.truncated) for p in zs]
    tc = model.predict_rows(
        cast("list[str | TextPair]", items), opts.text_parameters, truncation=on, truncation_direction=side
    )
    return [p if isinstance(p, TextTooLongError) else (p.outputs, p.truncated) for p in tc]


def _outcomes(model: Classifier, opts: ScoringOptions, prepared: Sequence[Prepared]) -> list[Outcome]:
    """Score the prepared rows of one chunk in one call (length-sorted batches inside), in order."""
    good = [i for i, (_, item, _) in enumerate(prepared) if item is not None]
    items = [item for _, item, _ in prepared if item is not None]
    results = dict(zip(good, _predict(model, opts, items) if good else []))
    out: list[Outcome] = []
    for i, (_, _, problem) in enumerate(prepared):
        result = results.get(i)
        if result is None:
            out.append(problem or "")  # not scored: `problem` is set (see Prepared)
        elif isinstance(result, TextTooLongError):
            out.append(str(result))
        else:
            out.append(result)
    return out


def score_chunk(model: Classifier, opts: ScoringOptions, rows: Sequence[Row]) -> list[ScoredRow]:
    """Score one chunk in one call (length-sorted batches inside); bad rows come back with `error` set."""
    prepared = [_prepare(row, opts) for row in rows]
    out = []
    for row, (ident, _, _), outcome in zip(rows, prepared, _outcomes(model, opts, prepared)):
        if isinstance(outcome, str):
            out.append(ScoredRow(row.index, ident, [], False, outcome))
        else:
            out.append(ScoredRow(row.index, ident, outcome[0], outcome[1]))
    return out


@dataclass(frozen=True)
class ScoredColumns:
    """Results of rows given as columns, as columns: `labels`, `scores` and `truncated` are None where `errors`
    says why the row could not be scored."""

    labels: list[list[str] | None]
    scores: list[list[float] | None]
    truncated: list[bool | None]
    errors: list[str | None]

    def add(self, outcome: Outcome) -> None:
        if isinstance(outcome, str):
            self.labels.append(None)
            self.scores.append(None)
            self.truncated.append(None)
            self.errors.append(outcome)
        else:
            outputs, truncated = outcome
            self.labels.append([o.label for o in outputs])
            self.scores.append([o.score for o in outputs])
            self.truncated.append(truncated)
            self.errors.append(None)

    def extend(self, other: ScoredColumns) -> None:
        self.labels.extend(other.labels)
        self.scores.extend(other.scores)
        self.truncated.extend(other.truncated)
        self.errors.extend(other.errors)


def score_columns(
    model: Classifier, opts: ScoringOptions, columns: Mapping[str, Sequence[object]], rows: int
) -> ScoredColumns:
    """Score `rows` rows given column by column (`columns`: name -> one value per row; a column it lacks reads as
    null in every row), `chunk_rows` at a time and in order, exactly as `score_records` scores the same records.
    Columnar callers (an Arrow block on Ray, engine.jobs.ray.scorer) so build no record per row."""
    check_model(model, opts)
    nulls: Sequence[object] = [None] * rows
    text, pair, ident, labels = (
        columns.get(c, nulls) if c is not None else nulls
        for c in (opts.text_column, opts.pair_column, opts.id_column, opts.labels_column)
    )
    out = ScoredColumns([], [], [], [])
    for start in range(0, rows, opts.chunk_rows):
        span = range(start, min(start + opts.chunk_rows, rows))
        prepared = [_prepare_fields(i, opts, text[i], pair[i], ident[i], labels[i]) for i in span]
        for outcome in _outcomes(model, opts, prepared):
            out.add(outcome)
    return out


def check_model(model: Classifier, opts: ScoringOptions) -> None:
    if opts.zero_shot and not isinstance(model, ZeroShotClassifier):
        raise InvalidRequestError("candidate labels need a ZeroShotClassifier (an NLI model)")
    if not opts.zero_shot and isinstance(model, ZeroShotClassifier):
        raise InvalidRequestError("a ZeroShotClassifier needs candidate labels")


def score_records(
    records: Iterable[Mapping[str, object]], model: Classifier, options: ScoringOptions | None = None, **fields: Any
) -> Iterator[ScoredRow]:
    """Score any iterable of dict records, lazily, chunk by chunk, in input order (rows numbered from 0).

    >>> for r in score_records(({"text": t} for t in texts), TextClassifier.load("models/x"), chunk_rows=512):
    ...     print(r.row, r.error or r.outputs[0].label)

    Options are a ScoringOptions or its `parse` keywords. Bad records come back with `error` set.
    """
    opts = options or ScoringOptions.parse(**fields)
    check_model(model, opts)
    rows = (
        Row(i, r) if isinstance(r, Mapping) else Row(i, {}, f"record is a {type(r).__name__}, not a mapping")
        for i, r in enumerate(records)
    )
    for chunk in chunked(rows, opts.chunk_rows):
        yield from score_chunk(model, opts, chunk)
