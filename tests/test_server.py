"""`engine serve` over real HTTP on 127.0.0.1: the hosted APIs' clients and snippets against a local server.

Servers run in a background thread (uvicorn.Server on a socket bound to a free loopback port). Expected results
always come from the in-process API on the same model directory.
"""

from __future__ import annotations

import json
import socket
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

from engine import TextClassifier, ZeroShotClassifier  # noqa: E402
from engine.serve.app import ServerConfig, create_app  # noqa: E402
from engine.serve.models import build_models, default_loader  # noqa: E402
from engine.serve.worker import BatchPolicy  # noqa: E402

TOKEN = "hf_local_test_token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CF_ID = "@cf/huggingface/distilbert-sst-2-int8"
LABELS = ["refund", "legal", "faq"]


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run `app` on a free 127.0.0.1 port in a thread; yields the base URL and stops the server afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started or not thread.is_alive():
            break
        time.sleep(0.01)
    if not server.started:
        raise RuntimeError("the test server did not start")
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def named(tmp: Path, name: str, model_dir: Path) -> Path:
    """The exported fixtures are all called `model`: give each the directory name a user would."""
    link = tmp / name
    link.symlink_to(model_dir, target_is_directory=True)
    return link


@pytest.fixture(scope="module")
def dirs(exported: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("served")
    return {
        "tc": named(tmp, "distilbert-sst-2", exported("bert", "fp32")),
        "zs": named(tmp, "bart-large-mnli", exported("bert-nli", "fp32")),
    }


@pytest.fixture(scope="module")
def clf(dirs: dict[str, Path]) -> TextClassifier:
    return TextClassifier.load(dirs["tc"])


@pytest.fixture(scope="module")
def zs(dirs: dict[str, Path]) -> ZeroShotClassifier:
    return ZeroShotClassifier.load(dirs["zs"])


@pytest.fixture(scope="module")
def url(dirs: dict[str, Path]) -> Iterator[str]:
    """The main server: both models preloaded, a token configured, a small body limit, batching wait 20 ms."""
    models = build_models(
        [dirs["tc"], dirs["zs"]], [(CF_ID, "distilbert-sst-2")], policy=BatchPolicy(batch_wait=0.02), threads=1
    )
    config = ServerConfig(tokens=("another-token", TOKEN), max_body_bytes=16384, preload=True)
    with serving(create_app(models, config)) as base:
        for _ in range(500):  # preloading runs in the background
            if all(m["state"] == "ready" for m in httpx.get(f"{base}/models", headers=AUTH).json()):
                break
            time.sleep(0.02)
        yield base


def stats(url: str, model_id: str) -> dict[str, Any]:
    out: dict[str, Any] = httpx.get(f"{url}/models/{model_id}", headers=AUTH).json()
    return out


def as_json(outputs: Any) -> Any:
    return json.loads(json.dumps([o.to_dict() for o in outputs]))


def close(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert [g["score"] for g in got] == pytest.approx([w["score"] for w in want], abs=1e-6)


# The hosted APIs' own clients ------------------------------------------------------------------------------------


@pytest.fixture
def hub_client_on_loopback() -> Iterator[None]:
    """huggingface_hub's shared HTTP client refuses every URL under HF_HUB_OFFLINE=1 (its request hook raises
    OfflineModeIsEnabled, a local URL included): give it a client without that hook that reaches plain http on
    127.0.0.1 only, then put the default back."""
    hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub.utils import _http

    assert hub.constants.is_offline_mode()  # what this fixture exists for: the tests run offline
    http = getattr(_http, "httpx2", None) or _http.httpx  # the HTTP library of hub 2.x, or of 1.x

    class LoopbackOnly(http.HTTPTransport):  # type: ignore[misc, name-defined]
        def handle_request(self, request: Any) -> Any:
            if not str(request.url).startswith("http://127.0.0.1:"):
                raise RuntimeError(f"test tried to reach {request.url}")
            return super().handle_request(request)

    hub.set_client_factory(lambda: http.Client(transport=LoopbackOnly(), follow_redirects=True, timeout=None))
    yield
    hub.set_client_factory(_http.default_client_factory)


def test_inference_client_text_classification(url: str, clf: TextClassifier, hub_client_on_loopback: None) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=f"{url}/models/distilbert-sst-2", token=TOKEN)
    text = "I like you. I love you"
    got = client.text_classification(text)  # the hosted API's default: every label
    close([{"label": o.label, "score": o.score} for o in got], as_json(clf(text, top_k=None)))
    assert len(got) == 2
    top = client.text_classification(text, top_k=1, function_to_apply="sigmoid")
    close([{"label": o.label, "score": o.score} for o in top], as_json(clf(text, function_to_apply="sigmoid")))
    via_base_url = InferenceClient(base_url=f"{url}/models/{CF_ID}", token=TOKEN).text_classification(text)
    assert via_base_url == got
    with pytest.raises(Exception, match="401"):
        InferenceClient(model=f"{url}/models/distilbert-sst-2", token="wrong").text_classification(text)


def test_inference_client_zero_shot(url: str, zs: ZeroShotClassifier, hub_client_on_loopback: None) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=f"{url}/models/bart-large-mnli", token=TOKEN)
    text = "I want my money back for this broken phone"
    for kwargs in ({}, {"multi_label": True, "hypothesis_template": "This text is about {}."}):
        got = client.zero_shot_classification(text, LABELS, **kwargs)  # type: ignore[arg-type]
        close([{"label": o.label, "score": o.score} for o in got], as_json(zs(text, LABELS, **kwargs)))


# The seeds' snippets, as the raw HTTP they send -------------------------------------------------------------------

SNIPPETS = {
    # curl "$URL" -X POST -d '{"inputs": "..."}' -H 'Content-Type: application/json' -H "Authorization: Bearer $T"
    "curl": (
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n"
        "Authorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{body}",
        '{{"inputs": "{text}"}}',
    ),
    # the same without -H 'Content-Type': curl -d then says form-urlencoded
    "curl-no-content-type": (
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n"
        "Authorization: Bearer {token}\r\nContent-Length: {length}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n{body}",
        '{{"inputs": "{text}"}}',
    ),
    # requests.post(API_URL, headers={"Authorization": f"Bearer {T}"}, json={"inputs": "..."}).json()
    "python-requests": (
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: python-requests/2.32.3\r\n"
        "Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\nAuthorization: Bearer {token}\r\n"
        "Content-Length: {length}\r\nContent-Type: application/json\r\n\r\n{body}",
        '{{"inputs": "{text}"}}',
    ),
    # fetch(URL, {headers: {Authorization: `Bearer ${T}`, "Content-Type": "application/json"}, method: "POST",
    #             body: JSON.stringify({inputs: "..."})})   (Node's fetch)
    "js-fetch": (
        "POST {path} HTTP/1.1\r\nhost: {host}\r\nconnection: keep-alive\r\nauthorization: Bearer {token}\r\n"
        "content-type: application/json\r\naccept: */*\r\naccept-language: *\r\nsec-fetch-mode: cors\r\n"
        "user-agent: node\r\naccept-encoding: gzip, deflate\r\ncontent-length: {length}\r\n\r\n{body}",
        '{{"inputs":"{text}"}}',
    ),
    # the older fetch snippet without a Content-Type: a string body is sent as text/plain
    "js-fetch-text-plain": (
        "POST {path} HTTP/1.1\r\nhost: {host}\r\nconnection: keep-alive\r\nauthorization: Bearer {token}\r\n"
        "content-type: text/plain;charset=UTF-8\r\naccept: */*\r\nuser-agent: node\r\ncontent-length: {length}"
        "\r\n\r\n{body}",
        '{{"inputs":"{text}"}}',
    ),
}


def raw_post(url: str, template: str, path: str, body: str) -> tuple[int, dict[str, str], Any]:
    """Send exactly these bytes; read one HTTP/1.1 response (Content-Length framed)."""
    host = url.removeprefix("http://")
    data = body.encode("utf-8")
    head = template.split("{body}")[0].format(path=path, host=host, token=TOKEN, length=len(data))
    with socket.create_connection(("127.0.0.1", int(host.split(":")[1])), timeout=30) as conn:
        conn.sendall(head.encode("latin-1") + data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += conn.recv(65536)
        header_bytes, rest = buf.split(b"\r\n\r\n", 1)
        lines = header_bytes.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        while len(rest) < int(headers["content-length"]):
            rest += conn.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(rest)


@pytest.mark.parametrize("snippet", sorted(SNIPPETS))
def test_seed_snippets(url: str, clf: TextClassifier, snippet: str) -> None:
    template, body = SNIPPETS[snippet]
    text = f"I like you. I love you ({snippet})"
    status, headers, got = raw_post(url, template, "/models/distilbert-sst-2", body.format(text=text))
    assert status == 200, got
    assert headers["content-type"] == "application/json"
    assert len(got) == 1  # one input -> [[{label, score}, ...]]
    close(got[0], as_json(clf(text, top_k=None)))


def test_hf_shapes_pairs_lists_and_hub_ids(url: str, clf: TextClassifier, zs: ZeroShotClassifier) -> None:
    pair = {"text": "What is Paris?", "text_pair": "Paris is the capital of France"}
    r = httpx.post(f"{url}/hf-inference/models/distilbert-sst-2", json={"inputs": [pair, "plain"]}, headers=AUTH)
    assert r.status_code == 200
    want = clf([pair, "plain"], top_k=None)
    assert len(r.json()) == 2
    for got, expected in zip(r.json(), want):
        close(got, as_json(expected))
    r = httpx.post(f"{url}/models/{CF_ID}", json={"inputs": pair, "parameters": {"top_k": 1}}, headers=AUTH)
    close(r.json()[0], as_json(clf(pair, top_k=1)))
    # zero-shot: the older spec shape, a list of texts, answered in the pipeline's {sequence, labels, scores}
    texts = ["refund please", "see you in court"]
    old = {"inputs": {"text": texts[0], "candidateLabels": LABELS}, "parameters": {"multiLabel": True}}
    r = httpx.post(f"{url}/models/bart-large-mnli", json=old, headers=AUTH)
    expected = zs.pipeline(texts[0], LABELS, multi_label=True)
    assert r.json()["sequence"] == texts[0]
    assert r.json()["labels"] == expected.labels
    assert r.json()["scores"] == pytest.approx(expected.scores, abs=1e-6)  # type: ignore[union-attr]
    # the spec's shape by default: one [{label, score}] per input; the pipeline's shape on request (header)
    body = {"inputs": texts, "parameters": {"candidate_labels": "refund, legal"}}
    r = httpx.post(f"{url}/models/bart-large-mnli", json=body, headers=AUTH)
    assert [[o["label"] for o in answer] for answer in r.json()] == [
        p.labels for p in zs.pipeline(texts, "refund, legal")
    ]  # type: ignore[union-attr]
    r = httpx.post(f"{url}/models/bart-large-mnli", json=body, headers={**AUTH, "x-zero-shot-format": "pipeline"})
    assert [d["sequence"] for d in r.json()] == texts
    assert [d["labels"] for d in r.json()] == [p.labels for p in zs.pipeline(texts, "refund, legal")]  # type: ignore[union-attr]


def test_zero_shot_answer_rule(url: str, zs: ZeroShotClassifier) -> None:
    """README, "Zero-shot answers": header, then the older request shape, then a huggingface_hub 0.x agent."""
    text, path = "my parcel never came", f"{url}/models/bart-large-mnli"
    body = {"inputs": text, "parameters": {"candidate_labels": LABELS}}
    want = [o.to_dict() for o in zs(text, LABELS)]
    spec = httpx.post(path, json=body, headers=AUTH).json()
    close(spec, want)
    close(httpx.post(path, json={**body, "inputs": [text]}, headers=AUTH).json(), want)  # a list of one: one list
    two = httpx.post(path, json={**body, "inputs": [text, text]}, headers=AUTH).json()
    assert len(two) == 2
    assert all(isinstance(x, list) for x in two)
    hub0 = httpx.post(path, json=body, headers={**AUTH, "user-agent": "unknown/None; hf_hub/0.36.2; python/3.11.7"})
    assert hub0.json()["sequence"] == text
    assert hub0.json()["labels"] == [w["label"] for w in want]
    hub2 = httpx.post(path, json=body, headers={**AUTH, "user-agent": "unknown/None; hf_hub/2.4.0; python/3.11.7"})
    close(hub2.json(), want)
    bad = httpx.post(path, json=body, headers={**AUTH, "x-zero-shot-format": "xml"})
    assert bad.status_code == 400
    assert "labels" in bad.json()["error"]


def test_cache_keeps_every_shape_apart(url: str) -> None:
    """The cache holds results before they are shaped: `[text]` never changes what `text` gets, nor the reverse,
    and one format never answers for the other (the cache used to store shaped answers keyed without the shape)."""
    path = f"{url}/models/bart-large-mnli"
    params = {"candidate_labels": ["cache", "shape"]}
    pipeline = {**AUTH, "x-zero-shot-format": "pipeline"}
    as_list = httpx.post(path, json={"inputs": ["cache shape text"], "parameters": params}, headers=pipeline)
    single = httpx.post(path, json={"inputs": "cache shape text", "parameters": params}, headers=pipeline)
    assert isinstance(as_list.json(), list)
    assert isinstance(single.json(), dict)
    assert single.headers["x-cache"] == "hit"  # the same results, shaped for this request
    labels = httpx.post(path, json={"inputs": "cache shape text", "parameters": params}, headers=AUTH)
    assert labels.headers["x-cache"] == "hit"
    assert [o["label"] for o in labels.json()] == single.json()["labels"]


def test_requests_the_spec_allows(url: str) -> None:
    """huggingface.js's input schemas allow these; the reference pipeline answers them, and so does the server."""
    path = f"{url}/models/distilbert-sst-2"
    ok = httpx.post(path, json={"inputs": "x", "parameters": {"top_k": 2.0}}, headers=AUTH)
    assert ok.status_code == 200
    assert len(ok.json()[0]) == 2
    named = httpx.post(
        path, json={"inputs": "x", "model": "distilbert/distilbert-base-uncased-finetuned-sst-2-english"}, headers=AUTH
    )
    assert named.status_code == 200
    extra = httpx.post(path, json={"inputs": "x", "stream": False, "parameters": {"truncation": True}}, headers=AUTH)
    assert extra.status_code == 200
    assert extra.headers["x-ignored-fields"] == "stream, parameters.truncation"
    other = httpx.post(path, json={"inputs": "x", "model": "facebook/bart-large-mnli"}, headers=AUTH)
    assert other.status_code == 400
    assert "this route serves" in other.json()["error"]
    zs = f"{url}/models/bart-large-mnli"
    for params, needle in (
        ({"candidate_labels": []}, "empty"),
        ({"candidate_labels": ["a"], "hypothesis_template": "no slot"}, "{}"),
    ):
        r = httpx.post(zs, json={"inputs": "x", "parameters": params}, headers=AUTH)
        assert r.status_code == 422, params  # the pipeline fails on these too
        assert needle in r.json()["error"], params


# Cloudflare Workers AI ----------------------------------------------------------------------------------------------


def test_cloudflare_shape_and_envelope(url: str, clf: TextClassifier) -> None:
    path = f"{url}/client/v4/accounts/0123abcd/ai/run/{CF_ID}"
    r = httpx.post(path, json={"text": "I like you. I love you"}, headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True
    assert body["errors"] == []
    assert body["messages"] == []
    close(body["result"], as_json(clf("I like you. I love you", top_k=None)))
    for payload, status in (({"text": "  "}, 422), ({"inputs": "x"}, 422)):
        r = httpx.post(path, json=payload, headers=AUTH)
        assert r.status_code == status
        assert r.json()["success"] is False
        assert r.json()["result"] is None
        assert r.json()["errors"][0]["code"] == status
        assert r.json()["errors"][0]["message"]
    r = httpx.post(path, json={"text": "hi"})
    assert r.status_code == 401
    assert r.json()["errors"][0]["code"] == 10000
    assert r.json()["success"] is False
    r = httpx.post(f"{url}/client/v4/accounts/x/ai/run/@cf/meta/llama-3-8b-instruct", json={"text": "hi"}, headers=AUTH)
    assert r.status_code == 404
    assert r.json()["success"] is False
    r = httpx.post(f"{url}/client/v4/accounts/x/ai/run/bart-large-mnli", json={"text": "hi"}, headers=AUTH)
    assert r.status_code == 400
    assert "zero-shot" in r.json()["errors"][0]["message"]


# Headers, limits, errors ----------------------------------------------------------------------------------------------


def test_auth_missing_wrong_right(url: str) -> None:
    path, body = f"{url}/models/distilbert-sst-2", {"inputs": "auth check"}
    missing = httpx.post(path, json=body)
    assert missing.status_code == 401
    assert "Authorization: Bearer" in missing.json()["error"]
    assert missing.headers["www-authenticate"] == "Bearer"
    for header in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", "Bearer"):
        wrong = httpx.post(path, json=body, headers={"Authorization": header})
        assert wrong.status_code == 401, header
    assert httpx.post(path, json=body, headers=AUTH).status_code == 200
    assert httpx.post(path, json=body, headers={"authorization": "bearer another-token"}).status_code == 200
    assert httpx.get(f"{url}/models").status_code == 401
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}  # liveness needs no token


def test_result_cache_header(url: str) -> None:
    path, body = f"{url}/models/distilbert-sst-2", {"inputs": "cache me if you can"}
    before = stats(url, "distilbert-sst-2")["model_runs"]
    first = httpx.post(path, json=body, headers=AUTH)
    second = httpx.post(path, json=body, headers=AUTH)
    assert first.headers["x-cache"] == "miss"
    assert second.headers["x-cache"] == "hit"
    assert second.json() == first.json()
    assert stats(url, "distilbert-sst-2")["model_runs"] == before + 1
    fresh = httpx.post(path, json=body, headers={**AUTH, "x-use-cache": "false"})
    assert fresh.headers["x-cache"] == "miss"
    assert fresh.json() == first.json()
    assert float(fresh.headers["x-compute-time"]) >= 0
    assert float(fresh.headers["x-queue-time"]) >= 0
    assert stats(url, "distilbert-sst-2")["model_runs"] == before + 2
    other = httpx.post(path, json={**body, "parameters": {"top_k": 1}}, headers=AUTH)  # parameters are in the key
    assert other.headers["x-cache"] == "miss"
    assert len(other.json()[0]) == 1
    assert httpx.post(path, json=body, headers={**AUTH, "x-use-cache": "maybe"}).status_code == 400


def test_limits_and_errors(url: str) -> None:
    path = f"{url}/models/distilbert-sst-2"
    big = httpx.post(path, json={"inputs": "x" * 20000}, headers=AUTH)
    assert big.status_code == 413
    assert "16384" in big.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
        yield b'{"inputs": "'
        for _ in range(40):
            yield b"y" * 1000
        yield b'"}'

    assert httpx.post(path, content=chunks(), headers=AUTH).status_code == 413
    bad = httpx.post(path, content=b'{"inputs": "unterminated', headers=AUTH)
    assert bad.status_code == 400
    assert "not valid JSON" in bad.json()["error"]
    for payload, needle in (
        ({"inputs": "x", "parameters": {"top_k": 0}}, "top_k"),
        ({"inputs": "x", "parameters": {"function_to_apply": "relu"}}, "relu"),
        ({"inputs": ""}, "empty"),
        ({"text": "x"}, "inputs"),
        ({"inputs": "x", "options": "fast"}, "options"),
    ):
        r = httpx.post(path, json=payload, headers=AUTH)
        assert r.status_code == 422, payload
        assert needle in r.json()["error"], payload
    r = httpx.post(f"{url}/models/bart-large-mnli", json={"inputs": "x", "parameters": {}}, headers=AUTH)
    assert r.status_code == 422
    assert "candidate_labels" in r.json()["error"]
    unknown = httpx.post(f"{url}/models/nobody/nothing", json={"inputs": "x"}, headers=AUTH)
    assert unknown.status_code == 404
    assert "distilbert-sst-2" in unknown.json()["error"]


def test_model_list(url: str, dirs: dict[str, Path]) -> None:
    listed = {m["id"]: m for m in httpx.get(f"{url}/models", headers=AUTH).json()}
    assert set(listed) == {"distilbert-sst-2", "bart-large-mnli"}
    assert CF_ID in listed["distilbert-sst-2"]["ids"]
    assert listed["bart-large-mnli"]["task"] == "zero-shot-classification"
    assert listed["distilbert-sst-2"]["labels"] == ["NEGATIVE", "POSITIVE"]
    assert httpx.get(f"{url}/models/{CF_ID}", headers=AUTH).json()["id"] == "distilbert-sst-2"


# Lazy loading, x-wait-for-model, the bounded queue ------------------------------------------------------------------


def test_wait_for_model_and_bounded_queue(dirs: dict[str, Path], clf: TextClassifier) -> None:
    release = threading.Event()

    def gated(info: Any) -> Any:
        load = default_loader(info, 1, 8192)

        def slow() -> Any:
            release.wait(30)
            return load()

        return slow

    models = build_models([dirs["tc"]], policy=BatchPolicy(max_queue=2), loader=gated)
    with serving(create_app(models)) as base:  # no tokens: local use without auth
        path = f"{base}/models/distilbert-sst-2"
        loading = httpx.post(path, json={"inputs": "hello"})
        assert loading.status_code == 503
        assert "loading" in loading.json()["error"]
        assert loading.json()["estimated_time"] > 0
        assert int(loading.headers["retry-after"]) >= 1
        assert httpx.get(f"{base}/models/distilbert-sst-2").json()["state"] == "loading"
        with ThreadPoolExecutor(2) as pool:
            waiting = [
                pool.submit(
                    httpx.post, path, json={"inputs": f"wait {i}"}, headers={"x-wait-for-model": "true"}, timeout=60
                )
                for i in range(2)
            ]
            for _ in range(1000):  # wait until both are queued behind the load
                if httpx.get(f"{base}/models/distilbert-sst-2").json()["queued"] == 2:
                    break
                time.sleep(0.01)
            full = httpx.post(path, json={"inputs": "one too many"}, headers={"x-wait-for-model": "true"})
            assert full.status_code == 503
            assert "queued" in full.json()["error"]
            assert not any(f.done() for f in waiting)  # nothing can answer before the model is loaded
            release.set()
            answers = [f.result() for f in waiting]
        for i, r in enumerate(answers):
            assert r.status_code == 200
            close(r.json()[0], as_json(clf(f"wait {i}", top_k=None)))
        legacy = httpx.post(path, json={"inputs": "hello", "options": {"wait_for_model": True}})
        assert legacy.status_code == 200


# Load: 32 concurrent clients ----------------------------------------------------------------------------------------


def test_load_32_clients_batched(url: str, clf: TextClassifier) -> None:
    clients, per_client = 32, 8
    texts = [f"load test text {i} " + "good " * (i % 7) for i in range(clients * per_client)]
    want = [as_json(p) for p in clf(texts, top_k=None)]
    before = stats(url, "distilbert-sst-2")

    def client(c: int) -> list[tuple[int, int, Any, int]]:
        out = []
        with httpx.Client(headers={**AUTH, "x-use-cache": "false"}, timeout=60) as http:
            for i in range(c, len(texts), clients):
                r = http.post(f"{url}/models/distilbert-sst-2", json={"inputs": texts[i]})
                out.append((i, r.status_code, r.json(), int(r.headers.get("x-batch-size", 0))))
        return out

    with ThreadPoolExecutor(clients) as pool:
        results = [x for part in pool.map(client, range(clients)) for x in part]
    assert sorted(i for i, *_ in results) == list(range(len(texts)))  # no lost response
    assert all(status == 200 for _, status, _, _ in results)  # no 5xx, no 503
    for i, _, got, _ in results:
        close(got[0], want[i])
    after = stats(url, "distilbert-sst-2")
    assert after["requests"] - before["requests"] == len(texts)
    assert after["model_runs"] - before["model_runs"] < len(texts)  # requests shared model runs
    assert max(size for *_, size in results) > 1


# The command ----------------------------------------------------------------------------------------------------------


def test_engine_serve_command(dirs: dict[str, Path], tmp_path: Path) -> None:
    """`engine serve` in a subprocess: start-up notice, token file, lazy load with x-wait-for-model, Cloudflare id."""
    import subprocess
    import sys

    tokens = tmp_path / "tokens.txt"
    tokens.write_text("# one per line\n\nserve-token\n", encoding="utf-8")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "engine.cli", "serve", str(dirs["tc"]), "--port", str(port), "--token-file",
           str(tokens), "--alias", f"{CF_ID}=distilbert-sst-2", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        headers = {"Authorization": "Bearer serve-token", "x-wait-for-model": "true"}
        r = httpx.post(f"{base}/client/v4/accounts/a/ai/run/{CF_ID}", json={"text": "hello"}, headers=headers)
        assert r.status_code == 200
        assert r.json()["success"] is True
        assert httpx.post(f"{base}/models/distilbert-sst-2", json={"inputs": "hi"}).status_code == 401
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "1 token(s)" in err
    assert "distilbert-sst-2" in err


def test_command_line_errors(dirs: dict[str, Path], tmp_path: Path) -> None:
    from engine.cli import main
    from engine.cli.serve import auth_notice

    with pytest.raises(SystemExit):
        main(["serve", str(dirs["tc"]), "--alias", "no-equals-sign"])
    assert main(["serve", str(dirs["tc"]), "--alias", "x=not-served"]) == 1
    assert main(["serve", str(tmp_path / "missing")]) == 1
    (tmp_path / "empty.txt").write_text("# nothing\n", encoding="utf-8")
    assert main(["serve", str(dirs["tc"]), "--token-file", str(tmp_path / "empty.txt")]) == 1
    assert "NO AUTHENTICATION" in auth_notice((), None, "127.0.0.1", 8080)
    assert "ON THE NETWORK" in auth_notice((), None, "0.0.0.0", 8080)


# Readiness: models load and warm before the server listens --------------------------------------------------------


def test_preloaded_server_is_ready_when_it_listens(dirs: dict[str, Path], clf: TextClassifier) -> None:
    release = threading.Event()
    loaded: list[str] = []

    def gated(info: Any) -> Any:
        load = default_loader(info, 1, 8192)

        def slow() -> Any:
            release.wait(30)
            model = load()  # includes the warm-up run
            loaded.append(info.path.name)
            return model

        return slow

    models = build_models([dirs["tc"]], loader=gated)
    threading.Timer(0.3, release.set).start()
    with serving(create_app(models, ServerConfig(preload=True))) as base:
        assert loaded == ["distilbert-sst-2"]  # the socket answered only once the model was loaded
        r = httpx.post(f"{base}/models/distilbert-sst-2", json={"inputs": "hello"})  # no x-wait-for-model
        assert r.status_code == 200
        close(r.json()[0], as_json(clf("hello", top_k=None)))
        assert httpx.get(f"{base}/health").json() == {"status": "ok", "models": {"distilbert-sst-2": "ready"}}


def test_lazy_server_reports_model_states(dirs: dict[str, Path]) -> None:
    models = build_models([dirs["tc"], dirs["zs"]], threads=1)
    with serving(create_app(models)) as base:
        health = httpx.get(f"{base}/health").json()
        assert health == {"status": "ok", "models": {"distilbert-sst-2": "not loaded", "bart-large-mnli": "not loaded"}}
        r = httpx.post(f"{base}/models/bart-large-mnli", json={"inputs": "x", "parameters": {"candidate_labels": "a"}})
        assert r.status_code == 503
        assert httpx.get(f"{base}/health").json()["models"]["bart-large-mnli"] in ("loading", "ready")


def test_export_alias_directory_answers_to_the_hub_id(url: str) -> None:
    """The fixture's directory is named after the export alias `distilbert-sst-2`: the Hub ids reach it too."""
    hub = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
    for model_id in (hub, hub.rsplit("/", 1)[1]):
        assert httpx.get(f"{url}/models/{model_id}", headers=AUTH).json()["id"] == "distilbert-sst-2"
