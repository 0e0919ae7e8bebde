"""engine serve's configuration, in one place: what `engine serve`'s flags set (engine.cli.serve)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_BODY = 1 << 20


@dataclass(frozen=True)
class ServerConfig:
    """`tokens` empty: no authentication (local use). `preload`: load and warm every model before listening
    (`engine serve` does, unless --lazy); otherwise a model loads on its first request. Times in seconds;
    `queue_timeout` None: a request waits in the queue as long as it takes (the queue bound still holds)."""

    tokens: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY
    cache_size: int = 1024
    preload: bool = False
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive: float = 5.0
    queue_timeout: float | None = None
    max_connections: int = 512
    shutdown_grace: float = 20.0
