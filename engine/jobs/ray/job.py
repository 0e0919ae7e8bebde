"""`engine score --ray`: read a file, directory or URI, score it on the cluster, write OUTPUT (a directory of
files) and OUTPUT.errors/ through a staging directory renamed into place only when complete. A rerun restarts
from scratch (see docs/batch.md, "Scale out"). Also the flags `engine score` gains for it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineError, InvalidRequestError
from engine.jobs.formats import Format
from engine.jobs.ray.dataset import IO_CPUS, ray_module, read_input, score_dataset
from engine.jobs.ray.files import SUCCESS_FILE, ResultSink, datasink, filesystem, input_format, replace_dir
from engine.jobs.ray.scorer import Scorer, check_model
from engine.jobs.scoring import ScoringOptions
from engine.runtime import batching


@dataclass(frozen=True)
class RayJobSummary:
    """What `engine score --ray` did; the same fields the local command's summary prints."""

    rows: int
    errors: int
    seconds: float
    output: str
    errors_file: str | None
    resumed_rows: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def run_job(
    model_dir: str | Path,
    input: str,
    output: str,
    options: ScoringOptions,
    *,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: int = 1,
    batch_tokens: int = batching.DEFAULT_BATCH_TOKENS,
    scorer: type[Scorer] = Scorer,
) -> RayJobSummary:
    """`engine score --ray`: INPUT (file, directory or URI) -> OUTPUT/ and OUTPUT.errors/ (directories of files).

    Everything is written under OUTPUT.partial/ first and moved into place only when the job is complete, with
    OUTPUT/_SUCCESS.json last. An earlier OUTPUT.partial/ (an interrupted run) is deleted first: a rerun restarts.
    Connects to the cluster at `address` ("auto", "ray://host:10001"), or to RAY_ADDRESS / a new local one.
    """
    ray = ray_module()
    start = time.monotonic()
    input, output = (p if "://" in p else os.path.abspath(p) for p in (str(input), str(output)))
    out_fmt = Format.of(Path(output.rstrip("/")))
    in_fmt = input_format(input)
    if options.id_column is None:
        raise InvalidRequestError("--ray needs --id-column: Ray Data has no global row numbers")
    expected = check_model(model_dir, options, batch_tokens)  # before anything starts: clear errors, fast
    if not ray.is_initialized():
        ray.init(address=address)
    fs, out_path = filesystem(output)
    staging = output.rstrip("/") + ".partial"
    _, staging_path = filesystem(staging)
    if fs.get_file_info(staging_path).type.name != "NotFound":
        fs.delete_dir(staging_path)  # an interrupted run's files: restart, never mix two runs' rows
    ds = read_input(input, in_fmt, options.columns)
    scored = score_dataset(
        ds,
        model_dir,
        options=options,
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        batch_tokens=batch_tokens,
        scorer=scorer,
        checked_manifest=expected,
    )
    sink = datasink(ResultSink(staging, out_fmt, options.id_name, keep_id_type=in_fmt is Format.PARQUET))
    try:
        scored.write_datasink(sink, ray_remote_args={"num_cpus": IO_CPUS})
    except Exception as exc:
        raise _job_error(exc) from exc
    rows, errors = sink.sink.counts
    manifest = {
        "rows": rows + errors,
        "scored": rows,
        "errors": errors,
        "input": input,
        "model_manifest_sha256": expected,
        "options": options.to_dict(),
        "format": out_fmt.value,
    }
    with fs.open_output_stream(f"{staging_path}/output/{SUCCESS_FILE}") as f:
        f.write(json.dumps(manifest, indent=1).encode("utf-8"))
    errors_out = output.rstrip("/") + ".errors"
    _, errors_path = filesystem(errors_out)
    if errors:
        replace_dir(fs, f"{staging_path}/errors", errors_path)
    elif fs.get_file_info(errors_path).type.name != "NotFound":
        fs.delete_dir(errors_path)  # a stale errors directory would describe another run's rows
    replace_dir(fs, f"{staging_path}/output", out_path)
    fs.delete_dir(staging_path)
    return RayJobSummary(rows + errors, errors, time.monotonic() - start, output, errors_out if errors else None)


def _job_error(exc: Exception) -> EngineError:
    """A failed Ray job as an engine error whose message carries the cause (Ray wraps worker exceptions)."""
    for cause in (exc, getattr(exc, "cause", None), exc.__cause__):
        if isinstance(cause, EngineError):
            return cause
    return EngineError(f"the Ray job failed: {exc}")


# Command line hook (engine score ... --ray [ADDRESS]) -----------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags `engine score` gains for Ray."""
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="score on a Ray cluster (Ray Data): ADDRESS of the cluster ('auto', ray://host:10001), or none for "
        "RAY_ADDRESS or a local one. INPUT may then be a directory or a URI (s3://...); OUTPUT becomes a directory "
        "of files, errors go to OUTPUT.errors/. Needs --id-column; --threads is the CPUs (and threads) per actor. "
        "A bare --ray goes after MODEL INPUT OUTPUT (or it takes MODEL for an address).",
    )
    parser.add_argument("--actors", type=int, default=None, help="with --ray: a fixed number of actors")


def run_from_args(args: argparse.Namespace, options: ScoringOptions) -> RayJobSummary:
    """`engine score --ray`, from the parsed arguments of `engine score`."""
    refused = (
        ("--max-errors", args.max_errors is not None, "a --ray job always starts over"),
        ("--restart", args.restart, "a --ray job always starts over"),
        ("--concurrent-batches", args.concurrent_batches is not None, "more actors run more batches at once"),
    )
    for flag, given, why in refused:
        if given:
            raise InvalidRequestError(f"{flag} is not supported with --ray ({why})")
    return run_job(
        args.model_dir,
        args.input,
        args.output,
        options,
        address=args.ray or None,
        actors=args.actors,
        cpus_per_actor=args.threads or 1,
        batch_tokens=args.batch_tokens,
    )
