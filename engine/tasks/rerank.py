"""Reranking with a cross-encoder: (query, document) pairs -> relevance scores -> documents best first.

A cross-encoder is a sequence classifier over text pairs with one logit (relevance; sigmoid gives a probability,
as sentence-transformers' CrossEncoder does) or two (not relevant, relevant; the relevance is the softmax share
of the second, i.e. the sigmoid of the logit difference). `raw_scores` skips the sigmoid, as TEI's does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import InvalidRequestError, ModelLoadError, first_error
from engine.runtime import postprocess
from engine.runtime.loaded import LoadedModel
from engine.runtime.tokenization import Side, Strategy, Truncation
from engine.tasks.base import Task
from engine.tasks.inputs import TextPair, check_text
from engine.tasks.registry import TaskName, is_cross_encoder


@dataclass(frozen=True)
class RerankParameters:
    """How to score the pairs: `raw_scores` gives the logit (difference) instead of the probability."""

    raw_scores: bool = False
    truncation: bool = True
    truncation_direction: Side = Side.RIGHT

    @classmethod
    def parse(
        cls, raw_scores: object = False, truncate: object = True, direction: object = "right"
    ) -> RerankParameters:
        if not isinstance(raw_scores, bool):
            raise InvalidRequestError(f"raw_scores must be true or false, got {raw_scores!r}")
        trunc = Truncation.parse(truncate, direction, Strategy.LONGEST_FIRST)
        return cls(raw_scores, trunc.enabled, trunc.side)


@dataclass(frozen=True)
class RerankResult:
    """One document: its position in the caller's list, its score, and (if asked) its text."""

    index: int
    score: float
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """TEI's shape: {index, score}, plus text when it was asked for."""
        out: dict[str, Any] = {"index": self.index, "score": self.score}
        return out if self.text is None else {**out, "text": self.text}


def check_documents(query: object, documents: object) -> tuple[str, list[str]]:
    if isinstance(documents, str) or not isinstance(documents, (list, tuple)):
        raise InvalidRequestError(f"documents must be a list of strings, got {type(documents).__name__}")
    if not documents:
        raise InvalidRequestError("documents is an empty list; give at least one document to rank")
    return check_text(query, "query"), [check_text(d, f"document {i}") for i, d in enumerate(documents)]


def ranked(scores: Sequence[float], documents: Sequence[str], top_k: int | None, with_text: bool) -> list[RerankResult]:
    """Best first; ties keep the documents' order."""
    order = postprocess.rank(np.asarray(scores, dtype=np.float32), top_k)
    return [RerankResult(int(i), float(scores[i]), documents[i] if with_text else None) for i in order]


class Reranker(Task):
    """Rank documents by relevance to a query with an exported cross-encoder (one or two logits).

    >>> rr = Reranker.load("models/mxbai-rerank-base")
    >>> rr.rerank("what is panda?", ["hi", "The giant panda is a bear."], return_documents=True)
    [RerankResult(index=1, score=0.98..., text='The giant panda is a bear.'), RerankResult(index=0, ...)]
    """

    task = TaskName.RERANK

    def __init__(self, model: LoadedModel) -> None:
        info = model.info
        if not is_cross_encoder(info):
            raise ModelLoadError(
                f"{info.path} is a {info.task} model with {info.num_labels} labels; a reranker is a cross-encoder "
                "with one relevance logit or two (not relevant, relevant)"
            )
        super().__init__(model)

    def predict(self, pairs: Sequence[TextPair], parameters: RerankParameters | None = None) -> list[float]:
        """Relevance of each validated (query, document) pair, in input order, in one length-sorted run."""
        parameters = parameters or RerankParameters()
        trunc = Truncation(parameters.truncation, parameters.truncation_direction, Strategy.LONGEST_FIRST)
        encoded = first_error(self.model.tokenizer.encode_rows([(p.text, p.text_pair) for p in pairs], trunc))
        self.warn_truncated([e.truncated for e in encoded])
        scores = postprocess.relevance(self.model.logits(encoded), parameters.raw_scores)
        return [float(s) for s in scores]

    def predict_scores(
        self,
        query: str,
        documents: Sequence[str],
        *,
        raw_scores: bool = False,
        truncation: bool = True,
        truncation_direction: str = "right",
    ) -> list[float]:
        """Each document's relevance, in the documents' order (CrossEncoder.predict's order)."""
        query, docs = check_documents(query, documents)
        parameters = RerankParameters.parse(raw_scores, truncation, truncation_direction)
        return self.predict([TextPair(query, d) for d in docs], parameters)

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        return_documents: bool = False,
        *,
        raw_scores: bool = False,
        truncation: bool = True,
        truncation_direction: str = "right",
    ) -> list[RerankResult]:
        """The documents best first (the best `top_k` if given), each with its index in `documents`."""
        k = postprocess.parse_top_k(top_k)
        scores = self.predict_scores(
            query, documents, raw_scores=raw_scores, truncation=truncation, truncation_direction=truncation_direction
        )
        return ranked(scores, list(documents), k, return_documents)
