"""The HTTP shapes of `engine serve`, as pure functions: request parsing, response bodies, the Cloudflare
envelope, error statuses and the cache key. No starlette here, so all of it is importable and testable without
the `server` extra; engine.server only wires these to routes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import EngineError, InvalidRequestError, outcome
from .rerank import RerankParameters, check_documents, ranked
from .spec import CloudflareTextClassificationInput, TextClassificationInput, TextPair, ZeroShotClassificationInput

TRUE = {"true", "1", "yes"}
FALSE = {"false", "0", "no"}
CLOUDFLARE_AUTH_CODE = 10000  # Cloudflare's own error code for authentication errors


class HTTPError(Exception):
    """Ends a request with this status and message; `extra` goes into the HF error body."""

    def __init__(self, status: int, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}

    @classmethod
    def of(cls, exc: EngineError, **extra: Any) -> HTTPError:
        """An engine error answered with the status errors.OUTCOMES gives its class."""
        return cls(outcome(exc).http_status, str(exc), extra)


@dataclass(frozen=True)
class Parsed:
    """A validated request: what the worker runs, and how to shape its results."""

    inputs: list[Any]
    parameters: Hashable
    cost: int
    is_batch: bool
    cache_key: Hashable


def parse_hf(task: str, body: Any) -> Parsed:
    """HF Inference API request -> Parsed. Text classification without top_k returns every label, as the hosted
    API does. The hosted API's legacy `options` ({use_cache, wait_for_model}) are accepted and read as headers."""
    try:
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k != "options"}
        if task == "zero-shot-classification":
            zs = ZeroShotClassificationInput.from_dict(body)
            texts = zs.inputs if isinstance(zs.inputs, list) else [zs.inputs]
            key = (task, tuple(texts), zs.parameters)
            cost = sum(len(zs.parameters.labels_of(t)) for t in texts)
            return Parsed(texts, zs.parameters, cost, zs.inputs is texts, key)
        if isinstance(body, dict) and isinstance(body.get("parameters", {}), dict):
            body = {**body, "parameters": {"top_k": None, **(body.get("parameters") or {})}}
        tc = TextClassificationInput.from_dict(body)
    except InvalidRequestError as exc:
        raise HTTPError.of(exc) from None
    items = tc.inputs if isinstance(tc.inputs, list) else [tc.inputs]
    return Parsed(items, tc.parameters, len(items), tc.inputs is items, (task, tuple(items), tc.parameters))


RERANK_FIELDS = {"query", "texts", "raw_scores", "return_text", "truncate", "truncation_direction"}


def parse_rerank(body: Any) -> tuple[Parsed, list[str], bool]:
    """TEI's /rerank request -> (Parsed, the texts, return_text). `truncate` defaults to true, as everywhere here
    (TEI's default is its server's --auto-truncate)."""
    try:
        if not isinstance(body, dict):
            raise InvalidRequestError(f"the request must be a JSON object, got {type(body).__name__}")
        if extra := set(body) - RERANK_FIELDS:
            raise InvalidRequestError(
                f"the request has unknown field(s) {sorted(extra)}; allowed: {sorted(RERANK_FIELDS)}"
            )
        if "query" not in body or "texts" not in body:
            raise InvalidRequestError('a rerank request needs "query" and "texts"')
        query, texts = check_documents(body["query"], body["texts"])
        truncate = body.get("truncate")
        params = RerankParameters.parse(
            body.get("raw_scores", False),
            True if truncate is None else truncate,
            body.get("truncation_direction") or "right",
        )
        return_text = body.get("return_text", False)
        if not isinstance(return_text, bool):
            raise InvalidRequestError(f"return_text must be true or false, got {return_text!r}")
    except InvalidRequestError as exc:
        raise HTTPError.of(exc) from None
    pairs = [TextPair(query, t) for t in texts]
    parsed = Parsed(pairs, params, len(pairs), True, ("rerank", query, tuple(texts), params, return_text))
    return parsed, texts, return_text


def rerank_response(texts: list[str], return_text: bool, scores: list[float]) -> list[dict[str, Any]]:
    """TEI's: [{index, score, text?}], best first."""
    return [r.to_dict() for r in ranked(scores, texts, None, return_text)]


def parse_cloudflare(body: Any) -> Parsed:
    """Cloudflare's `{"text": ...}`: one text, every label."""
    try:
        tc = CloudflareTextClassificationInput.from_dict(body).to_request()
    except InvalidRequestError as exc:
        raise HTTPError.of(exc) from None
    items = [tc.inputs]
    return Parsed(items, tc.parameters, 1, False, ("cloudflare", tuple(items), tc.parameters))


def request_options(body: Any) -> dict[str, Any]:
    """The hosted API's legacy `options` object of a request body."""
    options = body.get("options", {}) if isinstance(body, dict) else {}
    if not isinstance(options, dict):
        raise HTTPError(422, 'options must be an object such as {"wait_for_model": true}')
    return options


def flag(header: str | None, name: str, options: Mapping[str, Any], option: str, default: bool) -> bool:
    """A true/false switch given as header `name` (value `header`) or as the body's options[`option`]."""
    if header is not None:
        if header.strip().lower() in TRUE:
            return True
        if header.strip().lower() in FALSE:
            return False
        raise HTTPError(400, f"header {name} must be true or false, got {header!r}")
    value = options.get(option, default)
    if not isinstance(value, bool):
        raise HTTPError(422, f"options.{option} must be true or false, got {value!r}")
    return value


def hf_response(task: str, parsed: Parsed, results: list[Any]) -> Any:
    """Text classification: one list of {label, score} per input, always nested (`[[...]]` for one input), as
    the hosted API and InferenceClient expect. Zero-shot: the pipeline's {sequence, labels, scores}."""
    if task == "zero-shot-classification":
        shaped = [p.to_pipeline().to_dict() for p in results]
        return shaped if parsed.is_batch else shaped[0]
    return [[o.to_dict() for o in p.outputs] for p in results]


def cloudflare_response(results: list[Any]) -> dict[str, Any]:
    return {"result": [o.to_dict() for o in results[0].outputs], "success": True, "errors": [], "messages": []}


def hf_error(exc: HTTPError) -> dict[str, Any]:
    return {"error": exc.message, **exc.extra}


def cloudflare_error(exc: HTTPError) -> dict[str, Any]:
    code = CLOUDFLARE_AUTH_CODE if exc.status == 401 else exc.status
    return {"result": None, "success": False, "errors": [{"code": code, "message": exc.message}], "messages": []}


def error_headers(exc: HTTPError) -> dict[str, str]:
    if exc.status == 401:
        return {"www-authenticate": "Bearer"}
    if exc.status == 503:
        return {"retry-after": str(max(1, round(exc.extra.get("estimated_time", 1))))}
    return {}


def timing_headers(queue_time: float, compute_time: float, batch_requests: int) -> dict[str, str]:
    """Like TEI's, in milliseconds; x-batch-size counts the requests that shared the model run."""
    return {
        "x-queue-time": f"{queue_time * 1000:.2f}",
        "x-compute-time": f"{compute_time * 1000:.2f}",
        "x-batch-size": str(batch_requests),
        "x-cache": "miss",
    }


def cache_key(model_path: str, parsed: Parsed) -> bytes:
    """A digest, so the cache holds no request text; the repr of the frozen request dataclasses is deterministic."""
    return hashlib.sha256(repr((model_path, parsed.cache_key)).encode("utf-8", "surrogatepass")).digest()
