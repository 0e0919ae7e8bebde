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


def test_help_lists_every_command_with_a_line_each() -> None:
    from engine.cli import COMMANDS

    out = subprocess.run([sys.executable, "-m", "engine.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("  ")]
    assert listed == list(COMMANDS)
    for name in COMMANDS:  # every option of every command has help text
        sub = subprocess.run([sys.executable, "-m", "engine.cli", name, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0, name
    serve = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--help"], capture_output=True, text=True)
    assert "(default: 127.0.0.1)" in serve.stdout
    assert "(default: 8080)" in serve.stdout


def test_classify_reads_standard_input_and_files(exported: Any, tmp_path: Any) -> None:
    model = str(exported("bert", "fp32"))
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "classify", model, "-"],
        input="first text\n\nsecond text\n",
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["text"] for line in out.stdout.splitlines()] == ["first text", "second text"]
    texts = tmp_path / "texts.txt"
    texts.write_text("from a file\n", encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "classify", model, "--file", str(texts)], capture_output=True, text=True
    )
    assert [json.loads(line)["text"] for line in out.stdout.splitlines()] == ["from a file"]


def test_an_nli_model_without_labels_says_it_is_zero_shot(exported: Any) -> None:
    model = str(exported("bert-nli", "fp32"))
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "classify", model, "some text"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "is a zero-shot (NLI) model" in out.stderr
    assert "--candidate-labels" in out.stderr


def test_sigterm_ends_a_scoring_job_as_ctrl_c_does(exported: Any, tmp_path: Any) -> None:
    """State kept, a message saying where it stopped, exit 143 (errors.EXIT_TERMINATED); the same command resumes."""
    import os
    import signal
    import time

    from engine.errors import EXIT_TERMINATED

    model = str(exported("bert", "fp32"))
    rows = tmp_path / "in.jsonl"
    rows.write_text("".join(json.dumps({"text": f"text number {i} " * 8}) + "\n" for i in range(20000)))
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "engine.cli", "score", model, str(rows), str(out), "--chunk-rows", "64"]
    proc = subprocess.Popen([*cmd, "--threads", "1"], stderr=subprocess.PIPE, text=True)
    state = out.with_name(out.name + ".partial")
    for _ in range(6000):  # until the first chunk is committed (bounded: 60 s of polling at most)
        if state.is_dir() and any(state.glob("0*.jsonl")):
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_TERMINATED, err
    assert "terminated (SIGTERM) after" in err
    assert "run the same command again to resume" in err
    assert any(state.glob("0*.jsonl"))  # the finished chunks are kept
    assert not out.exists()
