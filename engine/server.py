"""`engine serve`: the Hugging Face Inference API and Cloudflare Workers AI on localhost (Starlette on uvicorn).

Code written against the hosted APIs runs unchanged but for the base URL. Each request is checked in this order:
auth (401) -> model id (404) -> body size (413) -> JSON (400) -> request shape and parameters (422) -> result
cache -> model state (lazy load: 503 with `estimated_time` unless `x-wait-for-model: true`) -> bounded queue
(503 when full) -> dynamic batching in the model's worker thread (serving_worker). Needs the `server` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import sys
from collections.abc import AsyncIterator, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import batching
from .errors import EngineError, InvalidRequestError

try:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
except ImportError as exc:  # engine.cli prints this instead of a traceback
    raise EngineError(
        "engine serve needs the server extra: pip install 'offline-textclf-engine[server]' (starlette, uvicorn)"
    ) from exc
from .serving_models import ResultCache, ServedModel, build_models
from .serving_worker import BatchPolicy, Job, JobResult, Overloaded, State
from .spec import (
    CloudflareTextClassificationInput,
    TextClassificationInput,
    ZeroShotClassificationInput,
)

DEFAULT_MAX_BODY = 1 << 20
MAX_CACHED_BODY = 64 << 10  # larger requests are not cached: the cache stays small
TRUE = {"true", "1", "yes"}
FALSE = {"false", "0", "no"}


@dataclass(frozen=True)
class ServerConfig:
    """`tokens` empty: no authentication (local use)."""

    tokens: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY
    cache_size: int = 1024
    preload: bool = False


class HTTPError(Exception):
    """Ends a request with this status and message; `extra` goes into the HF error body."""

    def __init__(self, status: int, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}


@dataclass(frozen=True)
class Parsed:
    """A validated request: what the worker runs, and how to shape its results."""

    inputs: list[Any]
    parameters: Hashable
    cost: int
    is_batch: bool
    cache_key: Hashable


def parse_hf(task: str, body: Any) -> Parsed:
    """HF Inference API request -> Parsed. Text classification without top_k returns every label, as the hosted
    API does. The hosted API's legacy `options` ({use_cache, wait_for_model}) are accepted and read as headers."""
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "options"}
    if task == "zero-shot-classification":
        zs = ZeroShotClassificationInput.from_dict(body)
        texts = zs.inputs if isinstance(zs.inputs, list) else [zs.inputs]
        key = (task, tuple(texts), zs.parameters)
        return Parsed(texts, zs.parameters, len(texts) * len(zs.parameters.candidate_labels), zs.inputs is texts, key)
    if isinstance(body, dict) and isinstance(body.get("parameters", {}), dict):
        body = {**body, "parameters": {"top_k": None, **(body.get("parameters") or {})}}
    tc = TextClassificationInput.from_dict(body)
    items = tc.inputs if isinstance(tc.inputs, list) else [tc.inputs]
    return Parsed(items, tc.parameters, len(items), tc.inputs is items, (task, tuple(items), tc.parameters))


def hf_response(task: str, parsed: Parsed, results: list[Any]) -> Any:
    """Text classification: one list of {label, score} per input, always nested (`[[...]]` for one input), as
    the hosted API and InferenceClient expect. Zero-shot: the pipeline's {sequence, labels, scores}."""
    if task == "zero-shot-classification":
        shaped = [p.to_pipeline().to_dict() for p in results]
        return shaped if parsed.is_batch else shaped[0]
    return [[o.to_dict() for o in p.outputs] for p in results]


def header_flag(request: Request, name: str, options: dict[str, Any], option: str, default: bool) -> bool:
    value = request.headers.get(name)
    if value is not None:
        if value.strip().lower() in TRUE:
            return True
        if value.strip().lower() in FALSE:
            return False
        raise HTTPError(400, f"header {name} must be true or false, got {value!r}")
    flag = options.get(option, default)
    if not isinstance(flag, bool):
        raise HTTPError(422, f"options.{option} must be true or false, got {flag!r}")
    return flag


class Server:
    """The routes, bound to the served models, the result cache and the configuration."""

    def __init__(self, models: Sequence[ServedModel], config: ServerConfig) -> None:
        self.models = list(models)
        self.by_id = {name: m for m in self.models for name in m.ids}
        self.config = config
        self.cache = ResultCache(config.cache_size)
        self._tokens = [t.encode("utf-8") for t in config.tokens]

    def app(self) -> Starlette:
        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/models", self.list_models, methods=["GET"]),
            Route("/models/{model_id:path}", self.describe_model, methods=["GET"]),
            Route("/models/{model_id:path}", self.hf, methods=["POST"]),
            Route("/hf-inference/models/{model_id:path}", self.hf, methods=["POST"]),
            Route("/client/v4/accounts/{account_id}/ai/run/{model_id:path}", self.cloudflare, methods=["POST"]),
        ]
        return Starlette(routes=routes, lifespan=self.lifespan)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        if self.config.preload:
            for m in self.models:
                m.worker.start()
        yield
        for m in self.models:
            m.worker.stop()

    # checks shared by every route ---------------------------------------------------------------------------------

    def authorize(self, request: Request) -> None:
        """Constant-time comparison against every configured token (no early exit on the first match)."""
        if not self._tokens:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise HTTPError(401, "missing token: send the header `Authorization: Bearer <token>`")
        candidate = given.strip().encode("utf-8")
        ok = False
        for token in self._tokens:
            ok |= hmac.compare_digest(candidate, token)
        if not ok:
            raise HTTPError(401, "invalid token: it is not one of the tokens this server was started with")

    def model(self, model_id: str) -> ServedModel:
        if model_id not in self.by_id:
            raise HTTPError(404, f"model {model_id!r} is not served here; served ids: {sorted(self.by_id)}")
        return self.by_id[model_id]

    async def json_body(self, request: Request) -> tuple[Any, int]:
        """The parsed body and its size in bytes."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks)), size
        except ValueError as exc:
            raise HTTPError(
                400, f'the body is not valid JSON ({exc}); send a JSON object such as {{"inputs": "some text"}}'
            ) from None

    async def run(self, served: ServedModel, parsed: Parsed, wait: bool) -> JobResult:
        worker = served.worker
        if worker.state is State.FAILED:
            raise HTTPError(500, f"model {served.name} failed to load: {worker.error}; fix it and restart the server")
        if worker.state is not State.READY:
            worker.start()
            if not wait:
                raise HTTPError(
                    503,
                    f"Model {served.name} is currently loading",
                    {"estimated_time": worker.estimated_time()},
                )
        try:
            future = worker.submit(Job(parsed.inputs, parsed.parameters, parsed.cost))
        except Overloaded as exc:
            raise HTTPError(503, str(exc)) from None
        try:
            return await asyncio.wrap_future(future)
        except InvalidRequestError as exc:
            raise HTTPError(422, str(exc)) from None
        except EngineError as exc:
            raise HTTPError(500, str(exc)) from None

    # routes ------------------------------------------------------------------------------------------------------

    async def health(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def list_models(self, request: Request) -> Response:
        try:
            self.authorize(request)
        except HTTPError as exc:
            return hf_error(exc)
        return JSONResponse([m.describe() for m in self.models])

    async def describe_model(self, request: Request) -> Response:
        try:
            self.authorize(request)
            return JSONResponse(self.model(request.path_params["model_id"]).describe())
        except HTTPError as exc:
            return hf_error(exc)

    async def hf(self, request: Request) -> Response:
        try:
            self.authorize(request)
            served = self.model(request.path_params["model_id"])
            body, size = await self.json_body(request)
            options = body.get("options", {}) if isinstance(body, dict) else {}
            if not isinstance(options, dict):
                raise HTTPError(422, 'options must be an object such as {"wait_for_model": true}')
            use_cache = header_flag(request, "x-use-cache", options, "use_cache", True)
            wait = header_flag(request, "x-wait-for-model", options, "wait_for_model", False)
            task = served.info.task
            try:
                parsed = parse_hf(task, body)
            except InvalidRequestError as exc:
                raise HTTPError(422, str(exc)) from None
            key = cache_key(served, parsed)
            if use_cache and (cached := self.cache.get(key)) is not None:
                return JSONResponse(cached, headers={"x-cache": "hit"})
            result = await self.run(served, parsed, wait)
            payload = hf_response(task, parsed, result.results)
            if size <= MAX_CACHED_BODY:
                self.cache.put(key, payload)
            return JSONResponse(payload, headers=timing_headers(result))
        except HTTPError as exc:
            return hf_error(exc)

    async def cloudflare(self, request: Request) -> Response:
        """Cloudflare's envelope. Cloudflare has no lazy loading, so this route always waits for the model."""
        try:
            self.authorize(request)
            served = self.model(request.path_params["model_id"])
            if served.info.task != "text-classification":
                raise HTTPError(
                    400,
                    f"model {served.name} is a {served.info.task} model; this route takes text "
                    "classification models only",
                )
            body, size = await self.json_body(request)
            try:
                tc = CloudflareTextClassificationInput.from_dict(body).to_request()
            except InvalidRequestError as exc:
                raise HTTPError(422, str(exc)) from None
            items = [tc.inputs]
            parsed = Parsed(items, tc.parameters, 1, False, ("cloudflare", tuple(items), tc.parameters))
            key = cache_key(served, parsed)
            use_cache = header_flag(request, "x-use-cache", {}, "use_cache", True)
            if use_cache and (cached := self.cache.get(key)) is not None:
                return JSONResponse(cached, headers={"x-cache": "hit"})
            result = await self.run(served, parsed, wait=True)
            payload = {
                "result": [o.to_dict() for o in result.results[0].outputs],
                "success": True,
                "errors": [],
                "messages": [],
            }
            if size <= MAX_CACHED_BODY:
                self.cache.put(key, payload)
            return JSONResponse(payload, headers=timing_headers(result))
        except HTTPError as exc:
            code = 10000 if exc.status == 401 else exc.status  # 10000: Cloudflare's own code for auth errors
            envelope = {
                "result": None,
                "success": False,
                "errors": [{"code": code, "message": exc.message}],
                "messages": [],
            }
            return JSONResponse(envelope, status_code=exc.status, headers=error_headers(exc))


def cache_key(served: ServedModel, parsed: Parsed) -> bytes:
    """A digest, so the cache holds no request text; the repr of the frozen request dataclasses is deterministic."""
    return hashlib.sha256(repr((str(served.info.path), parsed.cache_key)).encode("utf-8", "surrogatepass")).digest()


def hf_error(exc: HTTPError) -> Response:
    return JSONResponse({"error": exc.message, **exc.extra}, status_code=exc.status, headers=error_headers(exc))


def error_headers(exc: HTTPError) -> dict[str, str]:
    if exc.status == 401:
        return {"www-authenticate": "Bearer"}
    if exc.status == 503:
        return {"retry-after": str(max(1, round(exc.extra.get("estimated_time", 1))))}
    return {}


def timing_headers(result: JobResult) -> dict[str, str]:
    """Like TEI's, in milliseconds; x-batch-size counts the requests that shared the model run."""
    return {
        "x-queue-time": f"{result.queue_time * 1000:.2f}",
        "x-compute-time": f"{result.compute_time * 1000:.2f}",
        "x-batch-size": str(result.batch_requests),
        "x-cache": "miss",
    }


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


def create_app(models: Sequence[ServedModel], config: ServerConfig | None = None) -> Starlette:
    return Server(models, config or ServerConfig()).app()


def cli(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="engine serve",
        description="Serve model directories over HTTP in the shapes of the Hugging Face Inference API "
        "(POST /models/ID) and Cloudflare Workers AI (POST /client/v4/accounts/ACCOUNT/ai/run/ID).",
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
    parser.add_argument("--preload", action="store_true", help="load every model at start-up instead of lazily")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads per model")
    parser.add_argument("--batch-tokens", type=int, default=batching.DEFAULT_BATCH_TOKENS)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests")
    parser.add_argument("--max-batch-inputs", type=int, default=128, help="inputs per model run; 1 = no batching")
    parser.add_argument("--max-queue", type=int, default=256, help="queued requests per model before 503")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY)
    parser.add_argument("--cache-size", type=int, default=1024, help="cached responses (0 = no cache)")
    parser.add_argument("--access-log", action="store_true")
    args = parser.parse_args(argv)
    for name in ("batch_wait_ms", "max_batch_inputs", "max_queue", "max_body_bytes", "cache_size"):
        if getattr(args, name) < (0 if name in ("batch_wait_ms", "cache_size") else 1):
            parser.error(f"--{name.replace('_', '-')} is out of range: {getattr(args, name)}")
    import uvicorn

    tokens = read_tokens(args.token_file) if args.token_file else ()
    policy = BatchPolicy(args.batch_wait_ms / 1000, args.max_batch_inputs, args.max_queue)
    models = build_models(
        args.model_dirs, args.alias, policy=policy, threads=args.threads, batch_tokens=args.batch_tokens
    )
    config = ServerConfig(tokens, args.max_body_bytes, args.cache_size, args.preload)
    for m in models:
        print(f"engine serve: {m.info.task} {m.info.path} as {', '.join(m.ids)}", file=sys.stderr)
    print(auth_notice(tokens, args.token_file, args.host, args.port), file=sys.stderr)
    uvicorn.run(create_app(models, config), host=args.host, port=args.port, access_log=args.access_log)
    return 0
