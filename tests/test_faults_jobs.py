"""Batch jobs meeting faults (issue 30): --restart beside a running job, broken CSV, an input edited between kill
and resume, a full disk during the final assembly, an OUTPUT that cannot be written. Each test failed before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import TextClassifier
from engine.errors import JobLockedError, RecordFileError, ResumeRefusedError
from engine.jobs.file_job import score_file, state_path
from engine.jobs.resume import JobState

ROOT = Path(__file__).resolve().parent.parent
WORDS = ["good", "bad", "movie", "film", "great", "terrible", "plot", "acting", "love", "hate", "boring", "fun"]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run_cli(*args: Any, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """`engine score ARGS` in a child; `prelude` runs first in it (resource limits)."""
    code = f"import sys\n{prelude}\nfrom engine.cli import main\nsys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, "score", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env(), timeout=120)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def text(i: int) -> str:
    return " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(1 + i % 9))


class Killed(BaseException):
    """The process dying: not an Exception, so nothing on the way up handles it."""


def die_after_commits(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    real = JobState.commit
    calls = {"n": 0}

    def commit(self: JobState, k: int, records: list[dict[str, Any]], *digest: Any) -> None:
        if calls["n"] >= n:
            raise Killed
        calls["n"] += 1
        real(self, k, records, *digest)

    monkeypatch.setattr(JobState, "commit", commit)


@pytest.fixture(scope="module")
def model(exported: Any) -> Path:
    return Path(exported("distilbert", "fp32"))


@pytest.fixture(scope="module")
def clf(model: Path) -> TextClassifier:
    return TextClassifier.load(model, threads=1)


def test_restart_takes_the_lock_and_leaves_a_running_job_alone(
    tmp_path: Path, clf: TextClassifier, model: Path
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"text": text(i)} for i in range(40)])
    out = tmp_path / "out.jsonl"
    running = JobState.open(state_path(out), {"input": "another job", "model": "m", "parameters": {}})
    try:
        running.commit(0, [{"row": 0, "id": 0, "labels": ["x"], "scores": [1.0], "truncated": False}])
        before = {p.name: p.read_bytes() for p in state_path(out).iterdir()}
        with pytest.raises(JobLockedError):
            score_file(clf, inp, out, chunk_rows=16, restart=True)
        result = run_cli(model, inp, out, "--restart", "--quiet")
        assert result.returncode == 2
        assert "locked" in result.stderr
        assert {p.name: p.read_bytes() for p in state_path(out).iterdir()} == before  # untouched
        assert not out.exists()
    finally:
        running.close()
    assert score_file(clf, inp, out, chunk_rows=16, restart=True).rows == 40  # once it is gone


def test_unterminated_quote_refuses_the_file_before_any_work(
    tmp_path: Path, clf: TextClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp = tmp_path / "in.csv"
    inp.write_text('id,text\n1,good film\n2,"bad plot\n3,great acting\n4,boring\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    monkeypatch.setattr("engine.jobs.file_job.score_chunk", lambda *a: pytest.fail("a chunk was scored"))
    with pytest.raises(RecordFileError, match=r"line 3.*quote"):
        score_file(clf, inp, out)
    assert not out.exists()
    assert not state_path(out).exists()
    inp.write_text('id,text\n1,"good" film\n', encoding="utf-8")  # text after a closing quote: merged before
    with pytest.raises(RecordFileError, match="line 2"):
        score_file(clf, inp, out)


def test_ragged_csv_rows_are_reported_as_their_rows_errors(tmp_path: Path, clf: TextClassifier) -> None:
    inp = tmp_path / "in.csv"
    inp.write_text("text,label\ngood film,pos\na,b,c,d\nonly one cell\nbad plot,neg\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    summary = score_file(clf, inp, out)
    assert (summary.rows, summary.errors) == (4, 2)
    assert [json.loads(line)["row"] for line in out.read_text().splitlines()] == [0, 3]
    errors = [json.loads(line) for line in out.with_name("out.jsonl.errors.jsonl").read_text().splitlines()]
    assert [e["row"] for e in errors] == [1, 2]
    assert "4 cell(s), the header has 2" in errors[0]["error"]
    assert "1 cell(s)" in errors[1]["error"]


def big_input(path: Path, rows: int) -> Path:
    """Rows of ~20 kB (an unused column), so the middle of the file is out of reach of the first/last MiB."""
    return write_jsonl(path, [{"text": text(i), "pad": "x" * 20_000} for i in range(rows)])


def edit_in_place(path: Path, row: int) -> None:
    """Change row `row`'s text without changing the file's size, then restore its mtime."""
    st = path.stat()
    lines = path.read_bytes().split(b"\n")
    old = json.loads(lines[row])["text"]
    new = ("x" * len(old)) if old[0] != "x" else ("y" * len(old))
    lines[row] = lines[row].replace(json.dumps(old).encode(), json.dumps(new).encode(), 1)
    path.write_bytes(b"\n".join(lines))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size


def test_input_edited_between_kill_and_resume_is_caught_by_its_digest(
    tmp_path: Path, clf: TextClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp = big_input(tmp_path / "in.jsonl", 150)  # 3 MB
    out = tmp_path / "out.jsonl"
    with monkeypatch.context() as m:
        die_after_commits(m, 5)  # rows 0-79 scored: ~1.6 MB of the file
        with pytest.raises(Killed):
            score_file(clf, inp, out, chunk_rows=16)
    edit_in_place(inp, 60)  # ~1.2 MB in: an already scored row, between the first and the last MiB
    with pytest.raises(ResumeRefusedError, match=r"chunk 3.*--restart"):
        score_file(clf, inp, out, chunk_rows=16)
    assert score_file(clf, inp, out, chunk_rows=16, restart=True).resumed_rows == 0


def test_an_edit_in_rows_not_yet_scored_resumes_to_the_edited_files_result(
    tmp_path: Path, clf: TextClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp = big_input(tmp_path / "in.jsonl", 150)
    out, clean = tmp_path / "out.jsonl", tmp_path / "clean.jsonl"
    with monkeypatch.context() as m:
        die_after_commits(m, 3)  # rows 0-47, ~1 MB
        with pytest.raises(Killed):
            score_file(clf, inp, out, chunk_rows=16)
    edit_in_place(inp, 90)  # ~1.8 MB in: not read when the job was killed
    summary = score_file(clf, inp, out, chunk_rows=16)
    assert summary.resumed_rows == 48
    score_file(clf, inp, clean, chunk_rows=16)
    assert out.read_bytes() == clean.read_bytes()


FULL_DISK = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (48 * 1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
"""


def test_no_temp_file_survives_a_full_disk_in_the_final_assembly(tmp_path: Path, model: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "text": text(i)} for i in range(1500)])
    out, clean = tmp_path / "out.csv", tmp_path / "clean.csv"
    args = ["--id-column", "id", "--chunk-rows", "64", "--threads", "1", "--quiet"]
    failed = run_cli(model, inp, out, *args, prelude=FULL_DISK)  # chunks fit, the ~150 kB CSV output does not
    assert failed.returncode == 4, failed.stderr
    assert not out.exists()
    assert state_path(out).exists()
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert run_cli(model, inp, out, *args).returncode == 0
    assert run_cli(model, inp, clean, *args).returncode == 0
    assert out.read_bytes() == clean.read_bytes()
    assert not state_path(out).exists()


@pytest.mark.parametrize("where", ["directory", "missing parent"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(
    tmp_path: Path, clf: TextClassifier, model: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"text": text(i)} for i in range(20)])
    if where == "directory":
        out = tmp_path / "results.jsonl"
        out.mkdir()
    else:
        out = tmp_path / "no-such-folder" / "results.jsonl"
    with monkeypatch.context() as m:
        m.setattr("engine.jobs.file_job.score_chunk", lambda *a: pytest.fail("a chunk was scored"))
        with pytest.raises(RecordFileError, match="directory" if where == "directory" else "does not exist"):
            score_file(clf, inp, out)
    assert not state_path(out).exists()
    result = run_cli(tmp_path / "no-model-here", inp, out)  # refused before the model is even read
    assert result.returncode == 2
    assert "OUTPUT" in result.stderr
