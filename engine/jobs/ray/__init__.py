"""Batch scoring on a Ray cluster with Ray Data: the same rows, options and output columns as `engine score`.

    scorer.py   what runs in an actor: the model, loaded and checked once, and `Scorer`, Arrow block in and out
    dataset.py  Ray Data wiring: reading the input, `score_dataset` (a pool of Scorer actors over a Dataset)
    files.py    filesystems and URIs, the input's format, the sink writing staged result files
    job.py      `engine score --ray` (`run_job`) and its command-line flags

The package is named after what it drives; its modules import the `ray` package (absolutely) only when a job
runs, so importing engine.jobs.ray, or engine.ray, needs no Ray.
"""

from engine.jobs.ray.dataset import score_dataset
from engine.jobs.ray.files import SUCCESS_FILE, input_format
from engine.jobs.ray.job import RayJobSummary, add_arguments, run_from_args, run_job
from engine.jobs.ray.scorer import Scorer, check_model, load_model

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
