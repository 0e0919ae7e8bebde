"""Offline batch scoring: a file (or any iterable) of records in, one result row per record out, in input order.

Records are read in chunks of `chunk_rows`; each chunk is validated row by row (a bad row becomes an error row,
it never stops the job) and scored in one call, inside which rows are sorted by length into token-budget
batches. `score_file` commits every finished chunk to a state directory next to OUTPUT (see engine.resume), so
a killed job run again resumes, and writes OUTPUT only at the end, through a temporary file, fsync and rename.
Chunks are the same on every run, so a resumed job's output is byte-identical to an uninterrupted one's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from . import batching
from .errors import EngineError, InvalidRequestError, ModelLoadError, TextTooLongError
from .model_files import MANIFEST, sha256_bytes
from .postprocess import Activation, parse_top_k
from .records import RESULT_COLUMNS, Format, Reader, RecordFileError, Row, Writer, to_json_id
from .resume import JobLockedError, JobState, ResumeRefusedError, fsync_dir, input_fingerprint, sync_close
from .spec import (
    DEFAULT_HYPOTHESIS_TEMPLATE,
    ClassificationOutput,
    TextClassificationParameters,
    TextPair,
    ZeroShotClassificationParameters,
    check_text,
)
from .text_classification import TextClassifier
from .tokenize import Strategy, Truncation
from .zero_shot import ZeroShotClassifier

DEFAULT_CHUNK_ROWS = 2048
Classifier = TextClassifier | ZeroShotClassifier
T = TypeVar("T")

# Exit codes of `engine score` (also in the README)
EXIT_OK = 0  # every row scored
EXIT_ROW_ERRORS = 1  # finished, but some rows failed: see OUTPUT.errors.jsonl
EXIT_REFUSED = 2  # nothing done: bad arguments, unreadable model or input, resume refused, job locked
EXIT_TOO_MANY_ERRORS = 3  # stopped by --max-errors; finished chunks are kept, the same command resumes
EXIT_FAILED = 4  # stopped by an error while running (disk, inference); finished chunks are kept
EXIT_INTERRUPTED = 130  # Ctrl-C; finished chunks are kept


class TooManyErrorsError(EngineError):
    """More rows failed than --max-errors allows; the job stopped early and can be resumed."""


@dataclass(frozen=True)
class ScoringOptions:
    """What to read from each record and how to score it. candidate_labels set = zero-shot (with an NLI model).

    top_k None keeps every label (sorted); function_to_apply None = the model's default (text classification).
    """

    text_column: str = "text"
    pair_column: str | None = None
    id_column: str | None = None
    candidate_labels: tuple[str, ...] | None = None
    hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE
    multi_label: bool = False
    top_k: int | None = None
    function_to_apply: Activation | None = None
    truncation: bool = True
    truncation_direction: str = "right"
    chunk_rows: int = DEFAULT_CHUNK_ROWS

    def __post_init__(self) -> None:
        object.__setattr__(self, "top_k", parse_top_k(self.top_k))
        object.__setattr__(self, "function_to_apply", Activation.parse(self.function_to_apply))
        if isinstance(self.chunk_rows, bool) or not isinstance(self.chunk_rows, int) or self.chunk_rows < 1:
            raise InvalidRequestError(f"chunk_rows must be a positive integer, got {self.chunk_rows!r}")
        columns = [c for c in (self.text_column, self.pair_column, self.id_column) if c is not None]
        if len(set(columns)) != len(columns):
            raise InvalidRequestError(f"the text, pair and id columns must differ, got {columns}")
        if self.id_column in RESULT_COLUMNS:
            raise InvalidRequestError(f"the id column cannot be named {self.id_column!r}: the output has that column")
        trunc = Truncation.parse(self.truncation, self.truncation_direction, Strategy.LONGEST_FIRST)
        object.__setattr__(self, "truncation_direction", trunc.side.value)
        if self.candidate_labels is not None:
            zs = ZeroShotClassificationParameters(self.candidate_labels, self.hypothesis_template, self.multi_label)
            object.__setattr__(self, "candidate_labels", zs.candidate_labels)
            if self.pair_column is not None:
                raise InvalidRequestError("zero-shot classification takes single texts: drop the pair column")
            if self.function_to_apply is not None:
                raise InvalidRequestError("function_to_apply is for text classification, not zero-shot")

    @property
    def zero_shot(self) -> bool:
        return self.candidate_labels is not None

    @property
    def columns(self) -> list[str]:
        return [c for c in (self.text_column, self.pair_column, self.id_column) if c is not None]

    @property
    def id_name(self) -> str:
        """The output's id column: the input's own id column, else `row` (the row number from 0)."""
        return self.id_column or "row"

    def truncation_for(self, model: Classifier) -> Truncation:
        strategy = Strategy.ONLY_FIRST if isinstance(model, ZeroShotClassifier) else Strategy.LONGEST_FIRST
        return Truncation.parse(self.truncation, self.truncation_direction, strategy)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["candidate_labels"] = list(self.candidate_labels) if self.candidate_labels else None
        d["function_to_apply"] = self.function_to_apply.value if self.function_to_apply else None
        return d


@dataclass(frozen=True)
class ScoredRow:
    """One record's result: labels best first, or `error` saying why the row could not be scored."""

    row: int
    id: Any
    outputs: list[ClassificationOutput]
    truncated: bool = False
    error: str | None = None

    def to_state(self) -> dict[str, Any]:
        if self.error is not None:
            return {"row": self.row, "id": self.id, "error": self.error}
        return {
            "row": self.row,
            "id": self.id,
            "labels": [o.label for o in self.outputs],
            "scores": [o.score for o in self.outputs],
            "truncated": self.truncated,
        }


@dataclass(frozen=True)
class ScoreSummary:
    rows: int
    errors: int
    seconds: float
    resumed_rows: int
    output: Path
    errors_file: Path | None

    @property
    def rows_per_second(self) -> float:
        return (self.rows - self.resumed_rows) / self.seconds if self.seconds > 0 else 0.0


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


# Scoring chunks -------------------------------------------------------------------------------------------------


def _text(record: Mapping[str, Any], column: str) -> str:
    value = record.get(column)
    if value is None:
        raise InvalidRequestError(f"column {column!r} is missing or null")
    return check_text(value, f"column {column!r}")


def _prepare(row: Row, opts: ScoringOptions) -> tuple[Any, str | TextPair | None, str | None]:
    """(id, input, problem) of one row: the input is None when the row cannot be scored."""
    ident: Any = row.index
    if row.problem is not None:
        return (None if opts.id_column else ident), None, row.problem
    if opts.id_column is not None:
        if row.record.get(opts.id_column) is None:
            return None, None, f"id column {opts.id_column!r} is missing or null"
        ident = to_json_id(row.record[opts.id_column])
    try:
        text = _text(row.record, opts.text_column)
        if opts.pair_column is not None:
            return ident, TextPair(text, _text(row.record, opts.pair_column)), None
        return ident, text, None
    except InvalidRequestError as exc:
        return ident, None, str(exc)


def _predict(
    model: Classifier, opts: ScoringOptions, items: list[Any]
) -> list[tuple[list[ClassificationOutput], bool]]:
    if isinstance(model, ZeroShotClassifier):
        params = ZeroShotClassificationParameters(opts.candidate_labels, opts.hypothesis_template, opts.multi_label)  # type: ignore[arg-type]
        zs = model.predict(items, params, truncation=opts.truncation, truncation_direction=opts.truncation_direction)
        return [(p.outputs[: opts.top_k], p.truncated) for p in zs]
    tc_params = TextClassificationParameters(function_to_apply=opts.function_to_apply, top_k=opts.top_k)
    tc = model.predict(items, tc_params, truncation=opts.truncation, truncation_direction=opts.truncation_direction)
    return [(p.outputs, p.truncated) for p in tc]


def _too_long(model: Classifier, opts: ScoringOptions, item: Any) -> str | None:
    """Why one input cannot be tokenized (too long with truncation off), found by tokenizing it alone."""
    trunc = opts.truncation_for(model)
    tokenizer = model.model.tokenizer
    try:
        if isinstance(model, ZeroShotClassifier):
            hypotheses = [opts.hypothesis_template.format(label) for label in opts.candidate_labels or ()]
            tokenizer.encode_product([item], hypotheses, trunc)
        else:
            tokenizer.encode([(item.text, item.text_pair) if isinstance(item, TextPair) else item], trunc)
    except InvalidRequestError as exc:
        return str(exc).replace("input 0 has", "the text has")
    return None


def score_chunk(model: Classifier, opts: ScoringOptions, rows: Sequence[Row]) -> list[ScoredRow]:
    """Score one chunk in one call (length-sorted batches inside); bad rows come back with `error` set."""
    prepared = [_prepare(row, opts) for row in rows]
    problems: dict[int, str] = {i: p for i, (_, _, p) in enumerate(prepared) if p is not None}
    good = [i for i in range(len(rows)) if i not in problems]
    try:
        results = _predict(model, opts, [prepared[i][1] for i in good]) if good else []
    except TextTooLongError:  # truncation is off and some text does not fit: find which, score the others
        for i in good:
            reason = _too_long(model, opts, prepared[i][1])
            if reason is not None:
                problems[i] = reason
        good = [i for i in good if i not in problems]
        results = _predict(model, opts, [prepared[i][1] for i in good]) if good else []
    by_index = dict(zip(good, results))
    out = []
    for i, (row, (ident, _, _)) in enumerate(zip(rows, prepared)):
        if i in problems:
            out.append(ScoredRow(row.index, ident, [], False, problems[i]))
        else:
            outputs, truncated = by_index[i]
            out.append(ScoredRow(row.index, ident, outputs, truncated))
    return out


def _check_model(model: Classifier, opts: ScoringOptions) -> None:
    if opts.zero_shot and not isinstance(model, ZeroShotClassifier):
        raise InvalidRequestError("candidate labels need a ZeroShotClassifier (an NLI model)")
    if not opts.zero_shot and isinstance(model, ZeroShotClassifier):
        raise InvalidRequestError("a ZeroShotClassifier needs candidate labels")


def score_records(
    records: Iterable[Mapping[str, Any]], model: Classifier, options: ScoringOptions | None = None, **fields: Any
) -> Iterator[ScoredRow]:
    """Score any iterable of dict records, lazily, chunk by chunk, in input order (rows numbered from 0).

    >>> for r in score_records(({"text": t} for t in texts), TextClassifier.load("models/x"), chunk_rows=512):
    ...     print(r.row, r.error or r.outputs[0].label)

    Options are a ScoringOptions or its fields as keywords. Bad records come back with `error` set.
    """
    opts = options or ScoringOptions(**fields)
    _check_model(model, opts)
    rows = (
        Row(i, r) if isinstance(r, Mapping) else Row(i, {}, f"record is a {type(r).__name__}, not a mapping")
        for i, r in enumerate(records)
    )
    for chunk in chunked(rows, opts.chunk_rows):
        yield from score_chunk(model, opts, chunk)


# Files ----------------------------------------------------------------------------------------------------------


class Progress:
    """Rows done, rows/s and ETA on stderr while it is a terminal: tqdm when installed, a plain line otherwise."""

    def __init__(self, enabled: bool, reader: Reader) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.reader = reader
        self.bar: Any = None
        self.done = 0
        self.start = self.last = time.monotonic()
        if not self.enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=reader.total_rows, unit="rows", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)

    def update(self, rows: int) -> None:
        self.done += rows
        if not self.enabled:
            return
        total = self.reader.total_rows
        position = self.reader.position()
        if total is None and position > 0:  # text formats: estimate the row count from the bytes read so far
            total = max(self.done, round(self.done * self.reader.size / position))
        if self.bar is not None:
            self.bar.total = total
            self.bar.update(rows)
            return
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = f", about {(total - self.done) / rate:.0f} s left" if total and rate else ""
            print(f"\r{self.done} rows, {rate:.0f} rows/s{eta}   ", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.total = self.done  # the estimate was only an estimate
            self.bar.refresh()
            self.bar.close()
        elif self.enabled:
            print(file=sys.stderr)


def errors_path(output: Path) -> Path:
    return output.with_name(output.name + ".errors.jsonl")


def state_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def _load(model: Classifier | str | Path, opts: ScoringOptions, threads: int | None, batch_tokens: int) -> Classifier:
    if isinstance(model, (TextClassifier, ZeroShotClassifier)):
        return model
    cls = ZeroShotClassifier if opts.zero_shot else TextClassifier
    return cls.load(model, threads=threads, batch_tokens=batch_tokens)


def _error_record(record: Mapping[str, Any], opts: ScoringOptions) -> dict[str, Any]:
    out: dict[str, Any] = {"row": record["row"]}
    if opts.id_column is not None:
        out[opts.id_column] = record["id"]
    out["error"] = record["error"]
    return out


def _write_errors(state: JobState, chunks: int, opts: ScoringOptions, target: Path) -> int:
    """Gather the error rows of the finished chunks into `target` (atomically); no errors: no file."""
    f = state.temp_file("errors")
    count = 0
    with f:
        for k in range(chunks):
            lines = [_error_record(r, opts) for r in state.read(k) if "error" in r]
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines).encode("utf-8"))
            count += len(lines)
        sync_close(f)
    tmp = Path(f.name)
    if count:
        tmp.replace(target)
    else:
        tmp.unlink()
        target.unlink(missing_ok=True)  # a stale file from an earlier job would describe other rows
    fsync_dir(target.parent)
    return count


def _finish(state: JobState, chunks: int, opts: ScoringOptions, output: Path, reader: Reader) -> int:
    """Assemble OUTPUT from the finished chunks: temp file in the state directory, fsync, rename. Returns errors."""
    errors = _write_errors(state, chunks, opts, errors_path(output))
    f = state.temp_file("output")
    with f:
        id_type = reader.arrow_type(opts.id_column) if opts.id_column else None
        writer = Writer(f, Format.of(output), opts.id_name, row_numbers=opts.id_column is None, id_arrow_type=id_type)
        for k in range(chunks):
            writer.write([r for r in state.read(k) if "error" not in r])
        writer.close()
        sync_close(f)
    Path(f.name).replace(output)
    fsync_dir(output.parent)
    state.remove()
    return errors


def _identity(reader: Reader, model: Classifier, opts: ScoringOptions, output: Path) -> dict[str, Any]:
    manifest = (Path(model.model.info.path) / MANIFEST).read_bytes()
    parameters = {**opts.to_dict(), "batch_tokens": model.model.batch_tokens, "output_format": Format.of(output).value}
    return {"input": input_fingerprint(reader.path), "model": sha256_bytes(manifest), "parameters": parameters}


def score_file(
    model: Classifier | str | Path,
    input: str | Path,
    output: str | Path,
    options: ScoringOptions | None = None,
    *,
    max_errors: int | None = None,
    restart: bool = False,
    threads: int | None = None,
    batch_tokens: int = batching.DEFAULT_BATCH_TOKENS,
    progress: bool = False,
    **fields: Any,
) -> ScoreSummary:
    """Score a .jsonl, .csv or .parquet file into another; resumable, never half-written (see the module doc).

    `model` is a model directory or a loaded classifier; options are a ScoringOptions or its fields as keywords.
    Rows that cannot be scored go to OUTPUT.errors.jsonl; more than `max_errors` of them raise
    TooManyErrorsError (finished chunks are kept: calling again resumes). Memory stays within a few chunks.
    """
    opts = options or ScoringOptions(**fields)
    input_path, output_path = Path(input), Path(output)
    if max_errors is not None and (isinstance(max_errors, bool) or not isinstance(max_errors, int) or max_errors < 0):
        raise InvalidRequestError(f"max_errors must be a non-negative integer, got {max_errors!r}")
    if not input_path.is_file():
        raise RecordFileError(f"{input_path} is not a file")
    Format.of(output_path)
    if output_path.resolve() == input_path.resolve():
        raise RecordFileError("OUTPUT is the INPUT file; write the results to another file")
    reader = Reader(input_path, opts.columns)
    classifier = _load(model, opts, threads, batch_tokens)
    _check_model(classifier, opts)
    state = JobState.open(state_path(output_path), _identity(reader, classifier, opts, output_path), restart=restart)
    start = time.monotonic()
    try:
        done = state.committed()
        resumed_rows = errors = 0
        for k in range(done):
            for r in state.read(k):
                resumed_rows += 1
                errors += "error" in r
        bar = Progress(progress, reader)
        bar.update(resumed_rows)
        rows = resumed_rows
        try:
            for k, chunk in enumerate(chunked(reader, opts.chunk_rows)):
                if k < done:
                    continue
                scored = score_chunk(classifier, opts, chunk)
                state.commit(k, [r.to_state() for r in scored])
                rows += len(scored)
                errors += sum(r.error is not None for r in scored)
                bar.update(len(scored))
                if max_errors is not None and errors > max_errors:
                    _write_errors(state, k + 1, opts, errors_path(output_path))
                    raise TooManyErrorsError(
                        f"stopped after {rows} rows: {errors} rows failed, more than --max-errors {max_errors}. "
                        f"See {errors_path(output_path)}; fix the input (then use --restart), or run the same "
                        "command with a higher --max-errors to go on where it stopped."
                    )
        finally:
            bar.close()
        chunks = state.committed()
        errors = _finish(state, chunks, opts, output_path, reader)
    finally:
        state.close()
    return ScoreSummary(
        rows=rows,
        errors=errors,
        seconds=time.monotonic() - start,
        resumed_rows=resumed_rows,
        output=output_path,
        errors_file=errors_path(output_path) if errors else None,
    )


# Command line ---------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="engine score",
        description="Score a .jsonl, .csv or .parquet file with a model; resumable: a killed job run again with the "
        "same arguments goes on where it stopped.",
        epilog="exit codes: 0 all rows scored; 1 done, some rows failed (OUTPUT.errors.jsonl); 2 nothing done "
        "(bad arguments, model or input; resume refused); 3 stopped by --max-errors; 4 failed while running; "
        "130 interrupted. Codes 3, 4 and 130 keep the finished work: run the same command again to resume.",
    )
    p.add_argument("model_dir")
    p.add_argument("input", help="records to score: .jsonl/.ndjson, .csv (with a header) or .parquet")
    p.add_argument("output", help="where results go, same formats; written only when the job is complete")
    p.add_argument("--text-column", default="text")
    p.add_argument("--pair-column", help="second text of a pair (cross-encoders, rerankers)")
    p.add_argument("--id-column", help="copied to the output (default: a `row` column, the row number from 0)")
    p.add_argument("--candidate-labels", help="comma-separated labels: zero-shot with an NLI model")
    p.add_argument("--multi-label", action="store_true", help="zero-shot: score each label on its own")
    p.add_argument("--hypothesis-template", default=DEFAULT_HYPOTHESIS_TEMPLATE)
    p.add_argument("--top-k", type=int, default=None, help="keep the best k labels (default: all, sorted)")
    p.add_argument("--function-to-apply", choices=[a.value for a in Activation])
    p.add_argument("--no-truncation", action="store_true", help="rows too long for the model fail instead")
    p.add_argument("--truncation-direction", choices=["right", "left"], default="right")
    p.add_argument("--batch-tokens", type=int, default=batching.DEFAULT_BATCH_TOKENS)
    p.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="rows per sorting window and commit")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-errors", type=int, default=None, help="stop once more than N rows have failed")
    p.add_argument("--restart", action="store_true", help="throw away an unfinished job's state and start over")
    p.add_argument("--quiet", action="store_true", help="no progress and no summary")
    from .ray import add_arguments as add_ray_arguments  # --ray [ADDRESS], --actors (engine/ray.py)

    add_ray_arguments(p)
    return p


def cli(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)

    def say(message: str) -> None:
        print(message, file=sys.stderr)

    try:
        opts = ScoringOptions(
            text_column=args.text_column,
            pair_column=args.pair_column,
            id_column=args.id_column,
            candidate_labels=args.candidate_labels,
            hypothesis_template=args.hypothesis_template,
            multi_label=args.multi_label,
            top_k=args.top_k,
            function_to_apply=args.function_to_apply,
            truncation=not args.no_truncation,
            truncation_direction=args.truncation_direction,
            chunk_rows=args.chunk_rows,
        )
        if args.ray is not None:  # scale out: the same job on a Ray cluster (engine/ray.py)
            from .ray import run_from_args

            summary: Any = run_from_args(args, opts)
        else:
            summary = score_file(
                args.model_dir,
                args.input,
                args.output,
                opts,
                max_errors=args.max_errors,
                restart=args.restart,
                threads=args.threads,
                batch_tokens=args.batch_tokens,
                progress=not args.quiet,
            )
    except TooManyErrorsError as exc:
        say(f"error: {exc}")
        return EXIT_TOO_MANY_ERRORS
    except KeyboardInterrupt:
        say("interrupted: finished chunks are kept; run the same command again to resume")
        return EXIT_INTERRUPTED
    except (InvalidRequestError, RecordFileError, ResumeRefusedError, JobLockedError) as exc:
        say(f"error: {exc}")
        return EXIT_REFUSED
    except ModelLoadError as exc:
        say(f"error: {exc}")
        return EXIT_REFUSED
    except EngineError as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    except OSError as exc:
        say(f"error: {exc}")
        return EXIT_FAILED
    if not args.quiet:
        resumed = f", {summary.resumed_rows} of them done before (resumed)" if summary.resumed_rows else ""
        failed = f", {summary.errors} failed (see {summary.errors_file})" if summary.errors else ""
        say(
            f"{summary.rows} rows{resumed}{failed} in {summary.seconds:.1f} s "
            f"({summary.rows_per_second:.0f} rows/s) -> {summary.output}"
        )
    return EXIT_ROW_ERRORS if summary.errors else EXIT_OK
