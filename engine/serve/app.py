"""`engine serve`: the Hugging Face Inference API and Cloudflare Workers AI on localhost (Starlette on uvicorn).

Code written against the hosted APIs runs unchanged but for the base URL. Each request is checked in this order:
auth (401) -> model id (404) -> body size (413) and deadline (408) -> JSON (400, deep nesting too) -> request
shape and parameters (422) -> result cache -> model state (503 with `estimated_time` while a model loads, unless
`x-wait-for-model: true`) -> bounded queue, counted in inputs (503 when full, 413 when a request alone is over
it) -> fair dynamic batching in the model's worker thread (engine.serve.worker) -> the optional queue deadline (503
with Retry-After). A client that goes away is noticed while its request waits (uvicorn's `http.disconnect`):
the request leaves the queue, its inputs are not run, and one line is logged.
The shapes are engine.serve.wire's (pure functions); this module only wires them to routes. With
`ServerConfig.preload` every model is loaded and warmed before the server accepts a connection (uvicorn runs
the lifespan start-up before it listens).

Hostile clients are held off by uvicorn's own settings (`uvicorn_config`): limit_concurrency caps connections below
the open-files limit (503 past it), timeout_keep_alive closes idle connections, timeout_graceful_shutdown bounds a
SIGTERM, h11_max_incomplete_event_size bounds the headers. uvicorn has no deadline for reading a request, so
`ReadDeadlines` (engine.serve.limits), a subclass of its h11 protocol, arms one with the same timers it uses for
keep-alive: the headers must arrive within `header_timeout` of the connection (or of the first byte of the next
request), the body within `body_timeout` of the headers (answered 408 by the route that reads it; the protocol
closes the connection a second later whoever reads it). `GET /metrics` gives Prometheus text: requests by route and
status, queue depth and wait, batch sizes, inference time, rejections, dropped work. Needs the `server` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from engine.errors import EngineError, Overloaded

try:
    import uvicorn  # noqa: F401  (checked here: engine.serve.limits runs it)
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
except ImportError as exc:  # engine.cli prints this instead of a traceback
    raise EngineError(
        "engine serve needs the server extra: pip install 'offline-textclf-engine[server]' "
        f"(starlette, uvicorn, prometheus-client; missing: {exc.name})"
    ) from exc
from engine.serve import wire as api
from engine.serve.config import DEFAULT_MAX_BODY, ServerConfig
from engine.serve.limits import connection_cap, raise_open_files_limit, uvicorn_config
from engine.serve.metrics import CountRequests, Metrics
from engine.serve.models import ResultCache, ServedModel
from engine.serve.wire import HTTPError, Parsed
from engine.serve.worker import Job, JobResult, State
from engine.tasks import registry
from engine.tasks.registry import TaskName

# what engine serve (engine/cli/serve.py) and embedders use: the app, and the server's configuration and limits
__all__ = [
    "DEFAULT_MAX_BODY",
    "ServerConfig",
    "connection_cap",
    "create_app",
    "raise_open_files_limit",
    "uvicorn_config",
]

MAX_CACHED_BODY = 64 << 10  # larger requests are not cached: the cache stays small

log = logging.getLogger("engine.serve")


class ClientGone(ClientDisconnect):
    """The client closed its connection; `when` says at which step (for the one log line)."""

    def __init__(self, when: str) -> None:
        super().__init__(when)
        self.when = when


class Server:
    """The routes, bound to the served models, the result cache and the configuration."""

    def __init__(self, models: Sequence[ServedModel], config: ServerConfig) -> None:
        self.models = list(models)
        self.by_id = {name: m for m in self.models for name in m.ids}
        self.config = config
        self.cache = ResultCache(config.cache_size)
        self._tokens = [t.encode("utf-8") for t in config.tokens]
        self.metrics = Metrics(self.models)
        for m in self.models:
            m.worker.events = self.metrics

    def app(self) -> Starlette:
        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
            Route("/models", self.list_models, methods=["GET"]),
            Route("/rerank", self.rerank, methods=["POST"]),
            Route("/v1/rerank", self.cohere_rerank, methods=["POST"]),
            Route("/v2/rerank", self.cohere_rerank, methods=["POST"]),
            Route("/models/{model_id:path}/rerank", self.rerank, methods=["POST"]),
            Route("/models/{model_id:path}", self.describe_model, methods=["GET"]),
            Route("/models/{model_id:path}", self.hf, methods=["POST"]),
            Route("/hf-inference/models/{model_id:path}", self.hf, methods=["POST"]),
            Route("/client/v4/accounts/{account_id}/ai/run/{model_id:path}", self.cloudflare, methods=["POST"]),
        ]
        app = Starlette(
            routes=routes,
            lifespan=self.lifespan,
            middleware=[Middleware(CountRequests, metrics=self.metrics)],
            exception_handlers={ClientDisconnect: self.client_gone},
        )
        app.state.metrics = self.metrics  # uvicorn_config hands them to the protocol
        return app

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        if self.config.preload:
            for m in self.models:
                m.worker.start()  # all load at once, each in its own thread
            for m in self.models:
                await asyncio.to_thread(m.worker.wait_loaded)
        yield
        for m in self.models:
            m.worker.stop()

    # checks shared by every route ---------------------------------------------------------------------------------

    def authorized(self, request: Request) -> bool:
        try:
            self.authorize(request)
        except HTTPError:
            return False
        return True

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
        """The parsed body and its size in bytes, read within the body deadline."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")

        async def read() -> tuple[bytes, int]:
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPError(413, f"request body is over the limit of {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks), size

        try:
            data, size = await asyncio.wait_for(read(), self.config.body_timeout)
        except asyncio.TimeoutError:
            self.metrics.reject("body_timeout")
            raise HTTPError(
                408, f"the request body did not arrive within {self.config.body_timeout:g} s; send it at once"
            ) from None
        except ClientDisconnect:
            raise ClientGone("while sending its request body") from None
        try:
            return json.loads(data), size
        except (ValueError, RecursionError) as exc:  # RecursionError: arrays or objects nested too deep
            reason = "nested too deep" if isinstance(exc, RecursionError) else str(exc)
            raise HTTPError(
                400, f'the body is not valid JSON ({reason}); send a JSON object such as {{"inputs": "some text"}}'
            ) from None

    async def run(self, request: Request, served: ServedModel, parsed: Parsed, wait: bool) -> JobResult:
        """Queue the request's inputs and wait for their results, for the client's disconnect, or for the queue
        deadline, whichever comes first."""
        worker = served.worker
        if worker.state is State.FAILED:
            raise HTTPError(500, f"model {served.name} failed to load: {worker.error}; fix it and restart the server")
        if worker.state is not State.READY:
            worker.start()
            if not wait:
                raise HTTPError(
                    503, f"Model {served.name} is currently loading", {"estimated_time": worker.estimated_time()}
                )
        job = Job(parsed.inputs, parsed.parameters, parsed.cost)
        try:
            result = asyncio.wrap_future(worker.submit(job))
        except EngineError as exc:
            self.metrics.reject("queue_full" if isinstance(exc, Overloaded) else "too_large")
            raise HTTPError.of(exc, retry_after=worker.retry_after()) from None
        gone = asyncio.ensure_future(disconnected(request))
        waiting: set[asyncio.Future[Any]] = {result, gone}
        try:
            done, _ = await asyncio.wait(waiting, timeout=self.config.queue_timeout, return_when="FIRST_COMPLETED")
            if not done and worker.withdraw(job):
                self.metrics.reject("queue_timeout")
                raise HTTPError.of(
                    Overloaded(
                        f"the request waited {self.config.queue_timeout:g} s in model {served.name}'s queue without "
                        "starting (--queue-timeout); retry later"
                    ),
                    retry_after=worker.retry_after(),
                )
            if not done:  # it has started: let it finish
                done, _ = await asyncio.wait(waiting, return_when="FIRST_COMPLETED")
            if result in done:
                try:
                    return result.result()
                except EngineError as exc:
                    raise HTTPError.of(exc) from None
            raise ClientGone("while its request waited for the model")
        finally:
            gone.cancel()
            if not result.done():  # the client went away, or this task was cancelled (shutdown): drop the work
                worker.drop(job)

    async def answer(
        self, request: Request, served: ServedModel, parsed: Parsed, size: int, use_cache: bool, wait: bool, shape: Any
    ) -> Response:
        """The model's results (cached before they are shaped, if the request was small) shaped by `shape`."""
        key = api.cache_key(str(served.info.path), parsed)
        ignored = {"x-ignored-fields": ", ".join(parsed.ignored)} if parsed.ignored else {}
        if use_cache and (cached := self.cache.get(key)) is not None:
            return JSONResponse(shape(cached), headers={"x-cache": "hit", **ignored})
        result = await self.run(request, served, parsed, wait)
        if size <= MAX_CACHED_BODY:
            self.cache.put(key, result.results)
        timing = api.timing_headers(result.queue_time, result.compute_time, result.batch_requests)
        return JSONResponse(shape(result.results), headers={**timing, **ignored})

    # routes ------------------------------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        """Liveness for anyone; each model's state (and so readiness) for callers allowed to see the models."""
        if not self.authorized(request):
            return JSONResponse({"status": "ok"})
        states = {m.name: m.worker.state.value for m in self.models}
        return JSONResponse({"status": "ok", "models": states})

    async def prometheus(self, request: Request) -> Response:
        """Prometheus text format; the same authentication as the model routes."""
        try:
            self.authorize(request)
        except HTTPError as exc:
            return hf_error(exc)
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def client_gone(self, request: Request, exc: Exception) -> Response:
        """One line per client that went away, instead of a traceback; the answer goes nowhere (499, as nginx
        counts it)."""
        when = exc.when if isinstance(exc, ClientGone) else "while sending its request"
        client = request.client
        who = f"{client.host}:{client.port}" if client else "a client"
        log.info("%s closed the connection %s: %s %s dropped", who, when, request.method, request.url.path)
        if not isinstance(exc, ClientGone) or "body" in when:
            self.metrics.reject("client_gone")
        return Response(status_code=499)

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
            options = api.request_options(body)
            use_cache = flag(request, "x-use-cache", options, "use_cache", True)
            wait = flag(request, "x-wait-for-model", options, "wait_for_model", False)
            task = registry.task_of(served.info)
            parsed = api.parse_hf(task, body, served.names)
            fmt = api.zero_shot_format(
                request.headers.get(api.ZERO_SHOT_FORMAT_HEADER), request.headers.get("user-agent"), parsed
            )
            return await self.answer(
                request,
                served,
                parsed,
                size,
                use_cache,
                wait,
                lambda results: api.hf_response(task, parsed, results, fmt),
            )
        except HTTPError as exc:
            return hf_error(exc)

    def reranker(self, model_id: str | None, route: str) -> ServedModel:
        """The named model, which must be a cross-encoder; unnamed, the only served cross-encoder."""
        if model_id is not None:
            served = self.model(model_id)
        else:
            rerankers = [m for m in self.models if is_cross_encoder(m)]
            if len(rerankers) > 1:  # a two-label classifier (sentiment) is not a reranker: prefer one-logit models
                rerankers = [m for m in rerankers if len(m.info.labels) == 1] or rerankers
            if len(rerankers) != 1:
                raise HTTPError(
                    400,
                    f"{route} needs exactly one served cross-encoder, found {len(rerankers)}; name one "
                    f"(ids: {sorted(self.by_id)})",
                )
            served = rerankers[0]
        if not is_cross_encoder(served):
            raise HTTPError(
                400,
                f"model {served.name} is a {served.info.task} model with {len(served.info.labels)} labels; "
                f"{route} takes cross-encoders (one relevance logit, or two)",
            )
        return served

    async def rerank(self, request: Request) -> Response:
        """TEI's /rerank, with TEI's error body and statuses (an extension: the HF API has no such task).
        `POST /rerank` takes the only served cross-encoder; with several models, name one: `POST /models/ID/rerank`."""
        try:
            self.authorize(request)
            served = self.reranker(request.path_params.get("model_id"), "POST /rerank")
            body, size = await self.json_body(request)
            use_cache = flag(request, "x-use-cache", {}, "use_cache", True)
            wait = flag(request, "x-wait-for-model", {}, "wait_for_model", False)
            parsed, texts, return_text = api.parse_rerank(body)
            return await self.answer(
                request,
                served,
                parsed,
                size,
                use_cache,
                wait,
                lambda scores: api.rerank_response(texts, return_text, scores),
            )
        except HTTPError as exc:
            payload, status = api.tei_error(exc)
            return JSONResponse(payload, status_code=status, headers=api.error_headers(exc))

    async def cohere_rerank(self, request: Request) -> Response:
        """Cohere's and Jina's `POST /v1/rerank` (and Cohere's /v2/rerank): the body's `model` names the
        cross-encoder, or the only one served is used."""
        try:
            self.authorize(request)
            body, size = await self.json_body(request)
            model_id = body.get("model") if isinstance(body, dict) else None
            served = self.reranker(model_id if isinstance(model_id, str) else None, "POST /v1/rerank")
            use_cache = flag(request, "x-use-cache", {}, "use_cache", True)
            wait = flag(request, "x-wait-for-model", {}, "wait_for_model", False)
            req = api.parse_cohere_rerank(body, served.names)
            return await self.answer(
                request,
                served,
                req.parsed,
                size,
                use_cache,
                wait,
                lambda scores: api.cohere_rerank_response(req, served.name, scores),
            )
        except HTTPError as exc:
            return JSONResponse(api.cohere_error(exc), status_code=exc.status, headers=api.error_headers(exc))

    async def cloudflare(self, request: Request) -> Response:
        """Cloudflare's envelope. Cloudflare has no lazy loading, so this route always waits for the model."""
        try:
            self.authorize(request)
            served = self.model(request.path_params["model_id"])
            if registry.task_of(served.info) is not TaskName.TEXT_CLASSIFICATION:
                raise HTTPError(
                    400,
                    f"model {served.name} is a {served.info.task} model; this route takes text "
                    "classification models only",
                )
            body, size = await self.json_body(request)
            parsed = api.parse_cloudflare(body)
            use_cache = flag(request, "x-use-cache", {}, "use_cache", True)
            return await self.answer(request, served, parsed, size, use_cache, True, api.cloudflare_response)
        except HTTPError as exc:
            return JSONResponse(api.cloudflare_error(exc), status_code=exc.status, headers=api.error_headers(exc))


def is_cross_encoder(served: ServedModel) -> bool:
    return registry.is_cross_encoder(served.info)


def flag(request: Request, header: str, options: dict[str, Any], option: str, default: bool) -> bool:
    return api.flag(request.headers.get(header), header, options, option, default)


def hf_error(exc: HTTPError) -> Response:
    return JSONResponse(api.hf_error(exc), status_code=exc.status, headers=api.error_headers(exc))


def create_app(models: Sequence[ServedModel], config: ServerConfig | None = None) -> Starlette:
    return Server(models, config or ServerConfig()).app()


async def disconnected(request: Request) -> None:
    """Returns once the client has gone: after the body, uvicorn's receive() waits for `http.disconnect`."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
