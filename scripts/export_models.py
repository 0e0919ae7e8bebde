#!/usr/bin/env python
"""Export a Hugging Face sequence classifier to a verified model directory: the same as `engine export`.

    python scripts/export_models.py SOURCE --output DIR [--precision int8|fp32] [--calibration-file F]
    python scripts/export_models.py --list

The code lives in the installed package (engine/export/export.py); this file runs it from a clone.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a clone that was not pip-installed

from engine.export.export import main

if __name__ == "__main__":
    sys.exit(main())
