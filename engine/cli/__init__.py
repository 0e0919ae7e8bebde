"""The `engine` command: one module per command, one table of them (COMMANDS).

Exit codes: `engine score` takes its codes from errors.OUTCOMES (0 all rows scored, 1 some rows failed, 2 nothing
done, 3 stopped by --max-errors, 4 failed while running, 130 interrupted, 143 terminated); the other commands exit
1 on any engine error (they keep no partial work) and 2 on a usage error.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from engine import __version__
from engine.errors import EngineError

# command -> (module in engine.cli, its function, one line for `engine --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "classify": ("classify", "classify", "classify texts (or zero-shot with --candidate-labels)"),
    "rerank": ("rerank", "rerank", "rank documents by relevance to a query with a cross-encoder"),
    "score": ("score", "score", "score a .jsonl, .csv or .parquet file, resumably (or on Ray with --ray)"),
    "serve": ("serve", "serve", "serve models over HTTP: HF Inference API, Cloudflare, TEI and Cohere shapes"),
    "export": ("make", "export", "make a model directory from a transformers checkpoint (the export extra)"),
    "adopt": ("make", "adopt", "make a model directory from a ready-made ONNX export (no torch)"),
    "check": ("make", "check", "does an int8 export keep fp32's decisions on your own texts?"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, _, summary) in COMMANDS.items()]
    return (
        f"usage: engine COMMAND [options]   (offline-textclf-engine {__version__})\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\nengine COMMAND --help shows each command's options and their defaults."
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv and argv[0] == "--version":
        print(__version__)
        return 0
    if not argv or argv[0] not in COMMANDS:
        unknown = f"engine: unknown command {argv[0]!r}\n\n" if argv else ""
        print(unknown + usage(), file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[argv[0]]
    run = getattr(importlib.import_module(f"engine.cli.{module}"), function)
    try:
        code: int = run(argv[1:])
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
