"""The former home of the Ray job, kept as an import path (benchmarks/ray_scoring.py and docs/batch.md name it):
the code lives in engine/jobs/ray/."""

from engine.jobs.ray import (
    SUCCESS_FILE,
    RayJobSummary,
    Scorer,
    add_arguments,
    check_model,
    input_format,
    load_model,
    run_from_args,
    run_job,
    score_dataset,
)

__all__ = [
    "SUCCESS_FILE",
    "RayJobSummary",
    "Scorer",
    "add_arguments",
    "check_model",
    "input_format",
    "load_model",
    "run_from_args",
    "run_job",
    "score_dataset",
]
