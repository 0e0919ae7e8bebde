"""`engine export`, `engine adopt` and `engine check`: making and checking model directories."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def export(argv: Sequence[str]) -> int:
    """engine/export/export.py (torch, transformers and onnxscript come with the export extra)."""
    try:
        from engine.export.export import main as export_main

        return export_main(argv)
    except ModuleNotFoundError as exc:
        print(
            f"error: engine export needs the export extra (missing module {exc.name!r}): "
            "pip install 'offline-textclf-engine[export]'",
            file=sys.stderr,
        )
        return 1


def adopt(argv: Sequence[str]) -> int:
    """engine/export/adopt.py: a ready-made ONNX export, no torch."""
    from engine.export.adopt import main as adopt_main

    return adopt_main(argv)


def check(argv: Sequence[str]) -> int:
    """engine/export/check.py: int8 against the kept fp32 graph on the user's own texts, no torch."""
    from engine.export.check import main as check_main

    return check_main(argv)
