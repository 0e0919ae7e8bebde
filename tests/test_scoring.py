"""`engine score` and engine.score_file / score_records: formats, order, bad rows, resume after kill -9, memory."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import TextClassifier, ZeroShotClassifier
from engine.errors import RecordFileError, TooManyErrorsError
from engine.jobs import formats
from engine.jobs.file_job import score_file, state_path
from engine.jobs.resume import JobLockedError, JobState, ResumeRefusedError
from engine.jobs.scoring import ScoringOptions, score_records

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "good",
    "bad",
    "movie",
    "film",
    "great",
    "terrible",
    "plot",
    "acting",
    "love",
    "hate",
    "boring",
    "fun",
    "the",
    "a",
    "was",
    "is",
    "not",
    "very",
]

NEEDS_PYARROW = pytest.mark.skipif(
    importlib.util.find_spec("pyarrow") is None, reason="needs pyarrow: the parquet extra"
)


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 40))) for _ in range(n)]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_input(path: Path, records: list[dict[str, Any]]) -> Path:
    if path.suffix == ".jsonl":
        return write_jsonl(path, records)
    if path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(records[0]))
            w.writeheader()
            w.writerows(records)
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=17)
    return path


def read_output(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for r in rows:
            r["score"] = float(r["score"])
            r["labels"], r["scores"] = json.loads(r["labels"]), json.loads(r["scores"])
            r["truncated"] = {"true": True, "false": False}[r["truncated"]]
        return rows
    import pyarrow.parquet as pq

    return list(pq.read_table(path).to_pylist())


def read_errors(output: Path) -> list[dict[str, Any]]:
    path = output.with_name(output.name + ".errors.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_cli(*args: Any) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "engine.cli", "score", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=120)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def model(exported: Any) -> Path:
    return Path(exported("distilbert", "fp32"))


@pytest.fixture(scope="module")
def clf(model: Path) -> TextClassifier:
    return TextClassifier.load(model, threads=1)


# Formats, order, ids ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst"),
    [("jsonl", "jsonl"), ("csv", "csv"), pytest.param("parquet", "parquet", marks=NEEDS_PYARROW), ("csv", "jsonl")],
)
def test_round_trip_keeps_order_ids_and_scores(tmp_path: Path, clf: TextClassifier, src: str, dst: str) -> None:
    ts = texts(60)
    ids = [f"doc-{i * 7 % 60}" for i in range(60)]  # ids not in sorted order: the output must follow the input
    inp = write_input(tmp_path / f"in.{src}", [{"id": i, "text": t} for i, t in zip(ids, ts)])
    out = tmp_path / f"out.{dst}"
    summary = score_file(clf, inp, out, id_column="id", chunk_rows=25)
    assert (summary.rows, summary.errors, summary.errors_file) == (60, 0, None)
    rows = read_output(out)
    assert [r["id"] for r in rows] == ids
    expected = [p.outputs for p in clf.predict(ts[:25], top_k_all()) + clf.predict(ts[25:50], top_k_all())]
    expected += [p.outputs for p in clf.predict(ts[50:], top_k_all())]
    for row, outs in zip(rows, expected):
        assert row["labels"] == [o.label for o in outs]
        assert row["label"] == outs[0].label
        assert row["scores"] == pytest.approx([o.score for o in outs], abs=1e-6)
        assert row["score"] == max(row["scores"])
        assert row["truncated"] is False
    assert list(rows[0]) == ["id", "label", "score", "labels", "scores", "truncated"]
    assert not state_path(out).exists()


def top_k_all() -> Any:
    from engine import TextClassificationParameters

    return TextClassificationParameters(top_k=None)


def test_row_numbers_when_no_id_column_and_top_k(tmp_path: Path, clf: TextClassifier) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"text": t, "other": 1} for t in texts(10)])
    score_file(clf, inp, tmp_path / "out.jsonl", top_k=2, chunk_rows=4)
    rows = read_output(tmp_path / "out.jsonl")
    assert [r["row"] for r in rows] == list(range(10))
    assert all(len(r["labels"]) == 2 for r in rows)


@NEEDS_PYARROW
def test_parquet_ids_keep_their_type(tmp_path: Path, clf: TextClassifier) -> None:
    inp = write_input(tmp_path / "in.parquet", [{"key": 100 + i, "text": t} for i, t in enumerate(texts(20))])
    score_file(clf, inp, tmp_path / "out.parquet", id_column="key")
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out.parquet")
    assert str(table.schema.field("key").type) == "int64"
    assert table.column("key").to_pylist() == list(range(100, 120))


def test_text_pairs(tmp_path: Path, exported: Any) -> None:
    from engine import TextClassificationParameters, TextPair

    bert = TextClassifier.load(exported("bert", "fp32"), threads=1)
    pairs = list(zip(texts(12, seed=1), texts(12, seed=2)))
    inp = write_input(tmp_path / "in.csv", [{"q": a, "d": b} for a, b in pairs])
    score_file(bert, inp, tmp_path / "out.jsonl", text_column="q", pair_column="d", function_to_apply="none")
    raw = TextClassificationParameters.parse(top_k=None, function_to_apply="none")

    def flat(outputs: list[Any]) -> list[tuple[str, float]]:
        return [(o.label, o.score) for p in outputs for o in p.outputs]

    rows = read_output(tmp_path / "out.jsonl")
    got = [(label, score) for r in rows for label, score in zip(r["labels"], r["scores"])]
    expected = flat(bert.predict([TextPair(a, b) for a, b in pairs], raw))
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert {g[0] for g in got} == {"NEGATIVE", "POSITIVE"}
    assert [g[1] for g in got] == pytest.approx([e[1] for e in expected], abs=1e-5)
    alone = flat(bert.predict([a for a, _ in pairs], raw))  # the pair's second text really was used
    assert max(abs(g[1] - a[1]) for g, a in zip(sorted(got), sorted(alone))) > 1e-2


def test_zero_shot(tmp_path: Path, exported: Any) -> None:
    zs_model = exported("bert-nli", "fp32")
    ts = texts(15)
    inp = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in ts])
    out = tmp_path / "out.csv"
    result = run_cli(zs_model, inp, out, "--candidate-labels", "sports, politics,food", "--multi-label", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --quiet: no summary
    rows = read_output(out)
    zs = ZeroShotClassifier.load(zs_model)
    expected = zs(ts, candidate_labels=["sports", "politics", "food"], multi_label=True)
    for row, outs in zip(rows, expected):
        assert isinstance(outs, list)
        assert row["labels"] == [o.label for o in outs]
        assert row["scores"] == pytest.approx([o.score for o in outs], abs=1e-6)
    assert len(rows) == 15


def test_score_records_is_lazy_and_ordered(clf: TextClassifier) -> None:
    pulled = 0

    def records() -> Iterator[Any]:
        nonlocal pulled
        for i, t in enumerate(texts(30)):
            pulled += 1
            yield {"text": t, "n": i} if i != 5 else "not a dict"

    it = score_records(records(), clf, id_column="n", chunk_rows=8)
    first = next(it)
    assert pulled == 8  # one chunk read ahead, not the whole iterable
    rest = list(it)
    rows = [first, *rest]
    assert [r.row for r in rows] == list(range(30))
    assert rows[5].error == "record is a str, not a mapping"
    assert rows[5].outputs == []
    assert [r.id for r in rows if r.error is None] == [i for i in range(30) if i != 5]
    assert rows[0].outputs[0] == clf.predict([texts(30)[0]], top_k_all())[0].outputs[0]


# Bad rows and exit codes ---------------------------------------------------------------------------------------


def bad_rows_file(path: Path) -> Path:
    lines = [json.dumps({"id": f"ok{i}", "text": t}).encode() for i, t in enumerate(texts(20))]
    lines[3] = json.dumps({"id": "empty", "text": "   "}).encode()
    lines[5] = json.dumps({"id": "missing", "body": "x"}).encode()
    lines[7] = json.dumps({"id": "number", "text": 42}).encode()
    lines[9] = b'{"id": "latin1", "text": "caf\xe9"}'
    lines[11] = b"{not json"
    lines[13] = json.dumps({"id": "long", "text": "word " * 500}).encode()
    lines[15] = json.dumps({"text": "no id here"}).encode()
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_bad_rows_go_to_the_errors_file(tmp_path: Path, model: Path) -> None:
    inp = bad_rows_file(tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    result = run_cli(model, inp, out, "--id-column", "id", "--no-truncation", "--chunk-rows", "6")
    assert result.returncode == 1, result.stderr
    assert "7 failed" in result.stderr
    assert "rows/s" in result.stderr
    errors = read_errors(out)
    assert [(e["row"], e["id"]) for e in errors] == [
        (3, "empty"),
        (5, "missing"),
        (7, "number"),
        (9, None),
        (11, None),
        (13, "long"),
        (15, None),
    ]
    reasons = [e["error"] for e in errors]
    assert "empty" in reasons[0]
    assert "'text' is missing" in reasons[1]
    assert "must be a string, got int" in reasons[2]
    assert "invalid UTF-8" in reasons[3]
    assert "not valid JSON" in reasons[4]
    assert "window" in reasons[5]
    assert "turn truncation on" in reasons[5]
    assert "id column 'id'" in reasons[6]
    good = [r["id"] for r in read_output(out)]
    assert good == [f"ok{i}" for i in range(20) if i not in {3, 5, 7, 9, 11, 13, 15}]


def test_invalid_utf8_in_csv_is_one_bad_row(tmp_path: Path, clf: TextClassifier) -> None:
    inp = tmp_path / "in.csv"
    inp.write_bytes(b'id,text\na,"fine text"\nb,"caf\xe9 au lait"\nc,"also, fine"\n')
    out = tmp_path / "out.csv"
    summary = score_file(clf, inp, out, id_column="id")
    assert (summary.rows, summary.errors) == (3, 1)
    assert [r["id"] for r in read_output(out)] == ["a", "c"]
    [error] = read_errors(out)
    assert error["id"] is None
    assert error["row"] == 1
    assert "invalid UTF-8" in error["error"]


def test_clean_run_leaves_no_stale_errors_file(tmp_path: Path, clf: TextClassifier) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts(5)])
    stale = tmp_path / "out.jsonl.errors.jsonl"
    stale.write_text('{"row": 0, "error": "old"}\n')
    score_file(clf, inp, tmp_path / "out.jsonl")
    assert not stale.exists()


def test_max_errors_stops_and_a_higher_bound_resumes(tmp_path: Path, model: Path) -> None:
    inp = bad_rows_file(tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    stopped = run_cli(model, inp, out, "--chunk-rows", "4", "--max-errors", "2", "--quiet")
    assert stopped.returncode == 3
    assert "--max-errors 2" in stopped.stderr
    assert not out.exists()
    assert state_path(out).exists()
    assert [e["row"] for e in read_errors(out)] == [3, 5, 7]  # the chunk that went over the bound is included
    resumed = run_cli(model, inp, out, "--chunk-rows", "4", "--max-errors", "10")
    assert resumed.returncode == 1
    assert "done before (resumed)" in resumed.stderr
    clean = tmp_path / "clean.jsonl"
    assert run_cli(model, inp, clean, "--chunk-rows", "4").returncode == 1
    assert out.read_bytes() == clean.read_bytes()
    assert read_errors(out) == read_errors(clean)


def test_max_errors_in_the_library(tmp_path: Path, clf: TextClassifier) -> None:
    inp = bad_rows_file(tmp_path / "in.jsonl")
    with pytest.raises(TooManyErrorsError, match="more than --max-errors 0"):
        score_file(clf, inp, tmp_path / "out.jsonl", max_errors=0, chunk_rows=4)
    assert (
        score_file(clf, inp, tmp_path / "out.jsonl", max_errors=5, chunk_rows=4).errors == 5
    )  # the bound itself is allowed


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"chunk_rows": 0}, "chunk_rows must be a positive integer"),
        ({"id_column": "label"}, "cannot be named 'label'"),
        ({"id_column": "text"}, "must differ"),
        ({"candidate_labels": "a,b", "pair_column": "p"}, "single texts"),
        ({"candidate_labels": "a,a"}, "duplicates"),
        ({"top_k": 0}, "top_k must be >= 1"),
        ({"truncation_direction": "up"}, "'right' or 'left'"),
    ],
)
def test_options_are_checked_before_anything_runs(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScoringOptions.parse(**fields)


def test_batches_at_once_write_the_one_at_a_time_output(tmp_path: Path, model: Path) -> None:
    """`engine score` runs one batch per core at once by default; --concurrent-batches 1 runs them in turn on
    every core. Same rows, same labels, scores within float rounding (the runs' thread counts differ)."""
    inp = write_input(tmp_path / "in.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts(80))])
    outs = []
    for setting in (["--concurrent-batches", "1"], [], ["--concurrent-batches", "3", "--threads", "3"]):
        out = tmp_path / f"out{len(outs)}.jsonl"
        result = run_cli(model, inp, out, "--id-column", "id", *setting)
        assert result.returncode == 0, result.stderr
        outs.append(read_output(out))
    for other in outs[1:]:
        assert [(r["id"], r["labels"]) for r in other] == [(r["id"], r["labels"]) for r in outs[0]]
        for a, b in zip(other, outs[0]):
            assert a["scores"] == pytest.approx(b["scores"], abs=1e-6)
    bad = run_cli(model, inp, tmp_path / "bad.jsonl", "--id-column", "id", "--concurrent-batches", "0")
    assert bad.returncode == 2
    assert "concurrent_batches must be a positive integer" in bad.stderr


def test_usage_errors_exit_2(tmp_path: Path, model: Path) -> None:
    inp = write_input(tmp_path / "in.csv", [{"body": "x"}])
    result = run_cli(model, inp, tmp_path / "out.csv")
    assert result.returncode == 2
    assert "no column(s) ['text']" in result.stderr
    result = run_cli(model, inp, tmp_path / "out.txt", "--text-column", "body")
    assert result.returncode == 2
    assert ".jsonl" in result.stderr
    assert run_cli(tmp_path / "nope", inp, tmp_path / "out.csv", "--text-column", "body").returncode == 2


def test_parquet_without_pyarrow_says_what_to_install(
    tmp_path: Path, clf: TextClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"text": "x"}])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(RecordFileError, match=r"offline-textclf-engine\[parquet\]"):
        score_file(clf, inp, tmp_path / "out.parquet")


# Resume ---------------------------------------------------------------------------------------------------------


class Killed(BaseException):
    """Stands in for the process dying: not an Exception, so nothing on the way up handles it."""


def die_after_commits(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    real = JobState.commit
    calls = {"n": 0}

    def commit(self: JobState, k: int, records: list[dict[str, Any]], *digest: Any) -> None:
        if calls["n"] >= n:
            raise Killed
        calls["n"] += 1
        real(self, k, records, *digest)

    monkeypatch.setattr(JobState, "commit", commit)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", pytest.param("parquet", marks=NEEDS_PYARROW)])
def test_resume_gives_identical_output_in_each_format(
    tmp_path: Path, clf: TextClassifier, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts(100)] + [{"text": ""}])
    clean, out = tmp_path / f"clean.{fmt}", tmp_path / f"out.{fmt}"
    score_file(clf, inp, clean, chunk_rows=16)
    with monkeypatch.context() as m:
        die_after_commits(m, 3)
        with pytest.raises(Killed):
            score_file(clf, inp, out, chunk_rows=16)
    assert not out.exists()
    assert len(list(state_path(out).glob("0*.jsonl"))) == 3
    summary = score_file(clf, inp, out, chunk_rows=16)
    assert summary.resumed_rows == 48
    assert summary.rows == 101
    assert out.read_bytes() == clean.read_bytes()
    assert read_errors(out) == read_errors(clean) == [{"row": 100, "error": read_errors(clean)[0]["error"]}]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", pytest.param("parquet", marks=NEEDS_PYARROW)])
def test_resume_decodes_no_row_it_already_scored(
    tmp_path: Path, clf: TextClassifier, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The finished rows are read again (text formats hash their bytes, so an edited input is still refused) but
    none becomes a record: every Row the reader makes is a row still to score. Before, all were decoded and then
    dropped. Parquet row groups of 17 rows: the first two are skipped unread, the third is cut inside."""
    records = [{"id": f"r{i}", "text": t} for i, t in enumerate(texts(100, seed=1))]
    inp = write_input(tmp_path / f"in.{fmt}", records)
    clean, out = tmp_path / "clean.jsonl", tmp_path / "out.jsonl"
    score_file(clf, inp, clean, chunk_rows=16, id_column="id")
    with monkeypatch.context() as m:
        die_after_commits(m, 3)
        with pytest.raises(Killed):
            score_file(clf, inp, out, chunk_rows=16, id_column="id")
    made: list[int] = []
    real_row = formats.Row

    def counted(*args: Any, **kwargs: Any) -> formats.Row:
        row = real_row(*args, **kwargs)
        made.append(row.index)
        return row

    monkeypatch.setattr(formats, "Row", counted)
    summary = score_file(clf, inp, out, chunk_rows=16, id_column="id")
    assert summary.resumed_rows == 48
    assert made == list(range(48, 100))
    assert out.read_bytes() == clean.read_bytes()


@pytest.mark.parametrize("where", ["writer", "remove"])
def test_death_while_assembling_the_output(
    tmp_path: Path, clf: TextClassifier, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed while OUTPUT is being assembled, or after the rename but before the state is removed."""
    inp = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts(40)])
    clean, out = tmp_path / "clean.csv", tmp_path / "out.csv"
    score_file(clf, inp, clean, chunk_rows=16)
    out.write_text("an older result\n")

    def die(*args: Any, **kwargs: Any) -> None:
        raise Killed

    with monkeypatch.context() as m:
        target = "engine.jobs.formats.Writer.close" if where == "writer" else "engine.jobs.resume.JobState.remove"
        m.setattr(target, die)
        with pytest.raises(Killed):
            score_file(clf, inp, out, chunk_rows=16)
    assert out.read_bytes() == (b"an older result\n" if where == "writer" else clean.read_bytes())
    assert state_path(out).exists()
    assert score_file(clf, inp, out, chunk_rows=16).resumed_rows == 40
    assert out.read_bytes() == clean.read_bytes()
    assert not state_path(out).exists()


def test_changed_parameters_input_or_model_refuse_to_resume(
    tmp_path: Path, clf: TextClassifier, exported: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts(50)])
    out = tmp_path / "out.jsonl"
    with monkeypatch.context() as m:
        die_after_commits(m, 1)
        with pytest.raises(Killed):
            score_file(clf, inp, out, chunk_rows=16)
    with pytest.raises(ResumeRefusedError, match=r"top_k: None before, 2 now.*--restart"):
        score_file(clf, inp, out, chunk_rows=16, top_k=2)
    with pytest.raises(ResumeRefusedError, match="chunk_rows"):
        score_file(clf, inp, out, chunk_rows=8)
    other = TextClassifier.load(exported("bert", "fp32"), threads=1)
    with pytest.raises(ResumeRefusedError, match="the model changed"):
        score_file(other, inp, out, chunk_rows=16)
    result = run_cli(exported("bert", "fp32"), inp, out, "--chunk-rows", "16")
    assert result.returncode == 2
    assert "--restart" in result.stderr
    with inp.open("a") as f:
        f.write(json.dumps({"text": "one more row"}) + "\n")
    with pytest.raises(ResumeRefusedError, match="the input file changed"):
        score_file(clf, inp, out, chunk_rows=16)
    summary = score_file(clf, inp, out, chunk_rows=16, restart=True)
    assert (summary.rows, summary.resumed_rows) == (51, 0)


def test_one_job_per_output_at_a_time(tmp_path: Path) -> None:
    first = JobState.open(tmp_path / "o.partial", {"input": 1, "model": 2, "parameters": {}})
    try:
        with pytest.raises(JobLockedError):
            JobState.open(tmp_path / "o.partial", {"input": 1, "model": 2, "parameters": {}})
    finally:
        first.close()


def test_kill_9_then_resume_is_byte_identical(tmp_path: Path, model: Path) -> None:
    """The real thing: SIGKILL the CLI at several points (after k committed chunks, and at random moments)."""
    records = [{"id": f"r{i}", "text": t} for i, t in enumerate(texts(2000, seed=3))]
    for i in range(0, 2000, 197):
        records[i] = {"id": f"r{i}", "text": ""}  # some bad rows, so the errors file is checked too
    inp = write_jsonl(tmp_path / "in.jsonl", records)
    args = ["--id-column", "id", "--chunk-rows", "25", "--threads", "1", "--quiet"]
    clean = tmp_path / "clean.csv"
    started = time.monotonic()
    assert run_cli(model, inp, clean, *args).returncode == 1
    duration = time.monotonic() - started
    total_chunks = 80
    rng = random.Random(20261202)  # seeded: the same kill moments on every run
    outcomes = []
    for point in [1, 40, "random"]:
        out = tmp_path / f"out-{len(outcomes)}.csv"
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "score", str(model), str(inp), str(out), *args],
            cwd=ROOT,
            env=_env(),
            stderr=subprocess.DEVNULL,
        )
        state = state_path(out)
        if point == "random":
            time.sleep(rng.uniform(0.0, duration))  # anywhere: start-up, scoring, assembling the output
        else:
            while len(list(state.glob("0*.jsonl"))) < int(point) and proc.poll() is None:
                time.sleep(0.001)
            os.kill(proc.pid, signal.SIGSTOP)  # freeze it at once, then look, then kill
        committed = len(list(state.glob("0*.jsonl"))) if state.exists() else 0
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if point != "random":
            assert int(point) <= committed < total_chunks
            assert not out.exists()
        resumed = run_cli(model, inp, out, *args)
        assert resumed.returncode == 1, resumed.stderr
        assert out.read_bytes() == clean.read_bytes()
        assert read_errors(out) == read_errors(clean)
        assert not state.exists()
        outcomes.append((point, committed))
    print("kill points (requested, chunks committed at the kill):", outcomes)
