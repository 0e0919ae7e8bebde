"""The `engine` command: `engine classify`, `engine score` (batch files), `engine serve` (HTTP)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence

from .errors import EngineError


def classify(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="engine classify", description="Classify texts given on the command line.")
    parser.add_argument("model_dir")
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--top-k", type=int, default=None, help="best k labels (default: all)")
    parser.add_argument("--function-to-apply", choices=["sigmoid", "softmax", "none"])
    parser.add_argument("--candidate-labels", help="comma-separated labels: zero-shot with an NLI model")
    parser.add_argument("--multi-label", action="store_true")
    args = parser.parse_args(argv)
    from .spec import outputs_to_json

    if args.candidate_labels:
        from .zero_shot import ZeroShotClassifier

        zs = ZeroShotClassifier.load(args.model_dir)
        result = zs(args.texts, candidate_labels=args.candidate_labels, multi_label=args.multi_label)
    else:
        from .text_classification import TextClassifier

        clf = TextClassifier.load(args.model_dir)
        result = clf(args.texts, top_k=args.top_k, function_to_apply=args.function_to_apply)
    for text, outputs in zip(args.texts, result):  # one list of outputs per text
        print(json.dumps({"text": text, "result": outputs_to_json(outputs)}, ensure_ascii=False))  # type: ignore[arg-type]
    return 0


def _lazy(module: str) -> Callable[[Sequence[str]], int]:
    """Subcommands living in optional modules are imported only when asked for."""

    def run(argv: Sequence[str]) -> int:
        return int(importlib.import_module(module, __package__).cli(argv))

    return run


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "classify": classify,
    "score": _lazy(".scoring"),
    "serve": _lazy(".server"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: engine {{{','.join(COMMANDS)}}} ...  (engine COMMAND --help for details)", file=sys.stderr)
        return 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
