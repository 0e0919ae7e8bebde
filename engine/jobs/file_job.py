"""A batch-scoring job over a file: .jsonl, .csv or .parquet in, the same formats out, resumable.

`score_file` scores the records chunk by chunk (engine.jobs.scoring) and commits every finished chunk to a state
directory next to OUTPUT (engine.jobs.resume), so a killed job run again resumes. OUTPUT and OUTPUT.errors.jsonl are
written only at the end, atomically (engine.model.fileio). Chunks are the same on every run, so a resumed job's output
is byte-identical to an uninterrupted one's.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InvalidRequestError, JobInterrupted, RecordFileError, Terminated, TooManyErrorsError
from engine.jobs.formats import Format, JsonId, Reader, StateRow, Writer
from engine.jobs.resume import JobState, input_fingerprint
from engine.jobs.scoring import Classifier, ScoringOptions, check_model, chunked, score_chunk
from engine.model.fileio import atomic_file, fsync_dir
from engine.runtime import batching
from engine.tasks import registry
from engine.tasks.registry import TaskName
from engine.tasks.text_classification import TextClassifier
from engine.tasks.zero_shot import ZeroShotClassifier


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


def errors_path(output: Path) -> Path:
    return output.with_name(output.name + ".errors.jsonl")


def state_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


class _Progress:
    """A tqdm bar on stderr while it is a terminal (the `progress` extra); nothing otherwise. For text formats
    the row count is estimated from the bytes read so far."""

    def __init__(self, enabled: bool, reader: Reader, done: int) -> None:
        self.reader = reader
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                return
            # Parquet's metadata gives the exact row count; text formats' total is estimated from the bytes read
            desc = f"resumed at row {done}" if done else None
            self.bar = tqdm(
                total=reader.total_rows, initial=done, unit="rows", file=sys.stderr, dynamic_ncols=True, desc=desc
            )
            if reader.total_rows is None:
                self.bar.set_postfix_str("total estimated")

    def update(self, rows: int) -> None:
        if self.bar is None:
            return
        position = self.reader.position()
        if self.reader.total_rows is None and position > 0:
            done = self.bar.n + rows
            self.bar.total = max(done, round(done * self.reader.size / position))
        self.bar.update(rows)

    def close(self, finished: bool) -> None:
        if self.bar is None:
            return
        if finished:
            self.bar.total = self.bar.n  # the estimate was only an estimate
            self.bar.refresh()
        else:  # an interruption stays one: the bar is not drawn as complete
            self.bar.set_description("interrupted")
        self.bar.close()


def _load(
    model: Classifier | str | Path, opts: ScoringOptions, threads: int | None, batch_tokens: int, concurrent: int
) -> Classifier:
    if isinstance(model, (TextClassifier, ZeroShotClassifier)):
        return model
    cls = registry.facade(TaskName.ZERO_SHOT if opts.zero_shot else TaskName.TEXT_CLASSIFICATION)
    return cls.load(model, threads=threads, batch_tokens=batch_tokens, concurrent_batches=concurrent)  # type: ignore[return-value]


def _error_record(record: StateRow, opts: ScoringOptions) -> dict[str, JsonId]:
    out: dict[str, JsonId] = {"row": record["row"]}
    if opts.id_column is not None:
        out[opts.id_column] = record["id"]
    out["error"] = record["error"]
    return out


def _write_errors(state: JobState, chunks: int, opts: ScoringOptions, target: Path) -> int:
    """Gather the error rows of the finished chunks into `target` (atomically); no errors: no file."""
    count = 0
    with atomic_file(target, state.dir) as f:
        for k in range(chunks):
            lines = [_error_record(r, opts) for r in state.read(k) if "error" in r]
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines).encode("utf-8"))
            count += len(lines)
    if not count:
        target.unlink()  # no stale file from an earlier job describing other rows either
        fsync_dir(target.parent)
    return count


def _finish(state: JobState, chunks: int, opts: ScoringOptions, output: Path, reader: Reader) -> int:
    """Assemble OUTPUT and its errors file from the finished chunks in one read of each, atomically, then drop
    the state. Returns the error count."""
    errors = 0
    target = errors_path(output)
    with atomic_file(target, state.dir) as ef, atomic_file(output, state.dir) as f:
        id_type = reader.arrow_type(opts.id_column) if opts.id_column else None
        writer = Writer(f, Format.of(output), opts.id_name, row_numbers=opts.id_column is None, id_arrow_type=id_type)
        for k in range(chunks):
            rows = list(state.read(k))
            failed = [_error_record(r, opts) for r in rows if "error" in r]
            ef.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in failed).encode("utf-8"))
            errors += len(failed)
            writer.write([r for r in rows if "error" not in r])
        writer.close()
    if not errors:
        target.unlink()  # no stale file from an earlier job describing other rows either
        fsync_dir(target.parent)
    state.remove()
    return errors


def _job_identity(reader: Reader, model: Classifier, opts: ScoringOptions, output: Path) -> dict[str, object]:
    parameters = {**opts.to_dict(), "batch_tokens": model.model.batch_tokens, "output_format": Format.of(output).value}
    # text formats are hashed while they are read (JobState.check_input); pyarrow reads Parquet itself
    fingerprint = input_fingerprint(reader.path, whole=reader.format is Format.PARQUET)
    return {"input": fingerprint, "model": model.model.manifest_sha256, "parameters": parameters}


def _check_output(output: Path, input_path: Path) -> None:
    """Refuse an OUTPUT that cannot be written before any work, not after the whole job."""
    Format.of(output)
    if output.is_dir():
        raise RecordFileError(f"OUTPUT {output} is a directory; give a file name such as {output / 'scores.jsonl'}")
    if not output.parent.is_dir():
        raise RecordFileError(f"the folder of OUTPUT {output} does not exist; create {output.parent} first")
    if output.resolve() == input_path.resolve():
        raise RecordFileError("OUTPUT is the INPUT file; write the results to another file")


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
    concurrent_batches: int = 1,
    progress: bool = False,
    **fields: Any,
) -> ScoreSummary:
    """Score a .jsonl, .csv or .parquet file into another; resumable, never half-written (see the module doc).

    `model` is a model directory or a loaded classifier; options are a ScoringOptions or its `parse` keywords.
    Rows that cannot be scored go to OUTPUT.errors.jsonl; more than `max_errors` of them raise
    TooManyErrorsError (finished chunks are kept: calling again resumes). Memory stays within a few chunks.
    `concurrent_batches` > 1 runs that many batches at once (more rows/s on many cores; see engine.runtime.loaded).
    """
    opts = options or ScoringOptions.parse(**fields)
    input_path, output_path = Path(input), Path(output)
    if max_errors is not None and (isinstance(max_errors, bool) or not isinstance(max_errors, int) or max_errors < 0):
        raise InvalidRequestError(f"max_errors must be a non-negative integer, got {max_errors!r}")
    if not input_path.is_file():
        raise RecordFileError(f"{input_path} is not a file")
    _check_output(output_path, input_path)
    reader = Reader(input_path, opts.columns)
    classifier = _load(model, opts, threads, batch_tokens, concurrent_batches)
    check_model(classifier, opts)
    identity = _job_identity(reader, classifier, opts, output_path)
    state = JobState.open(state_path(output_path), identity, restart=restart)
    start = time.monotonic()
    try:
        done = state.committed()
        headers = [state.header(k) for k in range(done)]  # counts without decoding the finished rows
        resumed_rows = sum(h["rows"] for h in headers)
        errors = sum(h["errors"] for h in headers)
        if resumed_rows and progress:
            print(f"resuming after {resumed_rows} finished rows ({done} chunks)", file=sys.stderr)
        bar = _Progress(progress, reader, resumed_rows)
        rows = resumed_rows
        finished = False

        def check(k: int) -> None:  # the rows scored before are still these rows
            state.check_input(k, reader.digest())

        # the finished chunks' rows are read (and hashed) again, never decoded: scoring resumes after them
        rows_after = reader.rows([h["rows"] for h in headers], check)
        try:
            for k, chunk in enumerate(chunked(rows_after, opts.chunk_rows), start=done):
                scored = score_chunk(classifier, opts, chunk)
                state.commit(k, [r.to_state() for r in scored], reader.digest())
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
            finished = True
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (errors.Terminated): the committed rows are kept
            raise JobInterrupted(rows, isinstance(exc, Terminated)) from exc
        finally:
            bar.close(finished)
        errors = _finish(state, state.committed(), opts, output_path, reader)
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
