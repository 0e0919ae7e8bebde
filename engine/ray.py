"""The public import path of batch scoring on a Ray cluster (`from engine.ray import score_dataset`): the code
lives in engine/jobs/ray/. Absolute imports mean this module never hides the `ray` package, and importing it
imports no Ray."""

from engine.jobs.ray import SUCCESS_FILE, Scorer, add_arguments, input_format, load_model, run_job, score_dataset

__all__ = ["SUCCESS_FILE", "Scorer", "add_arguments", "input_format", "load_model", "run_job", "score_dataset"]
