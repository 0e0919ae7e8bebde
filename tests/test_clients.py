"""Today's official clients against a live server (scripts/check_clients.py): huggingface_hub 2.x (the dev extra's)
and 0.x (in a venv of its own), @huggingface/inference 4.x under node, the seeds' snippets, and TEI / Cohere / Jina
rerank, every answer validated against the vendored schemas (tests/schemas/)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("jsonschema")

from test_server import named, serving  # noqa: E402

from engine.serve.app import ServerConfig, create_app  # noqa: E402
from engine.serve.models import build_models  # noqa: E402

TOKEN = "client-check-token"
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "check_clients.py"


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("check_clients", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_clients"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cc = load_script()


@pytest.fixture(scope="module")
def target(exported: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("clients")
    dirs = [
        named(tmp, "distilbert-sst-2", exported("bert", "fp32")),
        named(tmp, "bart-large-mnli", exported("bert-nli", "fp32")),
        named(tmp, "mxbai-rerank-base", exported("bert-single", "fp32")),
    ]
    config = ServerConfig(tokens=(TOKEN,), preload=True)
    with serving(create_app(build_models(dirs, threads=1), config)) as url:
        for _ in range(500):
            states = [
                m["state"] for m in httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {TOKEN}"}).json()
            ]
            if all(s == "ready" for s in states):
                break
            time.sleep(0.02)
        yield cc.Target(url, TOKEN, "distilbert-sst-2", "bart-large-mnli", "mxbai-rerank-base")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("client-envs")


def passed(checks: list[Any]) -> None:
    failed = [c.line() for c in checks if not c.ok]
    assert checks
    assert not failed, "\n".join(failed)


def test_huggingface_hub_today(target: Any) -> None:
    """The dev extra's huggingface_hub (today's 2.x), run by this interpreter; 0.x below has a venv of its own."""
    import huggingface_hub

    checks = list(cc.hub_checks(target, Path(sys.executable), cc.labels(target)))
    assert [c.client for c in checks] == [f"huggingface_hub {huggingface_hub.__version__}"] * 2
    assert {c.task for c in checks} == {"text-classification", "zero-shot-classification"}
    assert int(huggingface_hub.__version__.split(".")[0]) >= 1
    passed(checks)


@pytest.mark.slow
def test_huggingface_hub_0x(target: Any, cache: Path) -> None:
    python = cc.hub_python(cache, "huggingface_hub==0.36.2")
    checks = list(cc.hub_checks(target, python, cc.labels(target)))
    assert [c.client for c in checks] == ["huggingface_hub 0.36.2"] * 2
    passed(checks)


@pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None, reason="node and npm are not installed"
)
def test_huggingface_inference_js(target: Any, cache: Path) -> None:
    checks = list(cc.js_checks(target, cc.js_dir(cache, "@huggingface/inference@4"), cc.labels(target)))
    assert len(checks) == 2
    passed(checks)


def test_snippets_and_rerank_shapes(target: Any) -> None:
    checks = list(cc.snippet_checks(target, cc.labels(target), shutil.which("node") is not None))
    checks += cc.rerank_checks(target)
    assert {"TEI /rerank", "Cohere /v1/rerank", "Jina /v1/rerank", "seed snippet: Python requests"} <= {
        c.client for c in checks
    }
    passed(checks)


def test_schema_validation_can_fail() -> None:
    with pytest.raises(AssertionError, match=r"output\.json"):
        cc.validate(
            "huggingface.js/zero-shot-classification.output.json", {"sequence": "x", "labels": [], "scores": []}
        )
    with pytest.raises(AssertionError):
        cc.validate("tei/rerank.json#ErrorResponse", {"error": "x"})
