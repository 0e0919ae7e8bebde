"""The `engine` command: `engine classify`, `engine rerank`, `engine score` (batch files), `engine serve` (HTTP),
`engine export` (a transformers checkpoint, the export extra) and `engine adopt` (a ready-made ONNX export, no torch).

Exit codes: `engine score` takes its codes from errors.OUTCOMES (0 all rows scored, 1 some rows failed, 2 nothing
done, 3 stopped by --max-errors, 4 failed while running, 130 interrupted); `engine classify` and `engine serve`
exit 1 on any engine error (they keep no partial work), 2 on a usage error; `engine export` and `engine adopt`
exit 1 when the model could not be made or failed its checks.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import batching
from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_ROW_ERRORS, EngineError, InvalidRequestError, outcome
from .postprocess import Activation
from .spec import DEFAULT_HYPOTHESIS_TEMPLATE

DEFAULT_MAX_BODY = 1 << 20  # engine.server's, repeated so that --help works without the server extra


def classify(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="engine classify", description="Classify texts given on the command line.")
    parser.add_argument("model_dir")
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--top-k", type=int, default=None, help="best k labels (default: all)")
    parser.add_argument("--function-to-apply", choices=["sigmoid", "softmax", "none"])
    parser.add_argument("--candidate-labels", help="comma-separated labels: zero-shot with an NLI model")
    parser.add_argument("--multi-label", action="store_true")
    args = parser.parse_args(argv)
    from .spec import ClassificationOutput, outputs_to_json

    result: list[ClassificationOutput] | list[list[ClassificationOutput]]
    if args.candidate_labels:
        from .zero_shot import ZeroShotClassifier

        zs = ZeroShotClassifier.load(args.model_dir)
        result = zs(list(args.texts), candidate_labels=args.candidate_labels, multi_label=args.multi_label)
    else:
        from .text_classification import TextClassifier

        clf = TextClassifier.load(args.model_dir)
        result = clf(list(args.texts), top_k=args.top_k, function_to_apply=args.function_to_apply)
    for text, outputs in zip(args.texts, outputs_to_json(result)):  # a list of texts: one list of outputs each
        print(json.dumps({"text": text, "result": outputs}, ensure_ascii=False))
    return 0


def rerank(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="engine rerank",
        description="Rank documents by relevance to a query with a cross-encoder; prints one JSON line per "
        "document, best first: {index, score, text}.",
    )
    parser.add_argument("model_dir")
    parser.add_argument("query")
    parser.add_argument("documents", nargs="*", help="documents to rank (or --documents-file)")
    parser.add_argument("--documents-file", help="documents, one per line (- for standard input)")
    parser.add_argument("--top-k", type=int, default=None, help="best k documents (default: all)")
    parser.add_argument("--raw-scores", action="store_true", help="logits instead of probabilities")
    parser.add_argument("--no-truncation", action="store_true", help="a pair too long for the model fails instead")
    args = parser.parse_args(argv)
    documents = list(args.documents)
    if args.documents_file:
        try:
            source = sys.stdin if args.documents_file == "-" else open(args.documents_file, encoding="utf-8")  # noqa: SIM115
            with source:
                documents += [line.rstrip("\n") for line in source if line.strip()]
        except OSError as exc:
            raise InvalidRequestError(f"cannot read --documents-file {args.documents_file}: {exc}") from None
    from .rerank import Reranker

    reranker = Reranker.load(args.model_dir)
    results = reranker.rerank(
        args.query,
        documents,
        top_k=args.top_k,
        return_documents=True,
        raw_scores=args.raw_scores,
        truncation=not args.no_truncation,
    )
    for r in results:
        print(json.dumps(r.to_dict(), ensure_ascii=False))
    return 0


# engine score ---------------------------------------------------------------------------------------------------


def _score_parser() -> argparse.ArgumentParser:
    from .scoring import DEFAULT_CHUNK_ROWS

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
    p.add_argument(
        "--labels-column", help="zero-shot labels per row: a list column, or a comma-separated string per row"
    )
    p.add_argument("--multi-label", action="store_true", help="zero-shot: score each label on its own")
    p.add_argument("--hypothesis-template", default=DEFAULT_HYPOTHESIS_TEMPLATE)
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
    p.add_argument("--batch-tokens", type=int, default=batching.DEFAULT_BATCH_TOKENS)
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
    from .ray import add_arguments as add_ray_arguments  # --ray [ADDRESS], --actors (engine/ray.py)

    add_ray_arguments(p)
    return p


def score(argv: Sequence[str]) -> int:
    from .file_job import score_file
    from .scoring import ScoringOptions
    from .session import default_threads

    args = _score_parser().parse_args(argv)

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
                concurrent_batches=(
                    args.concurrent_batches
                    if args.concurrent_batches is not None
                    else args.threads or default_threads()
                ),
                progress=not args.quiet,
            )
    except KeyboardInterrupt:
        say("interrupted: finished chunks are kept; run the same command again to resume")
        return EXIT_INTERRUPTED
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


# engine serve ---------------------------------------------------------------------------------------------------


def read_tokens(path: str) -> tuple[str, ...]:
    """One token per line; blank lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidRequestError(f"cannot read --token-file {path}: {exc}") from None
    tokens = tuple(t.strip() for t in lines if t.strip() and not t.strip().startswith("#"))
    if not tokens:
        raise InvalidRequestError(f"--token-file {path} has no token; put one token per line")
    return tokens


def parse_alias(value: str) -> tuple[str, str]:
    new, sep, known = value.partition("=")
    if not sep or not new or not known:
        raise argparse.ArgumentTypeError(f"--alias takes NEW_ID=KNOWN_ID, got {value!r}")
    return new, known


def auth_notice(tokens: Sequence[str], token_file: str | None, host: str, port: int) -> str:
    """Said at start-up: whether requests need a token."""
    if tokens:
        return f"engine serve: {len(tokens)} token(s) from {token_file}: requests need `Authorization: Bearer <token>`"
    where = "on this machine" if host in ("127.0.0.1", "localhost", "::1") else "ON THE NETWORK"
    return (
        f"engine serve: no --token-file, so NO AUTHENTICATION: any client {where} that can reach {host}:{port} "
        "may call the models (fine for local use; give --token-file otherwise)"
    )


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engine serve",
        description="Serve model directories over HTTP in the shapes of the Hugging Face Inference API "
        "(POST /models/ID) and Cloudflare Workers AI (POST /client/v4/accounts/ACCOUNT/ai/run/ID). Models are "
        "loaded and warmed before the server listens, unless --lazy.",
    )
    parser.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--token-file", help="accepted bearer tokens, one per line (default: no authentication)")
    parser.add_argument(
        "--alias",
        action="append",
        type=parse_alias,
        default=[],
        metavar="NEW_ID=KNOWN_ID",
        help="another id for a served model, e.g. @cf/huggingface/distilbert-sst-2-int8=sst2",
    )
    parser.add_argument(
        "--lazy",
        action="store_true",
        help="listen at once and load each model on its first request (503 'currently loading' until then, "
        "unless the request sends x-wait-for-model: true)",
    )
    parser.add_argument("--preload", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for scripts
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads per model")
    parser.add_argument("--batch-tokens", type=int, default=batching.DEFAULT_BATCH_TOKENS)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    parser.add_argument("--max-batch-inputs", type=int, default=128, help="inputs per model run; 1 = no batching")
    parser.add_argument("--max-queue", type=int, default=256, help="queued requests per model before 503")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY)
    parser.add_argument("--cache-size", type=int, default=1024, help="cached responses (0 = no cache)")
    parser.add_argument("--access-log", action="store_true")
    return parser


def serve(argv: Sequence[str]) -> int:
    parser = _serve_parser()
    args = parser.parse_args(argv)
    for name in ("batch_wait_ms", "max_batch_inputs", "max_queue", "max_body_bytes", "cache_size"):
        if getattr(args, name) < (0 if name in ("batch_wait_ms", "cache_size") else 1):
            parser.error(f"--{name.replace('_', '-')} is out of range: {getattr(args, name)}")
    from .server import ServerConfig, create_app  # raises EngineError without the server extra
    from .serving_models import build_models
    from .serving_worker import BatchPolicy, State

    tokens = read_tokens(args.token_file) if args.token_file else ()
    policy = BatchPolicy(args.batch_wait_ms / 1000, args.max_batch_inputs, args.max_queue)
    models = build_models(
        args.model_dirs, args.alias, policy=policy, threads=args.threads, batch_tokens=args.batch_tokens
    )
    for m in models:
        print(f"engine serve: {m.info.task} {m.info.path} as {', '.join(m.ids)}", file=sys.stderr)
    if not args.lazy:
        for m in models:
            m.worker.start()
        for m in models:
            if m.worker.wait_loaded() is State.FAILED:
                error = m.worker.error
                raise error if isinstance(error, EngineError) else EngineError(f"loading {m.name} failed: {error}")
            print(f"engine serve: {m.name} loaded and warmed", file=sys.stderr)
    print(auth_notice(tokens, args.token_file, args.host, args.port), file=sys.stderr)
    import uvicorn

    config = ServerConfig(tokens, args.max_body_bytes, args.cache_size, preload=not args.lazy)
    uvicorn.run(create_app(models, config), host=args.host, port=args.port, access_log=args.access_log)
    return 0


# engine export, engine adopt: making model directories ---------------------------------------------------------


def export(argv: Sequence[str]) -> int:
    """engine/export/export.py; torch, transformers and onnxscript come with the export extra."""
    try:
        from .export.export import main as export_main

        return export_main(argv)
    except ModuleNotFoundError as exc:
        print(
            f"error: engine export needs the export extra (missing module {exc.name!r}): "
            "pip install 'offline-textclf-engine[export]'",
            file=sys.stderr,
        )
        return 1


def adopt(argv: Sequence[str]) -> int:
    """engine/export/adopt.py: a ready-made ONNX export, no torch."""
    from .export.adopt import main as adopt_main

    return adopt_main(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "classify": classify,
    "rerank": rerank,
    "score": score,
    "serve": serve,
    "export": export,
    "adopt": adopt,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: engine {{{','.join(COMMANDS)}}} ...  (engine COMMAND --help for details)", file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
