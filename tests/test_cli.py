"""`engine classify`: the command the README's quick start ends with."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from engine import TextClassifier
from engine.cli import main


def test_classify_prints_one_json_line_per_text(exported: Any, capsys: Any) -> None:
    model = exported("bert", "fp32")
    assert main(["classify", str(model), "I like you. I love you", "Meh."]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == ["I like you. I love you", "Meh."]
    expected = TextClassifier.load(model)("Meh.", top_k=None)
    assert lines[1]["result"] == [{"label": o.label, "score": o.score} for o in expected]


def test_bad_model_dir_is_a_clean_error(tmp_path: Any, capsys: Any) -> None:
    assert main(["classify", str(tmp_path / "missing"), "text"]) == 1
    assert "is not a model directory: it does not exist" in capsys.readouterr().err


def test_unknown_command_shows_usage() -> None:
    out = subprocess.run([sys.executable, "-m", "engine.cli", "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "usage" in out.stderr
