"""engine.serve.wire: the HTTP shapes as pure functions, importable and tested without starlette."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.errors import (
    OUTCOMES,
    EngineError,
    InferenceError,
    IntegrityError,
    InvalidRequestError,
    ModelLoadError,
    Overloaded,
    TextTooLongError,
    TooManyErrorsError,
    outcome,
)
from engine.serve.wire import (
    HTTPError,
    cache_key,
    cloudflare_error,
    error_headers,
    flag,
    hf_error,
    parse_cloudflare,
    parse_hf,
)
from engine.tasks.params import TextClassificationParameters


def test_importable_without_starlette() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None; import engine.serve.wire, engine.serve.models; "
        "print('starlette' in sys.modules and sys.modules['starlette'] is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_text_classification_request_returns_every_label_by_default() -> None:
    parsed = parse_hf("text-classification", {"inputs": ["a", "b"], "options": {"use_cache": False}})
    assert parsed.inputs == ["a", "b"]
    assert parsed.is_batch
    assert parsed.cost == 2
    assert parsed.parameters == TextClassificationParameters(top_k=None)
    single = parse_hf("text-classification", {"inputs": "a", "parameters": {"top_k": 1}})
    assert not single.is_batch
    assert single.parameters == TextClassificationParameters(top_k=1)


def test_zero_shot_request_costs_texts_times_labels() -> None:
    parsed = parse_hf("zero-shot-classification", {"inputs": ["x", "y"], "parameters": {"candidate_labels": "a,b,c"}})
    assert parsed.cost == 6
    assert parsed.is_batch


def test_bad_requests_are_422() -> None:
    with pytest.raises(HTTPError) as info:
        parse_hf("text-classification", {"inputs": ""})
    assert info.value.status == 422
    assert "empty" in info.value.message
    with pytest.raises(HTTPError) as info:
        parse_cloudflare({"inputs": "x"})
    assert info.value.status == 422


def test_flags_from_headers_or_options() -> None:
    assert flag("TRUE", "x-use-cache", {}, "use_cache", False) is True
    assert flag(None, "x-use-cache", {"use_cache": False}, "use_cache", True) is False
    with pytest.raises(HTTPError) as info:
        flag("maybe", "x-use-cache", {}, "use_cache", True)
    assert info.value.status == 400
    with pytest.raises(HTTPError) as info:
        flag(None, "x-use-cache", {"use_cache": "no"}, "use_cache", True)
    assert info.value.status == 422


def test_error_bodies_and_headers() -> None:
    loading = HTTPError(503, "loading", {"estimated_time": 2.6})
    assert hf_error(loading) == {"error": "loading", "estimated_time": 2.6}
    assert error_headers(loading) == {"retry-after": "3"}
    auth = HTTPError(401, "no token")
    assert cloudflare_error(auth)["errors"] == [{"code": 10000, "message": "no token"}]
    assert error_headers(auth) == {"www-authenticate": "Bearer"}


def test_cache_key_depends_on_model_and_request_only() -> None:
    a = parse_hf("text-classification", {"inputs": "same"})
    b = parse_hf("text-classification", {"inputs": "same", "options": {"wait_for_model": True}})
    assert cache_key("/m", a) == cache_key("/m", b) != cache_key("/other", a)
    assert b"same" not in cache_key("/m", a)


def test_one_table_maps_errors_to_statuses_and_exit_codes() -> None:
    assert outcome(TextTooLongError("x")).http_status == 422 == outcome(InvalidRequestError("x")).http_status
    assert outcome(IntegrityError("x")) == outcome(ModelLoadError("x")) == OUTCOMES[ModelLoadError]
    assert outcome(Overloaded("x")).http_status == 503
    assert outcome(InferenceError("x")).exit_code == 4
    assert outcome(InvalidRequestError("x")).exit_code == 2
    assert outcome(TooManyErrorsError("x")).exit_code == 3

    class Unlisted(EngineError):
        pass

    assert outcome(Unlisted()) == OUTCOMES[EngineError]
    assert HTTPError.of(TextTooLongError("too long")).status == 422
