"""`engine score`: a file of records, resumable; exit codes from errors.OUTCOMES."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import Any

from engine.cli.classify import HelpFormatter
from engine.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_ROW_ERRORS,
    EXIT_TERMINATED,
    EngineError,
    JobInterrupted,
    Terminated,
    outcome,
)
from engine.runtime import batching
from engine.runtime.postprocess import Activation
from engine.tasks.params import DEFAULT_HYPOTHESIS_TEMPLATE


def _score_parser() -> argparse.ArgumentParser:
    from engine.jobs.scoring import DEFAULT_CHUNK_ROWS

    p = argparse.ArgumentParser(
        prog="engine score",
        formatter_class=HelpFormatter,
        description="Score a .jsonl, .csv or .parquet file with a model; resumable: a killed job run again with the "
        "same arguments goes on where it stopped.",
        epilog="exit codes: 0 all rows scored; 1 done, some rows failed (OUTPUT.errors.jsonl); 2 nothing done "
        "(bad arguments, model or input; resume refused); 3 stopped by --max-errors; 4 failed while running; "
        "130 interrupted (Ctrl-C); 143 terminated (SIGTERM). Codes 3, 4, 130 and 143 keep the finished work: "
        "run the same command again to resume.",
    )
    p.add_argument("model_dir", metavar="MODEL", help="a model directory, an export alias or a Hugging Face id")
    p.add_argument("input", help="records to score: .jsonl/.ndjson, .csv (with a header) or .parquet")
    p.add_argument("output", help="where results go, same formats; written only when the job is complete")
    p.add_argument("--text-column", default="text", help="the column holding the text")
    p.add_argument("--pair-column", help="second text of a pair (cross-encoders, rerankers)")
    p.add_argument("--id-column", help="copied to the output (default: a `row` column, the row number from 0)")
    p.add_argument("--candidate-labels", help="comma-separated labels: zero-shot with an NLI model")
    p.add_argument(
        "--labels-column", help="zero-shot labels per row: a list column, or a comma-separated string per row"
    )
    p.add_argument("--multi-label", action="store_true", help="zero-shot: score each label on its own")
    p.add_argument("--hypothesis-template", default=DEFAULT_HYPOTHESIS_TEMPLATE, help="zero-shot: {} takes the label")
    p.add_argument("--top-k", type=int, default=None, help="keep the best k labels (default: all, sorted)")
    p.add_argument("--function-to-apply", choices=[a.value for a in Activation])
    p.add_argument("--no-truncation", action="store_true", help="rows too long for the model fail instead")
    p.add_argument("--truncation-direction", choices=["right", "left"], default="right")
    p.add_argument(
        "--long-text",
        choices=["truncate", "chunk"],
        default="truncate",
        help="chunk: score every window of a long text and aggregate (default: cut it to the window)",
    )
    p.add_argument("--chunk-stride", type=int, help="tokens of overlap between windows (default: a quarter window)")
    p.add_argument("--chunk-aggregation", choices=["mean", "max"], help="default: mean for softmax, max for sigmoid")
    p.add_argument(
        "--batch-tokens", type=int, default=batching.DEFAULT_BATCH_TOKENS, help="tokens per batch, padding included"
    )
    p.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="rows per sorting window and commit")
    p.add_argument("--threads", type=int, default=None, help="cores to use (default: all this process may use)")
    p.add_argument(
        "--concurrent-batches",
        type=int,
        default=None,
        help="batches run at once, the cores split between them (default: one per core: the most rows/s; "
        "1 = one batch at a time on every core)",
    )
    p.add_argument("--max-errors", type=int, default=None, help="stop once more than N rows have failed")
    p.add_argument("--restart", action="store_true", help="throw away an unfinished job's state and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bar (tqdm, the `progress` extra), no summary")
    from engine.jobs.ray.job import add_arguments as add_ray_arguments  # --ray [ADDRESS], --actors

    add_ray_arguments(p)
    return p


def score(argv: Sequence[str]) -> int:
    args = _score_parser().parse_args(argv)

    def on_sigterm(_signum: int, _frame: Any) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return _score(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _score(args: argparse.Namespace) -> int:
    from engine.jobs.file_job import score_file
    from engine.jobs.scoring import ScoringOptions
    from engine.runtime.session import default_threads

    def say(message: str) -> None:
        print(message, file=sys.stderr)

    try:
        opts = ScoringOptions.parse(
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
            labels_column=args.labels_column,
            long_text=args.long_text,
            chunk_stride=args.chunk_stride,
            chunk_aggregation=args.chunk_aggregation,
        )
        if args.ray is not None:  # scale out: the same job on a Ray cluster (engine/ray.py)
            from engine.jobs.ray.job import run_from_args

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
                concurrent_batches=(
                    args.concurrent_batches
                    if args.concurrent_batches is not None
                    else args.threads or default_threads()
                ),
                progress=not args.quiet,
            )
    except JobInterrupted as exc:
        what = "terminated (SIGTERM)" if exc.terminated else "interrupted"
        say(f"{what} after {exc.rows} rows: finished chunks are kept; run the same command again to resume there")
        return EXIT_TERMINATED if exc.terminated else EXIT_INTERRUPTED
    except KeyboardInterrupt as exc:  # before any row: nothing to keep
        say("terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted")
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    except EngineError as exc:
        say(f"error: {exc}")
        return outcome(exc).exit_code
    except OSError as exc:
        say(f"error: {exc}")
        return outcome(EngineError()).exit_code
    if not args.quiet:
        resumed = f", {summary.resumed_rows} of them done before (resumed)" if summary.resumed_rows else ""
        failed = f", {summary.errors} failed (see {summary.errors_file})" if summary.errors else ""
        say(
            f"{summary.rows} rows{resumed}{failed} in {summary.seconds:.1f} s "
            f"({summary.rows_per_second:.0f} rows/s) -> {summary.output}"
        )
    return EXIT_ROW_ERRORS if summary.errors else EXIT_OK
