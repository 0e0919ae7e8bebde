"""`engine serve` against hostile clients and faults (issue 30), over real sockets on 127.0.0.1.

No wall-clock assertions: each test reads states and counters (the model's stats, GET /metrics, the order of
model runs). Waits are bounded polls that fail the test when the state never comes. A `Gate` around the real
model holds the worker inside a model run, so that what is queued behind it is known exactly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from engine import TextClassifier  # noqa: E402
from engine.serve.app import ServerConfig, create_app, uvicorn_config  # noqa: E402
from engine.serve.models import ServedModel, build_models, default_loader  # noqa: E402
from engine.serve.worker import BatchPolicy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "faults-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODEL = "distilbert-sst-2"
BOUND = 30.0  # seconds any state may take to come before a test fails


@pytest.fixture(scope="module")
def model_dir(exported: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    link = tmp_path_factory.mktemp("faults") / MODEL
    link.symlink_to(exported("bert", "fp32"), target_is_directory=True)
    return link


@pytest.fixture(scope="module")
def clf(model_dir: Path) -> TextClassifier:
    return TextClassifier.load(model_dir, threads=1)


class Gate:
    """The real model behind a gate: every model run's inputs are recorded, and `hold()` keeps the next run
    waiting inside `predict` until `release()`."""

    def __init__(self) -> None:
        self.runs: list[list[Any]] = []
        self.inside = threading.Event()
        self._open = threading.Event()
        self._open.set()

    def hold(self) -> None:
        self.inside.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def loader(self, info: Any) -> Any:
        load = default_loader(info, 1, 8192)
        gate = self

        class Gated:
            def __init__(self, model: Any) -> None:
                self.model = model

            def predict(self, inputs: Any, parameters: Any) -> Any:
                gate.inside.set()
                gate._open.wait(BOUND)
                gate.runs.append(list(inputs))
                return self.model.predict(inputs, parameters)

        return lambda: Gated(load())


@contextmanager
def serving(
    model_dir: Path, config: ServerConfig, policy: BatchPolicy | None = None, gate: Gate | None = None
) -> Iterator[tuple[str, ServedModel]]:
    """A preloaded server with uvicorn_config's settings on a free 127.0.0.1 port; yields (base URL, model).
    uvicorn's logging is left unconfigured, so its records reach caplog."""
    loader = gate.loader if gate else None
    models = build_models([model_dir], policy=policy or BatchPolicy(), threads=1, loader=loader)
    config = dataclasses.replace(config, preload=True)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(models, config)
    server = uvicorn.Server(uvicorn_config(app, config, log_level="warning", log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    until(lambda: server.started or not thread.is_alive(), "the server started")
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", models[0]
    finally:
        server.should_exit = True
        thread.join(BOUND)
        sock.close()


def until(predicate: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)


def metric(base: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{base}/metrics", headers=AUTH).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def raw(base: str, data: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port_of(base)), timeout=BOUND)
    if data:
        s.sendall(data)
    return s


def read_all(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails the test after BOUND seconds)."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def post_head(path: str, length: int | None, extra: str = "") -> bytes:
    size = f"content-length: {length}\r\n" if length is not None else "transfer-encoding: chunked\r\n"
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\n"
    return (head + size + extra + "\r\n").encode()


def body_of(inputs: list[str]) -> bytes:
    return json.dumps({"inputs": inputs}).encode()


def texts(n: int, tag: str) -> list[str]:
    return [f"{tag} {i} good movie" for i in range(n)]


def in_background(pool: ThreadPoolExecutor, base: str, inputs: list[str], **headers: str) -> Any:
    hdrs = {**AUTH, "x-use-cache": "false", **headers}
    return pool.submit(httpx.post, f"{base}/models/{MODEL}", json={"inputs": inputs}, headers=hdrs, timeout=BOUND * 2)


def blocked(base: str, served: ServedModel, gate: Gate, pool: ThreadPoolExecutor) -> Any:
    """A one-input request that holds the worker inside its model run."""
    gate.hold()
    blocker = in_background(pool, base, ["the blocker"])
    until(gate.inside.is_set, "the blocker's model run started")
    return blocker


# Slow and silent clients ------------------------------------------------------------------------------------------


def test_slow_headers_and_silent_connections_are_closed_with_408(model_dir: Path) -> None:
    config = ServerConfig(tokens=(TOKEN,), header_timeout=0.5)
    with serving(model_dir, config) as (base, _):
        dribblers = [raw(base, b"POST /models/x HTTP/1.1\r\nhost: x\r\ncontent-le") for _ in range(5)]
        silent = [raw(base) for _ in range(3)]
        for s in dribblers + silent:
            answer = read_all(s)
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert b'"error"' in answer
            s.close()
        assert metric(base, "engine_rejections_total", reason="header_timeout") == 8
        assert httpx.post(f"{base}/models/{MODEL}", json={"inputs": "fine"}, headers=AUTH).status_code == 200


def test_slow_short_and_endless_bodies_get_408_and_are_closed(model_dir: Path) -> None:
    config = ServerConfig(tokens=(TOKEN,), body_timeout=0.5)
    with serving(model_dir, config) as (base, _):
        short = raw(base, post_head(f"/models/{MODEL}", 100) + b'{"inputs": ')  # then silence
        endless = raw(base, post_head(f"/models/{MODEL}", None) + b"5\r\n[1, 2\r\n")  # a chunked body, no end
        for s in (short, endless):
            answer = read_all(s)
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert b"connection: close" in answer.lower()
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"].startswith("the request body did not arrive")
            s.close()
        # a route that never reads its body answers at once; the protocol still closes the endless upload
        health = raw(base, b"GET /health HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n")
        assert read_all(health).startswith(b"HTTP/1.1 200 ")
        health.close()
        assert metric(base, "engine_rejections_total", reason="body_timeout") == 2


def test_connections_past_the_cap_get_503_at_once(model_dir: Path) -> None:
    config = ServerConfig(tokens=(TOKEN,), max_connections=3, header_timeout=BOUND * 2)
    with serving(model_dir, config) as (base, _):
        idle = [raw(base) for _ in range(3)]
        until(lambda: len(idle) == 3, "connected")
        late = raw(base, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        answer = read_all(late)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"retry-after: 1" in answer
        late.close()
        for s in idle:
            s.close()
        ok: list[int] = []
        until(lambda: ok.append(httpx.get(f"{base}/health").status_code) or ok[-1] == 200, "served again")
        assert metric(base, "engine_rejections_total", reason="connections") >= 1


# Clients that go away ----------------------------------------------------------------------------------------------


def test_clients_that_leave_cost_one_log_line_and_no_work(model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="engine.serve")
    gate = Gate()
    config = ServerConfig(tokens=(TOKEN,), cache_size=0)
    with serving(model_dir, config, gate=gate) as (base, served), ThreadPoolExecutor(4) as pool:
        blocker = blocked(base, served, gate, pool)
        leavers = []
        for c in range(8):  # 400 inputs each, sent whole, then the socket is closed
            body = body_of(texts(400, f"leaver {c}"))
            leavers.append(raw(base, post_head(f"/models/{MODEL}", len(body)) + body))
        until(lambda: served.worker.queued == 8, "the 8 requests queued")
        for s in leavers:
            s.close()
        described = f"{base}/models/{MODEL}"
        until(lambda: httpx.get(described, headers=AUTH).json().get("dropped_requests") == 8, "8 requests dropped")
        assert served.worker.queued == 0
        assert served.worker.queued_inputs == 0
        halfway = []
        for _ in range(3):  # headers and part of the body, then gone
            halfway.append(raw(base, post_head(f"/models/{MODEL}", 1000) + b'{"inputs": ["a'))
        for s in halfway:
            s.close()
        until(lambda: sum("closed the connection" in r.getMessage() for r in caplog.records) == 11, "11 lines")
        gate.release()
        assert blocker.result().status_code == 200
        live = httpx.post(f"{base}/models/{MODEL}", json={"inputs": "still here"}, headers=AUTH)
        assert live.status_code == 200
        stats = httpx.get(described, headers=AUTH).json()
        assert stats["inputs"] == 2
        assert stats["dropped_inputs"] == 3200
        assert [len(run) for run in gate.runs] == [1, 1]
        assert metric(base, "engine_dropped_inputs_total", model=MODEL) == 3200
        assert metric(base, "engine_rejections_total", reason="client_gone") == 11
    messages = [r.getMessage() for r in caplog.records]
    assert sum("closed the connection" in m for m in messages) == 11
    assert not any("Exception in ASGI application" in m for m in messages)
    assert not any(r.exc_info for r in caplog.records)


# Fair and bounded --------------------------------------------------------------------------------------------------


def test_a_small_request_does_not_wait_for_a_big_neighbour(model_dir: Path, clf: TextClassifier) -> None:
    gate = Gate()
    config = ServerConfig(tokens=(TOKEN,), cache_size=0)
    policy = BatchPolicy(max_batch_inputs=16, max_queue=10_000)
    with serving(model_dir, config, policy, gate) as (base, served), ThreadPoolExecutor(4) as pool:
        blocker = blocked(base, served, gate, pool)
        big_texts = texts(2000, "big")
        big = in_background(pool, base, big_texts)
        until(lambda: served.worker.queued == 1, "the big request queued")
        small = in_background(pool, base, ["the small one"])
        until(lambda: served.worker.queued == 2, "the small request queued")
        gate.release()
        assert blocker.result().status_code == small.result().status_code == big.result().status_code == 200
    runs = gate.runs[1:]  # after the blocker's
    first = next(i for i, run in enumerate(runs) if "the small one" in run)
    assert sum(len(run) for run in runs[:first]) <= 2 * policy.max_batch_inputs
    assert max(len(run) for run in runs) <= policy.max_batch_inputs
    want = [[o.to_dict() for o in p] for p in clf(big_texts[:50], top_k=None)]
    got = big.result().json()[:50]
    assert [[x["label"] for x in g] for g in got] == [[x["label"] for x in w] for w in want]
    assert [x["score"] for g in got for x in g] == pytest.approx([x["score"] for w in want for x in w], abs=1e-6)


def test_the_queue_bound_counts_inputs_not_requests(model_dir: Path) -> None:
    gate = Gate()
    config = ServerConfig(tokens=(TOKEN,), cache_size=0)
    with (
        serving(model_dir, config, BatchPolicy(max_queue=100), gate) as (base, served),
        ThreadPoolExecutor(4) as pool,
    ):
        too_big = httpx.post(f"{base}/models/{MODEL}", json={"inputs": texts(150, "x")}, headers=AUTH)
        assert too_big.status_code == 413
        assert "--max-queue" in too_big.json()["error"]
        blocker = blocked(base, served, gate, pool)
        first = in_background(pool, base, texts(60, "first"))
        until(lambda: served.worker.queued_inputs == 60, "60 inputs queued")
        second = httpx.post(f"{base}/models/{MODEL}", json={"inputs": texts(60, "second")}, headers=AUTH)
        assert second.status_code == 503
        assert int(second.headers["retry-after"]) >= 1
        assert metric(base, "engine_queue_inputs", model=MODEL) == 60
        gate.release()
        assert blocker.result().status_code == first.result().status_code == 200
        assert metric(base, "engine_rejections_total", reason="too_large") == 1
        assert metric(base, "engine_rejections_total", reason="queue_full") == 1


def test_the_queue_deadline_answers_503_with_retry_after(model_dir: Path) -> None:
    gate = Gate()
    config = ServerConfig(tokens=(TOKEN,), cache_size=0, queue_timeout=0.3)
    with serving(model_dir, config, gate=gate) as (base, served), ThreadPoolExecutor(4) as pool:
        blocker = blocked(base, served, gate, pool)
        late = httpx.post(f"{base}/models/{MODEL}", json={"inputs": "waits too long"}, headers=AUTH, timeout=BOUND)
        assert late.status_code == 503
        assert "--queue-timeout" in late.json()["error"]
        assert int(late.headers["retry-after"]) >= 1
        assert served.worker.queued == 0
        gate.release()
        assert blocker.result().status_code == 200
        assert metric(base, "engine_rejections_total", reason="queue_timeout") == 1
    assert all("waits too long" not in run for run in gate.runs)  # withdrawn: never run


# Bodies that break the parser --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [f"/models/{MODEL}", "/rerank", "/v1/rerank", f"/client/v4/accounts/a/ai/run/{MODEL}"])
def test_deeply_nested_json_is_a_400_with_the_json_error_body(model_dir: Path, path: str) -> None:
    config = ServerConfig(tokens=(TOKEN,))
    with serving(model_dir, config) as (base, _):
        for depth in (100_000, 200_000):
            r = httpx.post(f"{base}{path}", content=b"[" * depth + b"]" * depth, headers=AUTH)
            assert r.status_code == 400, r.text
            assert "nested too deep" in json.dumps(r.json())
        broken = httpx.post(f"{base}{path}", content=b'{"inputs": [', headers=AUTH)
        assert broken.status_code == 400
        assert broken.headers["content-type"] == "application/json"


# Metrics ------------------------------------------------------------------------------------------------------------


def test_metrics_in_prometheus_text_behind_the_same_auth(model_dir: Path) -> None:
    config = ServerConfig(tokens=(TOKEN,), cache_size=0)
    with serving(model_dir, config) as (base, _):
        assert httpx.get(f"{base}/metrics").status_code == 401
        for i in range(3):
            assert httpx.post(f"{base}/models/{MODEL}", json={"inputs": [f"a {i}", "b"]}, headers=AUTH).is_success
        assert httpx.post(f"{base}/models/nobody", json={"inputs": "x"}, headers=AUTH).status_code == 404
        r = httpx.get(f"{base}/metrics", headers=AUTH)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        route = "/models/{model_id:path}"
        assert metric(base, "engine_requests_total", route=route, status="200") == 3
        assert metric(base, "engine_requests_total", route=route, status="404") == 1
        assert metric(base, "engine_inputs_total", model=MODEL) == 6
        assert metric(base, "engine_batch_inputs_sum", model=MODEL) == 6
        assert metric(base, "engine_queue_wait_seconds_count", model=MODEL) == 3
        assert metric(base, "engine_inference_seconds_count", model=MODEL) == metric(
            base, "engine_batch_inputs_count", model=MODEL
        )
        assert metric(base, "engine_open_connections") >= 1


# SIGTERM and the open-files limit, with `engine serve` itself --------------------------------------------------------


def lower_open_files() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads /proc (Linux)")
def test_sigterm_with_a_client_stalled_mid_body_exits_after_the_grace(model_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "engine.cli", "serve", str(model_dir), "--port", str(port), "--threads", "1",
           "--shutdown-grace", "1", "--body-timeout", "600", "--header-timeout", "600"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, preexec_fn=lower_open_files)
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/health").status_code == 200
            except httpx.TransportError:
                return proc.poll() is not None

        until(up, "engine serve listening")
        assert proc.poll() is None
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        soft, hard = next(line for line in limits.splitlines() if line.startswith("Max open files")).split()[3:5]
        assert soft == hard  # raised from 256 at start
        stalled = raw(base, post_head(f"/models/{MODEL}", 1000) + b'{"inputs": ["half')
        proc.send_signal(signal.SIGTERM)
        proc.wait(BOUND * 2)
        stalled.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=BOUND)
    assert "Traceback" not in err


def test_share_out_is_round_robin_and_fills_the_budget() -> None:
    from engine.serve.worker import Job, share_out

    def sizes(*jobs: Job, budget: int = 128) -> list[tuple[int, int]]:
        return [(len(job.inputs), b - a) for job, a, b in share_out(jobs, budget)]

    assert sizes(Job(list(range(2000)), "p", 2000), Job(["small"], "p", 1), budget=16) == [(2000, 15), (1, 1)]
    assert sizes(Job(list(range(100)), "p", 100), Job([1, 2, 3], "p", 3), Job(list(range(50)), "p", 50)) == [
        (100, 75),
        (3, 3),
        (50, 50),
    ]
    assert sizes(Job([1, 2, 3], "p", 600), Job(list(range(10)), "p", 50)) == [(3, 1)]  # over budget: alone, at the head
    assert sizes(Job(list(range(10)), "p", 50), Job([1, 2, 3], "p", 600)) == [(10, 10)]  # 5 each: 50 of 128
