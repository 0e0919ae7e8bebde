"""engine.jobs.ray on a real local Ray cluster: same results as `engine score`, a killed worker loses and
duplicates nothing, bad rows are reported, a bad model is refused on the driver. Select with `-m ray`.

The cluster has 3 logical CPUs on this 2-core machine: 2 one-CPU actors plus the one engine.jobs.ray keeps free for
reading and writing (see engine.jobs.ray.dataset._actor_room)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")

import ray  # noqa: E402

from engine import (  # noqa: E402
    EngineError,
    IntegrityError,
    ModelLoadError,
    ScoringOptions,
    ZeroShotClassifier,
    score_file,
    score_records,
)
from engine.cli import main  # noqa: E402
from engine.jobs.formats import Format  # noqa: E402
from engine.jobs.ray import SUCCESS_FILE, Scorer, input_format, load_model, run_job, score_dataset  # noqa: E402

pytestmark = pytest.mark.ray
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


def sentence(i: int, n: int = 12) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(1 + (i % n)))


@pytest.fixture(scope="module")
def cluster() -> Any:
    """One local Ray instance for the module; this module's classes travel by value (workers cannot import it)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif path.suffix == ".csv":
        import csv

        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(records[0]))
            w.writeheader()
            w.writerows(records)
    else:
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path, row_group_size=9)
    return path


def read(path: Path) -> list[dict[str, Any]]:
    """Rows of one output file or of every part file of an output directory (CSV cells decoded as local ones)."""
    files = sorted(path.glob("part-*")) if path.is_dir() else [path]
    rows: list[dict[str, Any]] = []
    for f in files:
        if f.suffix == ".jsonl":
            rows += [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines()]
        elif f.suffix == ".csv":
            import csv

            with f.open(newline="", encoding="utf-8") as fh:
                rows += list(csv.DictReader(fh))
        else:
            import pyarrow.parquet as pq

            rows += pq.read_table(f).to_pylist()
    return rows


def same_rows(ray_rows: list[dict[str, Any]], local_rows: list[dict[str, Any]], id_name: str) -> None:
    """Equal row sets: ids, labels in order and truncation exactly; scores to float32 noise (batches differ)."""
    by_id = {r[id_name]: r for r in ray_rows}
    assert len(by_id) == len(ray_rows), "an id appears twice"
    assert sorted(by_id) == sorted(r[id_name] for r in local_rows)
    for expected in local_rows:
        got = by_id[expected[id_name]]
        assert set(got) == set(expected)
        assert (got["label"], got["labels"], got["truncated"]) == (
            expected["label"],
            expected["labels"],
            expected["truncated"],
        )
        scores = json.loads(got["scores"]) if isinstance(got["scores"], str) else got["scores"]
        want = json.loads(expected["scores"]) if isinstance(expected["scores"], str) else expected["scores"]
        assert scores == pytest.approx(want, abs=1e-5)


def errors_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for f in sorted(path.glob("*.jsonl")) for line in f.read_text().splitlines()]


CASES = {
    # name: (model, input suffix, options); each input carries bad rows next to good ones
    "text-classification": ("distilbert", ".jsonl", dict(id_column="id", top_k=2, chunk_rows=16)),
    "text-pair": ("bert", ".csv", dict(id_column="id", pair_column="pair", truncation=False, chunk_rows=16)),
    "zero-shot": ("bert-nli", ".parquet", dict(id_column="id", candidate_labels=("sports", "money"), chunk_rows=8)),
}


def case_records(name: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = [{"id": 1000 + i, "text": sentence(i)} for i in range(40)]
    if name == "text-pair":
        for i, r in enumerate(records):
            r["id"] = f"p{i}"
            r["pair"] = sentence(i + 5, 6)
        records[3]["text"] = " ".join(WORDS * 8)  # too long for the 64-token window, truncation off: an error row
        records[7]["pair"] = ""  # empty: an error row
    else:
        records[5]["text"] = None
        records[9]["text"] = "   "
    return records


@pytest.mark.parametrize("name", list(CASES))
def test_same_output_as_local_engine_score(cluster: Any, exported: Any, tmp_path: Path, name: str) -> None:
    model_name, suffix, fields = CASES[name]
    model = exported(model_name, "fp32")
    inp = write(tmp_path / f"in{suffix}", case_records(name))
    opts = ScoringOptions.parse(**fields)
    local = score_file(model, inp, tmp_path / f"local{suffix}", opts)
    summary = run_job(model, str(inp), str(tmp_path / f"ray{suffix}"), opts, actors=2)

    out = tmp_path / f"ray{suffix}"
    assert json.loads((out / SUCCESS_FILE).read_text())["rows"] == 40
    assert not (tmp_path / f"ray{suffix}.partial").exists()
    assert (summary.rows, summary.errors) == (local.rows, local.errors) == (40, 2)
    same_rows(read(out), read(tmp_path / f"local{suffix}"), "id")
    local_errors = [json.loads(line) for line in (tmp_path / f"local{suffix}.errors.jsonl").read_text().splitlines()]
    assert sorted((e["id"], e["error"]) for e in errors_of(tmp_path / f"ray{suffix}.errors")) == sorted(
        (e["id"], e["error"]) for e in local_errors
    )


class KillOnce(Scorer):
    """Kills its own worker process (SIGKILL) the first time it sees the marker row; `marker` records that it did."""

    marker = ""

    def __call__(self, batch: Any) -> Any:
        if "k-17" in batch.column("id").to_pylist() and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(batch)


def test_a_killed_worker_loses_and_duplicates_no_row(cluster: Any, exported: Any, tmp_path: Path) -> None:
    model = exported("distilbert", "fp32")
    records = [{"id": f"k-{i}", "text": sentence(i)} for i in range(60)]
    KillOnce.marker = str(tmp_path / "killed")
    ds = ray.data.from_items(records, override_num_blocks=6)
    rows = score_dataset(ds, model, id_column="id", chunk_rows=10, actors=2, scorer=KillOnce).take_all()

    assert Path(KillOnce.marker).exists(), "the worker was never killed: the test proved nothing"
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in records)  # each row once
    expected = {
        r.id: r for r in score_records(records, load_model(model, ScoringOptions.parse(), 1, 4096), id_column="id")
    }
    for r in rows:
        assert r["error"] is None
        assert r["labels"] == [o.label for o in expected[r["id"]].outputs]


class FailOn(Scorer):
    """Raises on the marker row: the Ray job fails midway, as an interrupted one would."""

    def __call__(self, batch: Any) -> Any:
        if "f-33" in batch.column("id").to_pylist():
            raise RuntimeError("simulated crash")
        return super().__call__(batch)


def test_rerun_after_a_failed_job_restarts_cleanly(cluster: Any, exported: Any, tmp_path: Path) -> None:
    model = exported("distilbert", "fp32")
    inp = write(tmp_path / "in.jsonl", [{"id": f"f-{i}", "text": sentence(i)} for i in range(40)])
    out = tmp_path / "out.jsonl"
    opts = ScoringOptions.parse(id_column="id", chunk_rows=8)
    run_job(model, str(inp), str(out), opts, actors=1)
    before = sorted(p.read_bytes() for p in out.iterdir())
    inp = write(tmp_path / "in.jsonl", [{"id": f"f-{i}", "text": sentence(i + 1)} for i in range(40)])

    with pytest.raises(Exception, match="simulated crash"):
        run_job(model, str(inp), str(out), opts, actors=1, scorer=FailOn)
    assert sorted(p.read_bytes() for p in out.iterdir()) == before  # the complete old output is untouched
    (tmp_path / "out.jsonl.partial" / "output" / "part-999999.jsonl").write_text('{"id": "stale"}\n')

    run_job(model, str(inp), str(out), opts, actors=1)
    rows = read(out)
    assert sorted(r["id"] for r in rows) == sorted(f"f-{i}" for i in range(40))
    assert not (tmp_path / "out.jsonl.partial").exists()
    local = score_file(model, inp, tmp_path / "local.jsonl", opts)
    assert local.rows == 40
    same_rows(rows, read(tmp_path / "local.jsonl"), "id")


@pytest.mark.parametrize("flag", [["--max-errors", "3"], ["--restart"], ["--concurrent-batches", "2"]])
def test_cli_refuses_local_only_flags_before_starting_ray(
    exported: Any, tmp_path: Path, capsys: Any, flag: list[str]
) -> None:
    inp = write(tmp_path / "in.jsonl", [{"doc": "d", "text": "a text"}])
    args = ["score", str(exported("distilbert", "fp32")), str(inp), str(tmp_path / "o.jsonl"), "--id-column", "doc"]
    assert main([*args, "--ray", *flag]) == 2
    assert f"{flag[0]} is not supported with --ray" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_scores_on_ray(cluster: Any, exported: Any, tmp_path: Path, capsys: Any) -> None:
    model = exported("distilbert", "fp32")
    inp = write(tmp_path / "in.jsonl", [{"doc": f"d{i}", "text": sentence(i)} for i in range(20)] + [{"doc": "x"}])
    out = tmp_path / "scores.parquet"
    code = main(["score", str(model), str(inp), str(out), "--id-column", "doc", "--ray", "--actors", "1"])
    assert code == 1, capsys.readouterr().err  # done, one row failed
    assert "21 rows, 1 failed" in capsys.readouterr().err
    assert sorted(r["doc"] for r in read(out)) == sorted(f"d{i}" for i in range(20))
    assert errors_of(tmp_path / "scores.parquet.errors") == [{"doc": "x", "error": "column 'text' is missing or null"}]

    assert main(["score", str(model), str(inp), str(tmp_path / "o.jsonl"), "--ray"]) == 2
    assert "--id-column" in capsys.readouterr().err


def tampered(model: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "tampered"
    shutil.copytree(model, copy)
    tokenizer = copy / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace('"[UNK]"', '"[UNK ]"', 1))
    return copy


def test_missing_or_tampered_model_is_refused_on_the_driver(cluster: Any, exported: Any, tmp_path: Path) -> None:
    inp = write(tmp_path / "in.jsonl", [{"id": 1, "text": "fine"}])
    opts = ScoringOptions.parse(id_column="id")
    with pytest.raises(ModelLoadError, match="not a model directory"):
        run_job(tmp_path / "nowhere", str(inp), str(tmp_path / "o.jsonl"), opts)
    bad = tampered(exported("distilbert", "fp32"), tmp_path)
    with pytest.raises(IntegrityError, match="sha256"):
        run_job(bad, str(inp), str(tmp_path / "o.jsonl"), opts)
    with pytest.raises(IntegrityError, match="sha256"):
        score_dataset(ray.data.from_items([{"id": 1, "text": "x"}]), bad, id_column="id")
    assert not (tmp_path / "o.jsonl").exists()
    assert not (tmp_path / "o.jsonl.partial").exists()


class LoadsElsewhere(Scorer):
    """Loads `path` instead of the model the driver checked: a node whose copy of the model was tampered with."""

    path = ""

    def __init__(self, model_dir: str, options: ScoringOptions, **kwargs: Any) -> None:
        super().__init__(self.path, options, **kwargs)


def test_a_worker_refuses_a_tampered_copy_and_the_job_says_why(cluster: Any, exported: Any, tmp_path: Path) -> None:
    model = exported("distilbert", "fp32")
    LoadsElsewhere.path = str(tampered(model, tmp_path))
    inp = write(tmp_path / "in.jsonl", [{"id": 1, "text": "fine"}])
    with pytest.raises(EngineError, match="does not match the sha256 in its manifest"):
        run_job(model, str(inp), str(tmp_path / "o.jsonl"), ScoringOptions.parse(id_column="id"), scorer=LoadsElsewhere)
    assert not (tmp_path / "o.jsonl").exists()


# Without a cluster: the predictor class itself -------------------------------------------------------------------


def test_a_worker_refuses_a_tampered_or_different_model(exported: Any, tmp_path: Path) -> None:
    model = exported("distilbert", "fp32")
    opts = ScoringOptions.parse(id_column="id")
    with pytest.raises(IntegrityError, match="sha256"):
        Scorer(str(tampered(model, tmp_path)), opts)
    with pytest.raises(IntegrityError, match="differs from the one the driver checked"):
        Scorer(str(model), opts, expected_manifest="0" * 64)


def test_scorer_takes_arrow_pandas_and_numpy_batches(exported: Any) -> None:
    model = exported("distilbert", "fp32")
    opts = ScoringOptions.parse(id_column="id", top_k=1)
    scorer = Scorer(str(model), opts, threads=1)
    records = [{"id": 1, "text": "a great film"}, {"id": 2, "text": None}, {"id": 3, "text": "dull plot"}]
    table = pa.Table.from_pylist(records)
    out = scorer(table)
    assert out.column_names == ["id", "label", "score", "labels", "scores", "truncated", "error"]
    expected = list(score_records(records, scorer.model, opts))
    assert out.column("labels").to_pylist() == [[o.label for o in r.outputs] or None for r in expected]
    assert out.column("error").to_pylist() == [None, "column 'text' is missing or null", None]
    from_pandas = scorer(table.to_pandas())
    assert list(from_pandas.columns) == out.column_names
    assert from_pandas["label"][[0, 2]].tolist() == out.column("label").to_pylist()[::2]  # pandas shows None as nan
    assert from_pandas["error"].isna().tolist() == [True, False, True]
    from_numpy = scorer({name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names})
    assert list(from_numpy["score"]) == out.column("score").to_pylist()


def test_input_format_of_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    write(tmp_path / "d" / "a.parquet", [{"id": 1, "text": "x"}])
    assert input_format(str(tmp_path / "d")) is Format.PARQUET
    assert input_format(str(tmp_path / "x.csv")) is Format.CSV
    write(tmp_path / "d" / "b.jsonl", [{"id": 1, "text": "x"}])
    with pytest.raises(Exception, match="one format"):
        input_format(str(tmp_path / "d"))


def test_an_actor_runs_one_batch_at_a_time_whatever_the_task(exported: Any) -> None:
    """On a cluster more actors run more batches at once: zero-shot's in-process default (two) is not taken."""
    zero_shot = ScoringOptions.parse(candidate_labels="refund, legal")
    assert load_model(exported("bert-nli", "fp32"), zero_shot, 2, 256).model.concurrent_batches == 1
    assert ZeroShotClassifier.load(exported("bert-nli", "fp32"), threads=2).model.concurrent_batches == 2
