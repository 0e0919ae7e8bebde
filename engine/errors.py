"""One exception hierarchy for the whole engine: one class per stage, each message says what to do."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidRequestError(EngineError, ValueError):
    """The request is malformed: wrong type, empty text, bad parameter. Fix the request."""


class TextTooLongError(InvalidRequestError):
    """A text does not fit the model's window and truncation was turned off."""


class ModelLoadError(EngineError):
    """A model directory is missing, incomplete, corrupt or not what the task needs. Re-export it."""


class IntegrityError(ModelLoadError):
    """A file's sha256 does not match the manifest: the directory was altered after export."""


class InferenceError(EngineError):
    """The model ran but failed or produced unusable numbers (NaN, inf, wrong shape)."""
