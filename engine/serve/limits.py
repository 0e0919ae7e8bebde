"""engine serve against hostile clients: uvicorn's own limits (connections, keep-alive, graceful shutdown, header
size) and `ReadDeadlines`, its h11 protocol with deadlines for reading a request (see engine.serve.app's doc).
Imported by engine.serve.app (which checks the server extra)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

import h11
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from engine.serve.config import ServerConfig
    from engine.serve.metrics import Metrics

log = logging.getLogger("engine.serve")

MAX_HEADER_BYTES = 16 << 10  # h11's own default, made explicit: larger headers get uvicorn's 400


FD_RESERVE = 64  # open files kept for everything but connections: models, logs, the listener, the event loop


BACKSTOP = 1.0  # seconds after the body deadline at which the protocol closes a connection nobody answered


class ReadDeadlines(H11Protocol):
    """uvicorn's h11 protocol with a deadline for reading each request, armed with the event loop timers that
    uvicorn uses for keep-alive. uvicorn arms its keep-alive timer only after a response, so a connection that
    sends nothing, or dribbles its headers or body, would hold its socket and memory for ever. Here the headers
    must arrive within `header_timeout` (408, then the connection is closed), the body within `body_timeout` of
    them (the route reading it answers 408; the connection is closed `BACKSTOP` seconds later whatever the app
    did); between requests uvicorn's keep-alive timer applies. A connection past uvicorn's limit_concurrency is
    refused with 503 as it opens, so the sockets of slow clients never reach the open-files limit (uvicorn
    itself would refuse only once the headers had arrived)."""

    header_timeout = 10.0
    body_timeout = 30.0
    metrics: Metrics | None = None

    def connection_made(self, transport: Any) -> None:
        self._timer: asyncio.TimerHandle | None = None
        self._phase = ""
        self._refused = False
        super().connection_made(transport)
        self._count()
        if self.limit_concurrency is not None and len(self.connections) > self.limit_concurrency:
            self._reject("connections", 503, "Service Unavailable", "too many connections; retry shortly")
            return
        self._arm("headers", self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        self._count()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered already: drop it
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def _count(self) -> None:
        if self.metrics is not None:
            self.metrics.connections.set(len(self.connections))

    def _follow(self) -> None:
        """Arm the timer of the phase the client is in: headers, body, or none (answered, or idle)."""
        if self.transport.is_closing() or self._refused:
            self._disarm()
            return
        state = self.conn.their_state
        if state is h11.IDLE and self.timeout_keep_alive_task is None:
            if self._phase != "headers":
                self._arm("headers", self.header_timeout)
        elif state is h11.SEND_BODY:
            if self._phase != "body":
                self._arm("body", self.body_timeout + BACKSTOP)
        else:
            self._disarm()

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._timer = self.loop.call_later(seconds, self._late)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._phase = None, ""

    def _late(self) -> None:
        phase, self._timer, self._phase = self._phase, None, ""
        if self.transport.is_closing() or self._refused:
            return
        if phase == "headers":
            message = f"the request headers did not arrive within {self.header_timeout:g} s"
            self._reject("header_timeout", 408, "Request Timeout", message)
        elif self.cycle is not None and not self.cycle.response_started:  # nobody answered: the backstop
            if self.metrics is not None:
                self.metrics.reject("body_timeout")
            self.transport.close()
        else:  # answered (408, 413...) while the client still sends its body
            self.transport.close()

    def _reject(self, reason: str, status: int, phrase: str, message: str) -> None:
        """Answer before any request was read (h11 cannot: it has no request to answer). The answer is followed
        by a half-close, and whatever the client still sends is read and dropped until it closes too (at most
        BACKSTOP seconds): closing at once would reset the connection and lose the answer."""
        if self.metrics is not None:
            self.metrics.reject(reason)
        body = json.dumps({"error": message}).encode()
        headers = [f"HTTP/1.1 {status} {phrase}", "content-type: application/json", f"content-length: {len(body)}"]
        headers += ["retry-after: 1"] if status == 503 else []
        head = "\r\n".join([*headers, "connection: close", "", ""])
        self._refused = True
        self.transport.write(head.encode() + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(BACKSTOP, self.transport.close)
        else:
            self.transport.close()


def raise_open_files_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each connection is an open file); the soft limit now in
    force, or None where there is no such limit (Windows) or it is unlimited."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft == resource.RLIM_INFINITY:
        return None
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return int(soft)


def connection_cap(requested: int, open_files: int | None) -> int:
    """--max-connections, lowered to stay FD_RESERVE below the open-files limit."""
    if open_files is None:
        return requested
    return max(1, min(requested, open_files - FD_RESERVE))


def uvicorn_config(app: Starlette, config: ServerConfig, **options: Any) -> uvicorn.Config:
    """uvicorn's settings for `config`, with ReadDeadlines as the HTTP protocol; `options` go to uvicorn.Config
    (host, port, log_level, access_log...)."""
    protocol = type(
        "ReadDeadlines",
        (ReadDeadlines,),
        {"header_timeout": config.header_timeout, "body_timeout": config.body_timeout, "metrics": app.state.metrics},
    )
    return uvicorn.Config(
        app,
        http=protocol,
        lifespan="on",
        limit_concurrency=config.max_connections,
        timeout_keep_alive=config.keep_alive,  # type: ignore[arg-type]  # a float works: it goes to call_later
        timeout_graceful_shutdown=config.shutdown_grace,  # type: ignore[arg-type]
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        **options,
    )
