"""What runs inside a Ray actor: the model, loaded once through the engine's normal load, and `Scorer`, the
`map_batches` callable that turns a block of input rows into a block of result rows.

Each actor loads the model once (every file checked against the sha256 manifest), with onnxruntime threads = the
actor's CPUs, and checks that it loaded the very manifest the driver checked. A row that cannot be scored comes
back with `error` set; it never fails its block.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.errors import IntegrityError, InvalidRequestError
from engine.jobs.formats import pyarrow_modules, result_schema
from engine.jobs.scoring import ScoredColumns, ScoringOptions, score_columns
from engine.model.manifest import MANIFEST_FILE
from engine.runtime import batching
from engine.tasks import registry
from engine.tasks.registry import TaskName
from engine.tasks.text_classification import TextClassifier
from engine.tasks.zero_shot import ZeroShotClassifier

Classifier = TextClassifier | ZeroShotClassifier
ERROR_COLUMN = "error"


def load_model(model_dir: str | Path, options: ScoringOptions, threads: int | None, batch_tokens: int) -> Classifier:
    """The engine's normal load (sha256 manifest checked); zero-shot when the options have candidate labels. One
    batch at a time whatever the task: on a cluster, more actors run more batches at once."""
    cls = registry.facade(TaskName.ZERO_SHOT if options.zero_shot else TaskName.TEXT_CLASSIFICATION)
    return cls.load(model_dir, threads=threads, batch_tokens=batch_tokens, concurrent_batches=1)  # type: ignore[return-value]


def manifest_sha256(model: Classifier) -> str:
    """The digest of the manifest this load verified (not a second read of the file, which could differ)."""
    return model.model.manifest_sha256


def check_model(model_dir: str | Path, options: ScoringOptions, batch_tokens: int) -> str:
    """Load the model on the driver as a worker will (missing, tampered or wrong-task models fail here, clearly);
    return its manifest's sha256, which every actor must match."""
    model = load_model(model_dir, options, 1, batch_tokens)
    return manifest_sha256(model)


def _actor_cpus() -> int | None:
    """The CPUs Ray assigned to this actor, or None outside a Ray worker (onnxruntime then picks)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")  # type: ignore[no-untyped-call]
    except Exception:  # not in a Ray worker, or a Ray without this call: fall back to onnxruntime's default
        return None
    return max(1, int(cpus)) if cpus else None


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
        n = table.num_rows
        columns = {c: table.column(c).to_pylist() for c in self.options.columns if c in table.column_names}
        scored = self._score(columns, n)
        id_column = self.options.id_column
        ids = table.column(id_column) if id_column in table.column_names else pa.nulls(n)
        return _like(batch, result_table(pa, self.options.id_name, ids, scored))

    def _score(self, columns: dict[str, list[object]], n: int) -> ScoredColumns:
        try:
            return score_columns(self.model, self.options, columns, n)
        except Exception:  # the batch failed as a whole (e.g. inference): score row by row, so one row cannot sink it
            scored = ScoredColumns([], [], [], [])
            for i in range(n):
                try:
                    row = score_columns(self.model, self.options, {c: v[i : i + 1] for c, v in columns.items()}, 1)
                except Exception as exc:  # this row's own failure becomes its error; the block goes on
                    scored.add(f"{type(exc).__name__}: {exc}")
                    continue
                scored.extend(row)
            return scored


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


def result_table(pa: Any, id_name: str, ids: Any, scored: ScoredColumns) -> Any:
    """The block of results, column by column, in formats.result_schema plus the error column."""
    schema = result_schema(pa, id_name, ids.type, (ERROR_COLUMN, pa.string()))
    label = [None if labels is None else labels[0] for labels in scored.labels]
    score = [None if scores is None else scores[0] for scores in scored.scores]
    values = (label, score, scored.labels, scored.scores, scored.truncated, scored.errors)
    arrays = [pa.array(v, type=schema.field(i).type) for i, v in enumerate(values, 1)]
    return pa.Table.from_arrays([ids, *arrays], schema=schema)
