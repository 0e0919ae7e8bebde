"""One exception hierarchy for the whole engine: one class per stage, each message says what to do.

`OUTCOMES` maps each class to its HTTP status (engine serve) and its exit code (engine score); both look errors
up there, by the nearest class in the hierarchy, instead of deciding at each call site.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidRequestError(EngineError, ValueError):
    """The request is malformed: wrong type, empty text, bad parameter. Fix the request."""


class TextTooLongError(InvalidRequestError):
    """A text does not fit the model's window and truncation was turned off."""


class RequestTooLargeError(InvalidRequestError):
    """A request has more model inputs than a served model's queue holds: split it, or raise --max-queue."""


class ModelLoadError(EngineError):
    """A model directory is missing, incomplete, corrupt or not what the task needs. Re-export it."""


class IntegrityError(ModelLoadError):
    """A file's sha256 does not match the manifest: the directory was altered after export."""


class InferenceError(EngineError):
    """The model ran but failed or produced unusable numbers (NaN, inf, wrong shape)."""


class Overloaded(EngineError):
    """A served model's queue is full: the client should retry later."""


class RecordFileError(EngineError):
    """A record file cannot be read or written as a whole (unknown format, no such column, pyarrow missing)."""


class ResumeRefusedError(EngineError):
    """The unfinished job found next to OUTPUT was made with another input, model or parameters."""


class JobLockedError(EngineError):
    """Another process is writing the same OUTPUT right now."""


class TooManyErrorsError(EngineError):
    """More rows failed than --max-errors allows; the job stopped early and can be resumed."""


class ExportError(EngineError):
    """`engine export` or `engine adopt` could not make the model directory, or it did not pass its checks."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so that both end a job the same way."""


class JobInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a batch job: `rows` are committed, and the same command resumes after them."""

    def __init__(self, rows: int, terminated: bool) -> None:
        super().__init__(rows, terminated)
        self.rows = rows
        self.terminated = terminated


# Exit codes of `engine score` (also in docs/batch.md)
EXIT_OK = 0  # every row scored
EXIT_ROW_ERRORS = 1  # finished, but some rows failed: see OUTPUT.errors.jsonl
EXIT_REFUSED = 2  # nothing done: bad arguments, unreadable model or input, resume refused, job locked
EXIT_TOO_MANY_ERRORS = 3  # stopped by --max-errors; finished chunks are kept, the same command resumes
EXIT_FAILED = 4  # stopped by an error while running (disk, inference); finished chunks are kept
EXIT_INTERRUPTED = 130  # Ctrl-C; finished chunks are kept
EXIT_TERMINATED = 143  # SIGTERM; finished chunks are kept


@dataclass(frozen=True)
class Outcome:
    http_status: int
    exit_code: int


OUTCOMES: dict[type[EngineError], Outcome] = {
    EngineError: Outcome(500, EXIT_FAILED),
    InvalidRequestError: Outcome(422, EXIT_REFUSED),
    RequestTooLargeError: Outcome(413, EXIT_REFUSED),
    ModelLoadError: Outcome(500, EXIT_REFUSED),
    InferenceError: Outcome(500, EXIT_FAILED),
    Overloaded: Outcome(503, EXIT_FAILED),
    RecordFileError: Outcome(422, EXIT_REFUSED),
    ResumeRefusedError: Outcome(409, EXIT_REFUSED),
    JobLockedError: Outcome(409, EXIT_REFUSED),
    TooManyErrorsError: Outcome(422, EXIT_TOO_MANY_ERRORS),
}


def outcome(exc: EngineError) -> Outcome:
    """The entry of the nearest class of `exc` in OUTCOMES."""
    for cls in type(exc).__mro__:
        if cls in OUTCOMES:
            return OUTCOMES[cls]
    return OUTCOMES[EngineError]


def first_error(rows: Sequence[T | TextTooLongError]) -> list[T]:
    """The rows, or the first row's error (saying which input it was) raised."""
    for i, row in enumerate(rows):
        if isinstance(row, TextTooLongError):
            raise TextTooLongError(f"input {i}: {row}") from None
    return [row for row in rows if not isinstance(row, TextTooLongError)]
