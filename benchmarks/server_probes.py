"""Hostile clients against a real `engine serve` (issue 30): how long a small request waits beside them, and the
server's peak memory.

Each probe starts a fresh `engine serve MODEL_DIR --threads 1 --cache-size 0` subprocess on a free 127.0.0.1 port
(so its peak RSS, VmHWM, is the probe's own), then:

- slow: 300 connections dribble request headers at 1 byte/s for 15 s; small requests are sent meanwhile.
  Also counted: the slow connections the server closed, and the RSS once they are gone.
- disconnect: 8 clients each send 400 texts and close the socket; a small request follows.
- big: one request of 4,000 short texts (under the default --max-queue, so both versions run it), then a small
  request 1 s later.
- flood: 24 concurrent requests of 1,500 texts, then a small request 1 s later (client timeout 60 s).
- flood-large: the same with 18,000 texts a request (~1 MB bodies; over the default --max-queue since issue 30).

The small request's wait is its round trip. Every probe is bounded (connections, inputs, a 60 s client timeout).
`--engine-root` runs the server from another checkout, e.g. the code before issue 30:

    git worktree add /tmp/old 3828533
    python -m benchmarks.server_probes MODEL_DIR --engine-root /tmp/old
    python -m benchmarks.server_probes MODEL_DIR

`python -m benchmarks.serve_load --make-minilm` shows how to build a MiniLM model without a download (the figures
in benchmarks/results/server_probes.md used its encoder at fp32). Prints one markdown table row per probe.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
CLIENT_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """`engine serve` in a subprocess, run from `root` (its code, the current interpreter)."""

    def __init__(self, model_dir: str, root: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "engine.cli", "serve", model_dir, "--port", str(self.port)]
        cmd += ["--threads", "1", "--cache-size", "0"]
        env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        self.log = open(os.devnull, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stderr=self.log)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                models = httpx.get(f"{self.base}/models").json()
                if all(m["state"] == "ready" for m in models):
                    self.model = models[0]["id"]
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("engine serve exited")
            time.sleep(0.1)
        raise RuntimeError("engine serve did not get ready")

    def memory_mb(self, field: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()


def texts(n: int, tag: str) -> list[str]:
    return [f"{tag} {i}: the film was good but the plot was thin" for i in range(n)]


async def timed_post(http: httpx.AsyncClient, url: str, inputs: list[str]) -> tuple[float, int]:
    """(seconds, status); status 0 when the client gave up or the connection failed."""
    start = time.perf_counter()
    try:
        r = await http.post(url, json={"inputs": inputs}, timeout=CLIENT_TIMEOUT)
        status = r.status_code
    except httpx.HTTPError:
        status = 0
    return time.perf_counter() - start, status


def wait_figure(waits: list[tuple[float, int]]) -> str:
    ok = [w for w, status in waits if status == 200]
    if not ok:
        statuses = sorted({status for _, status in waits})
        return f"no answer 200 ({', '.join(map(str, statuses))}; {max(w for w, _ in waits):.1f} s)"
    return f"{statistics.median(ok):.2f} s" + (
        f" ({len(ok)}/{len(waits)} answered 200)" if len(ok) < len(waits) else ""
    )


async def probe_slow(served: Served) -> dict[str, Any]:
    url = f"{served.base}/models/{served.model}"
    head = f"POST /models/{served.model} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n".encode()
    closed = 0

    async def dribble() -> None:
        nonlocal closed
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        except OSError:
            closed += 1
            return
        try:
            for i in range(15):
                writer.write(head[i : i + 1])
                await writer.drain()
                try:
                    await asyncio.wait_for(reader.read(1), 1.0)
                except asyncio.TimeoutError:
                    continue  # still open: one more byte
                closed += 1  # the server answered (408, 503) or closed it
                return
        except OSError:
            closed += 1
        finally:
            writer.close()

    async with httpx.AsyncClient() as http:
        slow = [asyncio.create_task(dribble()) for _ in range(300)]
        await asyncio.sleep(2)
        waits = []
        for i in range(8):
            waits.append(await timed_post(http, url, [f"small {i}"]))
            await asyncio.sleep(1)
        await asyncio.gather(*slow)
        await asyncio.sleep(2)
        after = served.memory_mb("VmRSS")
    return {
        "wait": wait_figure(waits),
        "note": f"{closed}/300 slow connections closed by the server; RSS after: {after:.0f} MB",
    }


async def probe_disconnect(served: Served) -> dict[str, Any]:
    url = f"{served.base}/models/{served.model}"

    async def leave(c: int) -> None:
        body = json.dumps({"inputs": texts(400, f"leaver {c}")}).encode()
        head = (
            f"POST /models/{served.model} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"x-use-cache: false\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode()
        _reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(head + body)
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()

    await asyncio.gather(*(leave(c) for c in range(8)))
    async with httpx.AsyncClient() as http:
        waits = [await timed_post(http, url, ["the live one"])]
        inputs = httpx.get(f"{served.base}/models/{served.model}").json().get("inputs")
    return {"wait": wait_figure(waits), "note": f"inputs run by the model: {inputs} of 3,201"}


async def probe_big(served: Served) -> dict[str, Any]:
    url = f"{served.base}/models/{served.model}"
    async with httpx.AsyncClient() as http:
        big = asyncio.create_task(timed_post(http, url, texts(4000, "big")))
        await asyncio.sleep(1)
        small = await timed_post(http, url, ["the small one"])
        big_wait, big_status = await big
    return {"wait": wait_figure([small]), "note": f"the big request: {big_status} in {big_wait:.1f} s"}


async def probe_flood(served: Served, inputs: int = 1500) -> dict[str, Any]:
    url = f"{served.base}/models/{served.model}"
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as http:
        flood = [asyncio.create_task(timed_post(http, url, texts(inputs, f"flood {c}"))) for c in range(24)]
        await asyncio.sleep(1)
        small = await timed_post(http, url, ["the small one"])
        results = await asyncio.gather(*flood)
    statuses: dict[int, int] = {}
    for _, status in results:
        statuses[status] = statuses.get(status, 0) + 1
    answered = ", ".join(f"{n}x {s or 'no answer'}" for s, n in sorted(statuses.items()))
    return {"wait": wait_figure([small]), "note": f"the 24 large requests: {answered}"}


async def probe_flood_large(served: Served) -> dict[str, Any]:
    return await probe_flood(served, 18_000)  # ~1 MB bodies (just under the limit), as in the flood


PROBES = {
    "slow": probe_slow,
    "disconnect": probe_disconnect,
    "big": probe_big,
    "flood": probe_flood,
    "flood-large": probe_flood_large,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--engine-root", type=Path, default=ROOT, help="checkout whose engine serves (default: this)")
    parser.add_argument("--probes", nargs="+", choices=list(PROBES), default=list(PROBES))
    args = parser.parse_args()
    label = subprocess.run(
        ["git", "-C", str(args.engine_root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print("| probe | code | small request's wait | peak RSS | notes |\n|---|---|---|---|---|")
    for name in args.probes:
        served = Served(args.model_dir, args.engine_root.resolve())
        try:
            start_rss = served.memory_mb("VmRSS")
            row = asyncio.run(PROBES[name](served))
            peak = served.memory_mb("VmHWM")
        finally:
            served.stop()
        print(f"| {name} | {label} | {row['wait']} | {start_rss:.0f} -> {peak:.0f} MB | {row['note']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
