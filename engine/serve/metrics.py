"""`GET /metrics` of engine serve: Prometheus counters, gauges and histograms, and the middleware that counts
requests by route and status. Imported by engine.serve.app (which checks the server extra)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.serve.models import ServedModel


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (several servers in one process stay apart).
    Also the workers' `events`: prometheus_client's metrics are thread-safe."""

    def __init__(self, models: Sequence[ServedModel]) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "engine_requests", "HTTP requests answered, by route and status", ["route", "status"], registry=r
        )
        self.rejections = Counter(
            "engine_rejections",
            "requests or connections refused or cut short, by reason: queue_full, too_large, queue_timeout, "
            "connections, header_timeout, body_timeout, client_gone",
            ["reason"],
            registry=r,
        )
        self.queue_inputs = Gauge("engine_queue_inputs", "model inputs waiting to run", ["model"], registry=r)
        self.queue_requests = Gauge(
            "engine_queue_requests", "requests waiting for inputs to run", ["model"], registry=r
        )
        self.waits = Histogram(
            "engine_queue_wait_seconds",
            "from a request's arrival in the queue to the first model run with its inputs",
            ["model"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.batch_inputs = Histogram(
            "engine_batch_inputs",
            "model inputs per model run",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.batch_requests = Histogram(
            "engine_batch_requests",
            "requests sharing one model run",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.inference = Histogram(
            "engine_inference_seconds",
            "duration of one model run",
            ["model"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.inputs = Counter("engine_inputs", "model inputs run", ["model"], registry=r)
        self.dropped_inputs = Counter(
            "engine_dropped_inputs", "model inputs never run because their client went away", ["model"], registry=r
        )
        self.connections = Gauge("engine_open_connections", "open HTTP connections", registry=r)
        for m in models:
            worker = m.worker
            self.queue_inputs.labels(m.name).set_function(functools.partial(getattr, worker, "queued_inputs"))
            self.queue_requests.labels(m.name).set_function(functools.partial(getattr, worker, "queued"))

    # WorkerEvents
    def model_run(self, model: str, inputs: int, requests: int, seconds: float) -> None:
        self.batch_inputs.labels(model).observe(inputs)
        self.batch_requests.labels(model).observe(requests)
        self.inference.labels(model).observe(seconds)
        self.inputs.labels(model).inc(inputs)

    def queue_wait(self, model: str, seconds: float) -> None:
        self.waits.labels(model).observe(seconds)

    def dropped(self, model: str, inputs: int) -> None:
        self.dropped_inputs.labels(model).inc(inputs)
        self.rejections.labels("client_gone").inc()

    def reject(self, reason: str) -> None:
        self.rejections.labels(reason).inc()


class CountRequests:
    """ASGI middleware: every answer counted by its route's path template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            route = scope.get("route")
            self.metrics.requests.labels(getattr(route, "path", "unmatched"), str(status[0])).inc()
