"""`engine classify`: texts from the command line, a file or standard input."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from engine.errors import InvalidRequestError
from engine.model.resolve import DEFAULT_MODEL
from engine.runtime.postprocess import Activation
from engine.tasks import registry
from engine.tasks.registry import TaskName


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, and each option's default in its help, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        silent = action.default in (None, False, [], argparse.SUPPRESS) or not action.option_strings
        if silent or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def read_texts(source: str) -> list[str]:
    """One text per non-blank line of a file, or of standard input for `-`."""
    try:
        if source == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(source, encoding="utf-8") as f:
                lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"cannot read texts from {source}: {exc}") from None
    return [line for line in lines if line.strip()]


def classify(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="engine classify",
        description="Classify texts; prints one JSON line per text: {text, result: [{label, score}, ...]}.\n\n"
        "  engine classify TEXT...             the model shipped with the package (language identification)\n"
        "  engine classify MODEL TEXT...       MODEL: a model directory, an export alias or a Hugging Face id\n"
        "  engine classify MODEL -             one text per line from standard input (or --file FILE)",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("words", nargs="*", metavar="[MODEL] TEXT", help="the model (optional) and the texts")
    parser.add_argument("--file", help="texts, one per line (- for standard input)")
    parser.add_argument("--top-k", type=int, default=None, help="best k labels (default: all, best first)")
    parser.add_argument(
        "--function-to-apply",
        choices=[a.value for a in Activation],
        help="default: the model's own",
    )
    parser.add_argument("--candidate-labels", help="comma-separated labels: zero-shot with an NLI model")
    parser.add_argument("--multi-label", action="store_true", help="zero-shot: score each label on its own")
    args = parser.parse_args(argv)
    words = list(args.words)
    texts_from = args.file
    if words and words[-1] == "-" and texts_from is None:
        words, texts_from = words[:-1], "-"
    # one word and no file: it is the text, for the shipped model; otherwise the first word names the model
    model = words.pop(0) if (len(words) > 1 or (words and texts_from)) else None
    texts = words + (read_texts(texts_from) if texts_from else [])
    if not texts:
        parser.error("give at least one text (or --file FILE, or - for standard input)")
    return _run(model, texts, args)


def _run(model: str | None, texts: list[str], args: argparse.Namespace) -> int:
    from engine.model import manifest
    from engine.model.resolve import resolve
    from engine.tasks.params import ClassificationOutput, outputs_to_json

    directory = resolve(model)
    info = manifest.read(directory).info
    result: list[ClassificationOutput] | list[list[ClassificationOutput]]
    if args.candidate_labels:
        from engine.tasks.zero_shot import ZeroShotClassifier

        zs = ZeroShotClassifier.load(directory)
        result = zs(texts, candidate_labels=args.candidate_labels, multi_label=args.multi_label)
    else:
        from engine.tasks.text_classification import TextClassifier

        if registry.task_of(info) is TaskName.ZERO_SHOT:
            print(
                f"note: {model} is a zero-shot (NLI) model: without --candidate-labels it answers its own labels "
                f"{list(info.labels)}; give --candidate-labels A,B,C to classify by your labels",
                file=sys.stderr,
            )
        clf = TextClassifier.load(directory)
        result = clf(texts, top_k=args.top_k, function_to_apply=args.function_to_apply)
    if directory == DEFAULT_MODEL and model is None:
        print(
            "note: the shipped language-identification model; name another: engine classify MODEL TEXT", file=sys.stderr
        )
    for text, outputs in zip(texts, outputs_to_json(result)):  # a list of texts: one list of outputs each
        print(json.dumps({"text": text, "result": outputs}, ensure_ascii=False))
    return 0
