"""Ray Data wiring: the input as a Dataset, and `score_dataset`, which maps it through a pool of `Scorer` actors.

    ds = ray.data.read_parquet("s3://bucket/tickets/")
    scored = score_dataset(ds, "/shared/models/bart-mnli", id_column="ticket_id", candidate_labels=["a", "b"])

The model reaches the workers as a path every node can read (a shared or replicated directory); the driver loads
it once first, so a missing or tampered model is a clear error before any actor starts. Ray Data has no global row
numbers, so an id column is required. Needs the `ray` extra: pip install '...[ray]'.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.errors import InvalidRequestError, RecordFileError
from engine.jobs.formats import Format, pyarrow_modules
from engine.jobs.ray.scorer import Scorer, check_model
from engine.jobs.scoring import ScoringOptions
from engine.runtime import batching

# Reading and writing reserve no CPU: they are light next to inference, and a pool of actors that
# fills the cluster (2 actors on 2 CPUs) would otherwise starve its own input and never start.
IO_CPUS = 0


def ray_module() -> Any:
    """The `ray` package with Ray Data, or a clear error saying which extra to install."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise RecordFileError("--ray needs Ray Data: pip install 'offline-textclf-engine[ray]'") from None
    return ray


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
    ray = ray_module()
    if options is None:
        # a comma-separated string is split by ScoringOptions itself, as in the local command
        labels: tuple[str, ...] | str | None = (
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


def read_input(uri: str, fmt: Format, columns: list[str]) -> Any:
    """A Dataset of the input's columns. CSV cells stay text, as in the local reader (no type guessing)."""
    ray = ray_module()
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
