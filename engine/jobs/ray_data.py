"""Batch scoring on a Ray cluster with Ray Data: the same rows, options and output columns as `engine score`.

    ds = ray.data.read_parquet("s3://bucket/tickets/")
    scored = score_dataset(ds, "/shared/models/bart-mnli", id_column="ticket_id", candidate_labels=["a", "b"])

`Scorer` is the callable class `map_batches` runs in a pool of actors (`ActorPoolStrategy`): each actor loads
the model once, through the engine's normal load (every file checked against the sha256 manifest), with
onnxruntime threads = the actor's CPUs, and scores batches with the engine's own `score_records`. A row that
cannot be scored comes back with `error` set; it never fails its block.

The model reaches the workers as a path every node can read (a shared or replicated directory); the driver
loads it once first, so a missing or tampered model is a clear error before any actor starts, and each actor
checks that it loaded the very manifest the driver checked. Ray Data has no global row numbers, so an id
column is required. `run_job` is `engine score --ray`: read a file, directory or URI, score, write OUTPUT (a
directory of files) and OUTPUT.errors/ through a staging directory, renamed into place only when complete.
A rerun restarts from scratch (see README, "Scale out"). Needs the `ray` extra: pip install '...[ray]'.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import EngineError, IntegrityError, InvalidRequestError
from engine.jobs.formats import Format, RecordFileError, Writer, pyarrow_modules, result_schema, to_json_id
from engine.model.manifest import MANIFEST_FILE
from engine.runtime import batching
from engine.tasks import registry
from engine.tasks.registry import TaskName
from engine.tasks.text_classification import TextClassifier
from engine.tasks.zero_shot import ZeroShotClassifier

# The engine's record scoring, through its top-level names (engine/scoring.py is being split; these stay).
from engine import ScoredRow, ScoringOptions, score_records  # isort: skip

Classifier = TextClassifier | ZeroShotClassifier
ERROR_COLUMN = "error"
SUCCESS_FILE = "_SUCCESS.json"  # written last into OUTPUT: its presence says the output is complete


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise RecordFileError("--ray needs Ray Data: pip install 'offline-textclf-engine[ray]'") from None
    return ray


def load_model(model_dir: str | Path, options: ScoringOptions, threads: int | None, batch_tokens: int) -> Classifier:
    """The engine's normal load (sha256 manifest checked); zero-shot when the options have candidate labels. One
    batch at a time whatever the task: on a cluster, more actors run more batches at once."""
    cls = registry.facade(TaskName.ZERO_SHOT if options.zero_shot else TaskName.TEXT_CLASSIFICATION)
    return cls.load(model_dir, threads=threads, batch_tokens=batch_tokens, concurrent_batches=1)  # type: ignore[return-value]


def manifest_sha256(model: Classifier) -> str:
    """The digest of the manifest this load verified (not a second read of the file, which could differ)."""
    return model.model.manifest_sha256


def _actor_cpus() -> int | None:
    """The CPUs Ray assigned to this actor, or None outside a Ray worker (onnxruntime then picks)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # not in a Ray worker, or a Ray without this call: fall back to onnxruntime's default
        return None
    return max(1, int(cpus)) if cpus else None


# The predictor -----------------------------------------------------------------------------------------------


class Scorer:
    """A `map_batches` callable class: the model is loaded once per actor, in __init__.

    Batches may be pyarrow Tables, pandas DataFrames or dicts of numpy arrays; the result has the same kind,
    with the columns {id column, label, score, labels, scores, truncated, error}. `error` is null for scored
    rows; for a row that cannot be scored it says why (the other result columns are then null).
    """

    def __init__(
        self,
        model_dir: str,
        options: ScoringOptions,
        *,
        batch_tokens: int = batching.DEFAULT_BATCH_TOKENS,
        threads: int | None = None,
        expected_manifest: str | None = None,
    ) -> None:
        if options.id_column is None:
            raise InvalidRequestError("Ray scoring needs an id column (Ray Data has no global row numbers)")
        self.options = options
        self.model = load_model(model_dir, options, threads or _actor_cpus(), batch_tokens)
        if expected_manifest is not None and manifest_sha256(self.model) != expected_manifest:
            raise IntegrityError(
                f"{model_dir}/{MANIFEST_FILE} on this worker differs from the one the driver checked: the model "
                "changed while the job started, or the nodes hold different copies. Give every node the same model."
            )

    def __call__(self, batch: Any) -> Any:
        pa, _ = pyarrow_modules()
        table = _to_table(batch)
        records = _records(table, self.options.columns)
        scored = self._score(records)
        ids = table.column(self.options.id_column) if self.options.id_column in table.column_names else None
        result = _result_table(pa, self.options.id_name, ids, scored, len(records))
        return _like(batch, result)

    def _score(self, records: list[dict[str, Any]]) -> list[ScoredRow]:
        try:
            return list(score_records(records, self.model, self.options))
        except Exception:  # the batch failed as a whole (e.g. inference): score row by row, so one row cannot sink it
            return [self._score_one(i, record) for i, record in enumerate(records)]

    def _score_one(self, index: int, record: dict[str, Any]) -> ScoredRow:
        try:
            (row,) = score_records([record], self.model, self.options)
        except Exception as exc:  # this row's own failure becomes its error; the block goes on
            ident = to_json_id(record.get(self.options.id_column or ""))
            return ScoredRow(index, ident, [], False, f"{type(exc).__name__}: {exc}")
        return ScoredRow(index, row.id, row.outputs, row.truncated, row.error)


def _to_table(batch: Any) -> Any:
    pa, _ = pyarrow_modules()
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, Mapping):  # Ray's "numpy" format: column name -> array
        return pa.table({name: pa.array(list(values)) for name, values in batch.items()})
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas.DataFrame
        return pa.Table.from_pandas(batch, preserve_index=False)
    raise InvalidRequestError(f"a batch must be a pyarrow Table, a pandas DataFrame or a dict, not {type(batch)}")


def _like(batch: Any, table: Any) -> Any:
    pa, _ = pyarrow_modules()
    if isinstance(batch, pa.Table):
        return table
    if isinstance(batch, Mapping):
        import numpy as np

        return {name: np.array(table.column(name).to_pylist(), dtype=object) for name in table.column_names}
    return table.to_pandas()


def _records(table: Any, columns: list[str]) -> list[dict[str, Any]]:
    """The input columns as dict records; a column absent from this block reads as missing (an error row)."""
    present = [c for c in columns if c in table.column_names]
    return table.select(present).to_pylist() if present else [{} for _ in range(table.num_rows)]


def _result_table(pa: Any, id_name: str, ids: Any, scored: list[ScoredRow], n: int) -> Any:
    """The block of results, in formats.result_schema plus the error column."""
    ok = [r.error is None for r in scored]
    ids = ids if ids is not None else pa.nulls(n)
    columns = {
        id_name: ids,
        "label": [r.outputs[0].label if k else None for r, k in zip(scored, ok)],
        "score": [r.outputs[0].score if k else None for r, k in zip(scored, ok)],
        "labels": [[o.label for o in r.outputs] if k else None for r, k in zip(scored, ok)],
        "scores": [[o.score for o in r.outputs] if k else None for r, k in zip(scored, ok)],
        "truncated": [r.truncated if k else None for r, k in zip(scored, ok)],
        ERROR_COLUMN: [r.error for r in scored],
    }
    return pa.table(columns, schema=result_schema(pa, id_name, ids.type, (ERROR_COLUMN, pa.string())))


# Wiring into Ray Data -----------------------------------------------------------------------------------------


def check_model(model_dir: str | Path, options: ScoringOptions, batch_tokens: int) -> str:
    """Load the model on the driver as a worker will (missing, tampered or wrong-task models fail here, clearly);
    return its manifest's sha256, which every actor must match."""
    model = load_model(model_dir, options, 1, batch_tokens)
    return manifest_sha256(model)


def _actor_room(ray: Any, cpus_per_actor: int) -> int:
    """How many actors fit while one CPU stays free: Ray Data's file listing and other 1-CPU tasks need it, and a
    pool that holds every CPU starves its own input (measured: 2 actors on 2 CPUs never start reading Parquet)."""
    if not ray.is_initialized():
        ray.init()
    cpus = ray.cluster_resources().get("CPU", 0)
    return max(1, int((cpus - 1) // cpus_per_actor))


def score_dataset(
    ds: Any,
    model_dir: str | Path,
    *,
    text_column: str = "text",
    pair_column: str | None = None,
    id_column: str | None = None,
    candidate_labels: Iterable[str] | str | None = None,
    options: ScoringOptions | None = None,
    actors: int | None = None,
    cpus_per_actor: int = 1,
    batch_tokens: int = batching.DEFAULT_BATCH_TOKENS,
    scorer: type[Scorer] = Scorer,
    checked_manifest: str | None = None,
    **fields: Any,
) -> Any:
    """A lazy Dataset of results {id column, label, score, labels, scores, truncated, error}, one row per row of `ds`.

    Options are a ScoringOptions or its fields as keywords (hypothesis_template, multi_label, top_k,
    function_to_apply, truncation, truncation_direction, chunk_rows = rows per batch). `actors` fixes the
    pool size (default: autoscale from 1 to what the cluster has room for); each actor reserves
    `cpus_per_actor` CPUs and runs onnxruntime with that many threads. The model is checked here, on the driver.
    `scorer` may be a subclass of Scorer (to add columns, or in tests to misbehave). `checked_manifest` is the
    sha256 from a `check_model` the caller already made (the driver then does not load the model again).
    """
    ray = _ray()
    if options is None:
        # a comma-separated string is split by ScoringOptions itself, as in the local command
        labels: Any = (
            candidate_labels
            if candidate_labels is None or isinstance(candidate_labels, str)
            else tuple(candidate_labels)
        )
        options = ScoringOptions.parse(
            text_column=text_column, pair_column=pair_column, id_column=id_column, candidate_labels=labels, **fields
        )
    if options.id_column is None:
        raise InvalidRequestError(
            "Ray scoring needs id_column (--id-column): Ray Data has no global row numbers, and the id is how each "
            "result and error row is traced back to its input"
        )
    for name, value in (("actors", actors), ("cpus_per_actor", cpus_per_actor)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidRequestError(f"{name} must be a positive integer, got {value!r}")
    room = _actor_room(ray, cpus_per_actor)
    if actors is not None and actors > room:
        raise InvalidRequestError(
            f"{actors} actors of {cpus_per_actor} CPU(s) leave no CPU of this cluster "
            f"({ray.cluster_resources().get('CPU', 0):g} CPUs) for reading and writing, and the job would wait "
            f"forever: use at most {room} actors, or fewer CPUs per actor"
        )
    expected = checked_manifest or check_model(model_dir, options, batch_tokens)
    compute = (
        ray.data.ActorPoolStrategy(size=actors) if actors else ray.data.ActorPoolStrategy(min_size=1, max_size=room)
    )
    return ds.map_batches(
        scorer,
        fn_constructor_args=(str(model_dir), options),
        fn_constructor_kwargs={"batch_tokens": batch_tokens, "threads": cpus_per_actor, "expected_manifest": expected},
        batch_size=options.chunk_rows,
        batch_format="pyarrow",
        compute=compute,
        num_cpus=cpus_per_actor,
    )


# The job: engine score --ray -----------------------------------------------------------------------------------


def _filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path in it) for a local path or a URI such as s3://bucket/key."""
    import pyarrow.fs

    if "://" not in uri:
        return pyarrow.fs.LocalFileSystem(), os.path.abspath(uri)
    return pyarrow.fs.FileSystem.from_uri(uri)


def input_format(uri: str) -> Format:
    """The format from the name's extension; for a directory, from the extension its files share."""
    suffix = Path(uri.rstrip("/")).suffix
    if suffix:
        return Format.of(Path(uri.rstrip("/")))
    import pyarrow.fs

    fs, path = _filesystem(uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        raise RecordFileError(f"{uri} is neither a .jsonl, .csv or .parquet file nor a directory of them")
    kinds = set()
    for info in fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True)):
        name = posixpath.basename(info.path)
        if info.type == pyarrow.fs.FileType.File and not name.startswith(("_", ".")):
            kinds.add(Format.of(Path(name)))
    if len(kinds) != 1:
        found = sorted(k.value for k in kinds) or "no data files"
        raise RecordFileError(f"{uri}: expected files of one format (.jsonl, .csv or .parquet), found {found}")
    return kinds.pop()


# Reading and writing reserve no CPU: they are light next to inference, and a pool of actors that
# fills the cluster (2 actors on 2 CPUs) would otherwise starve its own input and never start.
IO_CPUS = 0


def read_input(uri: str, fmt: Format, columns: list[str]) -> Any:
    """A Dataset of the input's columns. CSV cells stay text, as in the local reader (no type guessing)."""
    ray = _ray()
    pa, _ = pyarrow_modules()
    if fmt is Format.PARQUET:
        ds = ray.data.read_parquet(uri, columns=columns, num_cpus=IO_CPUS)
    elif fmt is Format.CSV:
        import pyarrow.csv

        convert = pyarrow.csv.ConvertOptions(column_types={c: pa.string() for c in columns}, include_columns=columns)
        ds = ray.data.read_csv(uri, convert_options=convert, num_cpus=IO_CPUS)
    else:
        ds = ray.data.read_json(uri, lines=True, file_extensions=["jsonl", "ndjson", "json"], num_cpus=IO_CPUS)
    if fmt is Format.JSONL:  # as in the local command, a missing key is an error row, not a refused file
        return ds
    missing = [c for c in columns if c not in ds.columns()]
    if missing:
        raise RecordFileError(f"{uri} has no column(s) {missing}; its columns are {ds.columns()}")
    return ds


class ResultSink:
    """A Ray Data sink writing each write task's block twice: scored rows in the output format (through the
    engine's own Writer, so files match `engine score`'s byte for byte in shape) to `staging/output/`, error rows
    as JSON Lines to `staging/errors/`. File names come from the task index, so a retried task overwrites its
    own files instead of adding rows. `counts` holds (rows, errors) once the write completes."""

    def __init__(self, staging: str, fmt: Format, id_name: str, keep_id_type: bool) -> None:
        self.staging = staging
        self.format = fmt
        self.id_name = id_name
        self.keep_id_type = keep_id_type
        self.counts = (0, 0)

    def write(self, blocks: Iterable[Any], ctx: Any) -> tuple[int, int]:
        pa, _ = pyarrow_modules()
        from ray.data.block import BlockAccessor

        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return 0, 0
        table = pa.concat_tables(tables, promote_options="permissive")
        rows = table.to_pylist()
        good = [r for r in rows if r[ERROR_COLUMN] is None]
        bad = [r for r in rows if r[ERROR_COLUMN] is not None]
        fs, root = _filesystem(self.staging)
        name = f"part-{ctx.task_idx:06d}"
        if good:
            id_type = table.schema.field(self.id_name).type if self.keep_id_type else None
            buffer = io.BytesIO()
            writer = Writer(buffer, self.format, self.id_name, id_arrow_type=id_type)
            writer.write([{**r, "id": to_json_id(r[self.id_name])} for r in good])
            writer.close()
            with fs.open_output_stream(f"{root}/output/{name}.{self.format.value}") as f:
                f.write(buffer.getvalue())
        if bad:
            lines = [{self.id_name: to_json_id(r[self.id_name]), "error": r[ERROR_COLUMN]} for r in bad]
            with fs.open_output_stream(f"{root}/errors/{name}.jsonl") as f:
                f.write("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode("utf-8"))
        return len(good), len(bad)


def _datasink(sink: ResultSink) -> Any:
    """ResultSink as a ray.data.Datasink (built here so importing engine.jobs.ray_data needs no Ray)."""
    from ray.data import Datasink

    class _Sink(Datasink):
        def __init__(self) -> None:
            self.sink = sink

        def on_write_start(self, schema: Any = None) -> None:
            fs, root = _filesystem(sink.staging)
            for sub in ("output", "errors"):
                fs.create_dir(f"{root}/{sub}", recursive=True)

        def write(self, blocks: Iterable[Any], ctx: Any) -> tuple[int, int]:
            return self.sink.write(blocks, ctx)

        def on_write_complete(self, write_result: Any) -> None:
            returns = [r for r in write_result.write_returns if r is not None]
            self.sink.counts = (sum(r[0] for r in returns), sum(r[1] for r in returns))

        def get_name(self) -> str:
            return "EngineScoreResults"

    return _Sink()


@dataclass(frozen=True)
class RayJobSummary:
    """What `engine score --ray` did; the same fields the local command's summary prints."""

    rows: int
    errors: int
    seconds: float
    output: str
    errors_file: str | None
    resumed_rows: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _replace_dir(fs: Any, src: str, dst: str) -> None:
    """Put src where dst is. Local: renames (dst appears complete or not at all). Elsewhere (object stores have
    no directory rename): file by file; the _SUCCESS.json written last is then what marks dst complete."""
    import pyarrow.fs

    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        if os.path.exists(dst):
            old = dst + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dst, old)
            os.replace(src, dst)
            shutil.rmtree(old)
        else:
            os.replace(src, dst)
        return
    if fs.get_file_info(dst).type != pyarrow.fs.FileType.NotFound:
        fs.delete_dir(dst)
    files = [i for i in fs.get_file_info(pyarrow.fs.FileSelector(src, recursive=True)) if i.type.name == "File"]
    for info in sorted(files, key=lambda i: posixpath.basename(i.path) == SUCCESS_FILE):  # the marker last
        fs.move(info.path, dst + info.path[len(src) :])


def run_job(
    model_dir: str | Path,
    input: str,
    output: str,
    options: ScoringOptions,
    *,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: int = 1,
    batch_tokens: int = batching.DEFAULT_BATCH_TOKENS,
    scorer: type[Scorer] = Scorer,
) -> RayJobSummary:
    """`engine score --ray`: INPUT (file, directory or URI) -> OUTPUT/ and OUTPUT.errors/ (directories of files).

    Everything is written under OUTPUT.partial/ first and moved into place only when the job is complete, with
    OUTPUT/_SUCCESS.json last. Any earlier OUTPUT.partial/ (an interrupted run) is deleted first: a rerun restarts.
    Connects to the cluster at `address` ("auto", "ray://host:10001"), or to RAY_ADDRESS / a new local one.
    """
    ray = _ray()
    start = time.monotonic()
    input, output = (p if "://" in p else os.path.abspath(p) for p in (str(input), str(output)))
    out_fmt = Format.of(Path(output.rstrip("/")))
    in_fmt = input_format(input)
    if options.id_column is None:
        raise InvalidRequestError("--ray needs --id-column: Ray Data has no global row numbers")
    expected = check_model(model_dir, options, batch_tokens)  # before anything starts: clear errors, fast
    if not ray.is_initialized():
        ray.init(address=address)
    fs, out_path = _filesystem(output)
    staging = output.rstrip("/") + ".partial"
    _, staging_path = _filesystem(staging)
    if fs.get_file_info(staging_path).type.name != "NotFound":
        fs.delete_dir(staging_path)  # an interrupted run's files: restart, never mix two runs' rows
    ds = read_input(input, in_fmt, options.columns)
    scored = score_dataset(
        ds,
        model_dir,
        options=options,
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        batch_tokens=batch_tokens,
        scorer=scorer,
        checked_manifest=expected,
    )
    sink = ResultSink(staging, out_fmt, options.id_name, keep_id_type=in_fmt is Format.PARQUET)
    datasink = _datasink(sink)
    try:
        scored.write_datasink(datasink, ray_remote_args={"num_cpus": IO_CPUS})
    except Exception as exc:
        raise _job_error(exc) from exc
    rows, errors = datasink.sink.counts
    manifest = {
        "rows": rows + errors,
        "scored": rows,
        "errors": errors,
        "input": input,
        "model_manifest_sha256": expected,
        "options": options.to_dict(),
        "format": out_fmt.value,
    }
    with fs.open_output_stream(f"{staging_path}/output/{SUCCESS_FILE}") as f:
        f.write(json.dumps(manifest, indent=1).encode("utf-8"))
    errors_out = output.rstrip("/") + ".errors"
    _, errors_path = _filesystem(errors_out)
    if errors:
        _replace_dir(fs, f"{staging_path}/errors", errors_path)
    elif fs.get_file_info(errors_path).type.name != "NotFound":
        fs.delete_dir(errors_path)  # a stale errors directory would describe another run's rows
    _replace_dir(fs, f"{staging_path}/output", out_path)
    fs.delete_dir(staging_path)
    return RayJobSummary(rows + errors, errors, time.monotonic() - start, output, errors_out if errors else None)


def _job_error(exc: Exception) -> EngineError:
    """A failed Ray job as an engine error whose message carries the cause (Ray wraps worker exceptions)."""
    for cause in (exc, getattr(exc, "cause", None), exc.__cause__):
        if isinstance(cause, EngineError):
            return cause
    return EngineError(f"the Ray job failed: {exc}")


# Command line hook (engine score ... --ray [ADDRESS]) -----------------------------------------------------------


def add_arguments(parser: Any) -> None:
    """The flags `engine score` gains for Ray."""
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="score on a Ray cluster (Ray Data): ADDRESS of the cluster ('auto', ray://host:10001), or none for "
        "RAY_ADDRESS or a local one. INPUT may then be a directory or a URI (s3://...); OUTPUT becomes a directory "
        "of files, errors go to OUTPUT.errors/. Needs --id-column; --threads is the CPUs (and threads) per actor. "
        "A bare --ray goes after MODEL INPUT OUTPUT (or it takes MODEL for an address).",
    )
    parser.add_argument("--actors", type=int, default=None, help="with --ray: a fixed number of actors")


def run_from_args(args: Any, options: ScoringOptions) -> RayJobSummary:
    """`engine score --ray`, from the parsed arguments of `engine score`."""
    refused = (
        ("--max-errors", args.max_errors is not None, "a --ray job always starts over"),
        ("--restart", args.restart, "a --ray job always starts over"),
        ("--concurrent-batches", args.concurrent_batches is not None, "more actors run more batches at once"),
    )
    for flag, given, why in refused:
        if given:
            raise InvalidRequestError(f"{flag} is not supported with --ray ({why})")
    return run_job(
        args.model_dir,
        args.input,
        args.output,
        options,
        address=args.ray or None,
        actors=args.actors,
        cpus_per_actor=args.threads or 1,
        batch_tokens=args.batch_tokens,
    )
