"""`engine serve`: the hosted APIs' shapes over HTTP (the server extra)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.cli.classify import HelpFormatter
from engine.errors import EngineError, InvalidRequestError
from engine.runtime import batching
from engine.serve.config import DEFAULT_MAX_BODY  # no server extra needed: --help works without it


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
        formatter_class=HelpFormatter,
        description="Serve model directories over HTTP in the shapes of the Hugging Face Inference API "
        "(POST /models/ID) and Cloudflare Workers AI (POST /client/v4/accounts/ACCOUNT/ai/run/ID). Models are "
        "loaded and warmed before the server listens, unless --lazy.",
    )
    parser.add_argument(
        "model_dirs", nargs="+", metavar="MODEL", help="model directories, export aliases or Hugging Face ids"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
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
    parser.add_argument(
        "--batch-tokens", type=int, default=batching.DEFAULT_BATCH_TOKENS, help="tokens per batch, padding included"
    )
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    parser.add_argument("--max-batch-inputs", type=int, default=128, help="inputs per model run; 1 = no batching")
    parser.add_argument(
        "--max-queue",
        type=int,
        default=4096,
        help="model inputs queued per model before 503 (a zero-shot text counts once per label); a request with "
        "more inputs than this gets 413 (default: 4096)",
    )
    parser.add_argument(
        "--queue-timeout",
        type=float,
        default=0,
        metavar="SECONDS",
        help="a request none of whose inputs has run after this long gets 503 with Retry-After (default: 0, none)",
    )
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY, help="larger bodies get 413")
    parser.add_argument("--cache-size", type=int, default=1024, help="cached responses (0 = no cache)")
    parser.add_argument(
        "--header-timeout", type=float, default=10.0, metavar="SECONDS", help="time to send the request headers"
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="time to send the body once the headers are in (408 past it)",
    )
    parser.add_argument(
        "--keep-alive", type=float, default=5.0, metavar="SECONDS", help="an idle connection is closed after this"
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=512,
        help="open connections before 503; lowered to stay below the open-files limit, whose soft value is "
        "raised to the hard one at start (default: 512)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="on SIGTERM: stop accepting, let requests in flight finish for this long, then close what is left",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")
    return parser


def serve(argv: Sequence[str]) -> int:
    parser = _serve_parser()
    args = parser.parse_args(argv)
    at_least_zero = ("batch_wait_ms", "cache_size", "queue_timeout")
    for name in (*at_least_zero, "max_batch_inputs", "max_queue", "max_body_bytes", "max_connections"):
        if getattr(args, name) < (0 if name in at_least_zero else 1):
            parser.error(f"--{name.replace('_', '-')} is out of range: {getattr(args, name)}")
    for name in ("header_timeout", "body_timeout", "keep_alive", "shutdown_grace"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be more than 0 seconds: {getattr(args, name)}")
    from engine.serve.app import (  # raises EngineError without the server extra
        ServerConfig,
        connection_cap,
        create_app,
        raise_open_files_limit,
        uvicorn_config,
    )
    from engine.serve.models import build_models
    from engine.serve.worker import BatchPolicy, State

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
    import logging

    import uvicorn

    open_files = raise_open_files_limit()
    cap = connection_cap(args.max_connections, open_files)
    if cap < args.max_connections:
        print(
            f"engine serve: --max-connections lowered to {cap}: the open-files limit is {open_files}", file=sys.stderr
        )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("engine serve: %(message)s"))
    logging.getLogger("engine").addHandler(handler)  # one line per client that goes away, load errors
    logging.getLogger("engine").setLevel(logging.INFO)
    config = ServerConfig(
        tokens,
        args.max_body_bytes,
        args.cache_size,
        preload=not args.lazy,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keep_alive=args.keep_alive,
        queue_timeout=args.queue_timeout or None,
        max_connections=cap,
        shutdown_grace=args.shutdown_grace,
    )
    app = create_app(models, config)
    uvicorn.Server(uvicorn_config(app, config, host=args.host, port=args.port, access_log=args.access_log)).run()
    return 0
