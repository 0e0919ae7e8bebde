"""`engine rerank`: documents best first for one query, with a cross-encoder."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from engine.errors import InvalidRequestError


def rerank(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="engine rerank",
        description="Rank documents by relevance to a query with a cross-encoder; prints one JSON line per "
        "document, best first: {index, score, text}.",
    )
    parser.add_argument(
        "model_dir", metavar="MODEL", help="a cross-encoder: directory, export alias or Hugging Face id"
    )
    parser.add_argument("query", help="the query the documents are ranked against")
    parser.add_argument("documents", nargs="*", help="documents to rank (or --documents-file)")
    parser.add_argument("--documents-file", help="documents, one per line (- for standard input)")
    parser.add_argument("--top-k", type=int, default=None, help="best k documents (default: all)")
    parser.add_argument("--raw-scores", action="store_true", help="logits instead of probabilities")
    parser.add_argument("--no-truncation", action="store_true", help="a pair too long for the model fails instead")
    args = parser.parse_args(argv)
    documents = list(args.documents)
    if args.documents_file:
        try:
            source = sys.stdin if args.documents_file == "-" else open(args.documents_file, encoding="utf-8")  # noqa: SIM115
            with source:
                documents += [line.rstrip("\n") for line in source if line.strip()]
        except OSError as exc:
            raise InvalidRequestError(f"cannot read --documents-file {args.documents_file}: {exc}") from None
    from engine.tasks.rerank import Reranker

    reranker = Reranker.load(args.model_dir)
    results = reranker.rerank(
        args.query,
        documents,
        top_k=args.top_k,
        return_documents=True,
        raw_scores=args.raw_scores,
        truncation=not args.no_truncation,
    )
    for r in results:
        print(json.dumps(r.to_dict(), ensure_ascii=False))
    return 0
