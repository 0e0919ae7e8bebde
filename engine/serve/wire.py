"""The HTTP shapes of `engine serve`, as pure functions: request parsing, response bodies, the Cloudflare
envelope, error statuses and the cache key. No starlette here, so all of it is importable and testable without
the `server` extra; engine.serve.app only wires these to routes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from engine.errors import EngineError, InvalidRequestError, outcome
from engine.runtime.postprocess import parse_top_k
from engine.tasks.inputs import TextPair, check_keys, check_text
from engine.tasks.params import (
    LONG_TEXT_KEYS,
    TextClassificationInput,
    TextClassificationParameters,
    ZeroShotClassificationInput,
)
from engine.tasks.registry import TaskName
from engine.tasks.rerank import RerankParameters, check_documents, ranked

TRUE = {"true", "1", "yes"}
FALSE = {"false", "0", "no"}
CLOUDFLARE_AUTH_CODE = 10000  # Cloudflare's own error code for authentication errors


class HTTPError(Exception):
    """Ends a request with this status and message; `extra` goes into the HF error body. `cause` is the engine
    error's class name, for the error vocabularies that name kinds (TEI's `error_type`)."""

    def __init__(
        self,
        status: int,
        message: str,
        extra: dict[str, Any] | None = None,
        cause: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}
        self.cause = cause
        self.retry_after = retry_after  # seconds, for a 503's Retry-After header

    @classmethod
    def of(cls, exc: EngineError, retry_after: float | None = None, **extra: Any) -> HTTPError:
        """An engine error answered with the status errors.OUTCOMES gives its class."""
        return cls(outcome(exc).http_status, str(exc), extra, type(exc).__name__, retry_after)


class ZeroShotFormat(str, Enum):
    """The two zero-shot answers: the task spec's `[{label, score}]` (huggingface_hub 1.x/2.x,
    @huggingface/inference 4.x), and the transformers pipeline's `{sequence, labels, scores}` (huggingface_hub 0.x)."""

    LABELS = "labels"
    PIPELINE = "pipeline"


ZERO_SHOT_FORMAT_HEADER = "x-zero-shot-format"
# The one rule, first match wins (README, "Zero-shot answers"): the header; the older request shape
# {"inputs": {"text", "candidateLabels"}}; a huggingface_hub 0.x User-Agent (it sends the same body as 1.x/2.x
# but parses only the pipeline's shape); otherwise the spec's shape.
LEGACY_HUB_AGENT = re.compile(r"(^|[;\s])hf_hub/0\.")

# What each task's request may carry (the JSON schemas of huggingface.js allow any other field: it is ignored
# and named in the x-ignored-fields response header, so a typo is visible without failing the call)
FIELDS = {"inputs", "parameters", "options", "model"}
PARAMETERS = {
    TaskName.TEXT_CLASSIFICATION: {"function_to_apply", "top_k", *LONG_TEXT_KEYS},
    TaskName.ZERO_SHOT: {
        "candidate_labels",
        "candidateLabels",
        "hypothesis_template",
        "hypothesisTemplate",
        "multi_label",
        "multiLabel",
        *LONG_TEXT_KEYS,
    },
}


@dataclass(frozen=True)
class Parsed:
    """A validated request: what the worker runs, and how to shape its results. The cache holds results before
    they are shaped, so its key is (model, inputs, parameters) and never the shape of the answer."""

    inputs: list[Any]
    parameters: Hashable
    cost: int
    is_batch: bool
    cache_key: Hashable
    legacy_shape: bool = False
    ignored: tuple[str, ...] = ()


def _lenient(task: TaskName, body: Any, served_ids: Sequence[str]) -> tuple[Any, tuple[str, ...]]:
    """The body with what the spec allows but the engine's strict parsers refuse taken care of: the legacy
    `options`, a `model` field (checked against the route's model), unknown fields (dropped, named), and a
    `top_k` given as an integral JSON number such as 2.0 (JSON does not tell 2 from 2.0)."""
    if not isinstance(body, dict):
        return body, ()
    model = body.get("model")
    if model is not None and served_ids and model not in served_ids:
        raise HTTPError(
            400,
            f"the body names model {model!r}, but this route serves {served_ids[0]!r}; drop the field or "
            f"call the route of that model (ids here: {list(served_ids)})",
        )
    ignored = [k for k in body if k not in FIELDS]
    body = {k: v for k, v in body.items() if k in FIELDS and k not in ("options", "model")}
    params = body.get("parameters")
    if isinstance(params, dict):
        allowed = PARAMETERS[task]
        ignored += [f"parameters.{k}" for k in params if k not in allowed]
        params = {k: v for k, v in params.items() if k in allowed}
        top_k = params.get("top_k")
        if isinstance(top_k, float) and top_k.is_integer():
            params["top_k"] = int(top_k)
        body["parameters"] = params
    return body, tuple(ignored)


def parse_hf(task: TaskName, body: Any, served_ids: Sequence[str] = ()) -> Parsed:
    """HF Inference API request -> Parsed. Text classification without top_k returns every label, as the hosted
    API does. The hosted API's legacy `options` ({use_cache, wait_for_model}) are accepted and read as headers."""
    task = TaskName(task)
    try:
        body, ignored = _lenient(task, body, served_ids)
        if task is TaskName.ZERO_SHOT:
            zs = ZeroShotClassificationInput.from_dict(body)
            texts = zs.inputs if isinstance(zs.inputs, list) else [zs.inputs]
            zs_key: Hashable = (task, tuple(texts), zs.parameters)
            cost = sum(len(zs.parameters.labels_of(t)) for t in texts)
            legacy = isinstance(body.get("inputs"), dict)
            return Parsed(texts, zs.parameters, cost, isinstance(zs.inputs, list), zs_key, legacy, ignored)
        if isinstance(body, dict) and isinstance(body.get("parameters", {}), dict):
            body = {**body, "parameters": {"top_k": None, **(body.get("parameters") or {})}}
        tc = TextClassificationInput.from_dict(body)
    except InvalidRequestError as exc:
        raise HTTPError.of(exc) from None
    items = tc.inputs if isinstance(tc.inputs, list) else [tc.inputs]
    key = (task, tuple(items), tc.parameters)
    return Parsed(items, tc.parameters, len(items), isinstance(tc.inputs, list), key, False, ignored)


def zero_shot_format(header: str | None, user_agent: str | None, parsed: Parsed) -> ZeroShotFormat:
    """The rule above, in code."""
    if header is not None:
        try:
            return ZeroShotFormat(header.strip().lower())
        except ValueError:
            raise HTTPError(
                400, f"header {ZERO_SHOT_FORMAT_HEADER} must be 'labels' or 'pipeline', got {header!r}"
            ) from None
    if parsed.legacy_shape or LEGACY_HUB_AGENT.search(user_agent or ""):
        return ZeroShotFormat.PIPELINE
    return ZeroShotFormat.LABELS


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
        if body["texts"] == []:  # TEI's own class of error: an empty batch
            raise HTTPError(400, "texts is an empty list; give at least one text to rank", cause=EMPTY)
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
    parsed = Parsed(pairs, params, len(pairs), True, ("rerank", query, tuple(texts), params))
    return parsed, texts, return_text


def rerank_response(texts: list[str], return_text: bool, scores: list[float]) -> list[dict[str, Any]]:
    """TEI's: [{index, score, text?}], best first."""
    return [r.to_dict() for r in ranked(scores, texts, None, return_text)]


EMPTY = "empty batch"
# TEI's error vocabulary on /rerank: error_type and its status (router/src/http/server.rs, From<&ErrorType>)
TEI_STATUS = {"Unhealthy": 503, "Backend": 424, "Overloaded": 429, "Validation": 413, "Tokenizer": 422, "Empty": 400}


def tei_error(exc: HTTPError) -> tuple[dict[str, str], int]:
    """TEI's body {error, error_type} and status. A request TEI would refuse while reading it (bad JSON, wrong
    types: axum's 422) keeps 422; auth (401) and unknown models (404) keep theirs, as TEI has no such errors."""
    if exc.cause == EMPTY:
        kind = "Empty"
    elif exc.cause == "Overloaded":
        kind = "Overloaded"
    elif exc.cause == "TextTooLongError" or exc.status == 413:
        kind = "Validation"
    elif exc.status == 503:
        kind = "Unhealthy"
    elif exc.status >= 500:
        kind = "Backend"
    else:
        return {"error": exc.message, "error_type": "Validation"}, exc.status
    return {"error": exc.message, "error_type": kind}, TEI_STATUS[kind]


# Cohere's and Jina's rerank (POST /v1/rerank, /v2/rerank): what LiteLLM, LlamaIndex, Haystack and vLLM's clients send
COHERE_FIELDS = {"model", "query", "documents", "top_n", "return_documents", "max_chunks_per_doc", "max_tokens_per_doc"}


@dataclass(frozen=True)
class CohereRerank:
    parsed: Parsed
    documents: list[str]
    top_n: int | None
    return_documents: bool


def parse_cohere_rerank(body: Any, served_ids: Sequence[str]) -> CohereRerank:
    """`{model, query, documents: [str | {text}], top_n, return_documents}`; `model`, when given, must name the
    served cross-encoder. Unknown fields are refused (Cohere's API does too)."""
    try:
        if not isinstance(body, dict):
            raise InvalidRequestError(f"the request must be a JSON object, got {type(body).__name__}")
        if extra := set(body) - COHERE_FIELDS:
            raise InvalidRequestError(
                f"the request has unknown field(s) {sorted(extra)}; allowed: {sorted(COHERE_FIELDS)}"
            )
        if "query" not in body or "documents" not in body:
            raise InvalidRequestError('a rerank request needs "query" and "documents"')
        model = body.get("model")
        if model is not None and model not in served_ids:
            raise InvalidRequestError(f"model {model!r} is not the served reranker; ids here: {list(served_ids)}")
        docs = body["documents"]
        if isinstance(docs, list):
            docs = [d["text"] if isinstance(d, dict) and set(d) == {"text"} else d for d in docs]
        query, texts = check_documents(body["query"], docs)
        top_n = parse_top_k(body.get("top_n"))
        return_documents = body.get("return_documents", False)
        if not isinstance(return_documents, bool):
            raise InvalidRequestError(f"return_documents must be true or false, got {return_documents!r}")
    except InvalidRequestError as exc:
        raise HTTPError.of(exc) from None
    params = RerankParameters()
    pairs = [TextPair(query, t) for t in texts]
    parsed = Parsed(pairs, params, len(pairs), True, ("rerank", query, tuple(texts), params))
    return CohereRerank(parsed, texts, top_n, return_documents)


def cohere_rerank_response(request: CohereRerank, model: str, scores: list[float]) -> dict[str, Any]:
    """`{id, model, results: [{index, relevance_score, document?: {text}}], meta}`, best first."""
    results = []
    for r in ranked(scores, request.documents, request.top_n, request.return_documents):
        item: dict[str, Any] = {"index": r.index, "relevance_score": r.score}
        if r.text is not None:
            item["document"] = {"text": r.text}
        results.append(item)
    return {
        "id": str(uuid.uuid4()),
        "model": model,
        "results": results,
        "meta": {"billed_units": {"search_units": 1}},
    }


def cohere_error(exc: HTTPError) -> dict[str, Any]:
    """Cohere's error body."""
    return {"message": exc.message}


@dataclass(frozen=True)
class CloudflareTextClassificationInput:
    """Cloudflare Workers AI `{"text": str}`: answered with every label, sorted."""

    text: str

    @classmethod
    def from_dict(cls, obj: object) -> CloudflareTextClassificationInput:
        if not isinstance(obj, Mapping):
            raise InvalidRequestError(f"the request must be a JSON object, got {type(obj).__name__}")
        check_keys(obj, {"text"}, {"text"}, "the request")
        return cls(check_text(obj["text"], "text"))

    def to_request(self) -> TextClassificationInput:
        return TextClassificationInput(self.text, TextClassificationParameters(top_k=None))


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


def hf_response(task: TaskName, parsed: Parsed, results: list[Any], fmt: ZeroShotFormat = ZeroShotFormat.LABELS) -> Any:
    """Text classification: one list of {label, score} per input, always nested (`[[...]]` for one input), as
    the hosted API and InferenceClient expect. Zero-shot in the spec's shape: one list of {label, score} per
    input, and a single list for one text, or for a list of one (as the hosted API answered it, and as
    @huggingface/inference 4.x parses its README's `inputs: [text]`). In the pipeline's shape:
    {sequence, labels, scores}, one per input when `inputs` was a list."""
    if TaskName(task) is TaskName.ZERO_SHOT:
        if fmt is ZeroShotFormat.PIPELINE:
            shaped = [p.to_pipeline().to_dict() for p in results]
            return shaped if parsed.is_batch else shaped[0]
        lists = [[o.to_dict() for o in p.outputs] for p in results]
        return lists if len(lists) > 1 else lists[0]
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
        wait = exc.retry_after if exc.retry_after is not None else exc.extra.get("estimated_time", 1)
        return {"retry-after": str(max(1, round(wait)))}
    if exc.status in (408, 413):  # the body may still be on its way: this connection cannot carry another request
        return {"connection": "close"}
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
    import hashlib  # here, not at import: `import engine` stays without OpenSSL (tests/test_import.py)

    return hashlib.sha256(repr((model_path, parsed.cache_key)).encode("utf-8", "surrogatepass")).digest()
