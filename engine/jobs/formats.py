"""Record files for batch scoring: JSON Lines, CSV and Parquet, read and written in chunks, chosen by extension.

Readers stream: they yield one `Row` at a time and never hold the file. A row that cannot be decoded (invalid
UTF-8, a JSON line that does not parse or is not an object, a CSV row with more or fewer cells than the header)
comes out as a Row with `problem` set instead of stopping the reader, so one bad line costs one row and is
reported. A CSV file whose quoting is broken (a quote never closed, text after a closing quote) is refused as a
whole before any row is read: see `Reader._check_csv`. Text formats are hashed as they are read (`digest`), so a
resumed job can check that the rows it already scored are still the rows of the file. Parquet goes through
pyarrow, imported only when asked for.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from itertools import accumulate
from pathlib import Path
from typing import IO, Any, TypedDict

from engine.errors import RecordFileError
from engine.model.fileio import sha256

# csv's default field limit (128 KiB) would turn one long text into a crash of the whole reader
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

PARQUET_BATCH_ROWS = 1024


class Format(str, Enum):
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"

    @classmethod
    def of(cls, path: Path) -> Format:
        suffix = path.suffix.lower()
        by_suffix = {".jsonl": cls.JSONL, ".ndjson": cls.JSONL, ".csv": cls.CSV, ".parquet": cls.PARQUET}
        if suffix not in by_suffix:
            raise RecordFileError(
                f"{path}: cannot tell the format from the extension {suffix!r}; use .jsonl (or .ndjson), .csv or "
                ".parquet"
            )
        return by_suffix[suffix]


def pyarrow_modules() -> tuple[Any, Any]:
    """(pyarrow, pyarrow.parquet), or a clear error saying which extra to install."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise RecordFileError(
            "Parquet files need pyarrow: pip install 'offline-textclf-engine[parquet]' (or use .jsonl or .csv)"
        ) from None
    return pyarrow, pyarrow.parquet


JsonId = str | int | float | bool | None  # an id as the state files and the errors file carry it


class Digest(TypedDict):
    """How much of a text input has been read, and the sha256 of those bytes."""

    bytes: int
    sha256: str


class StateRow(TypedDict, total=False):
    """A result row as the resume state stores it: {row, id, labels, scores, truncated}, or {row, id, error}."""

    row: int
    id: JsonId
    labels: list[str]
    scores: list[float]
    truncated: bool
    error: str


@dataclass(frozen=True)
class Row:
    """One input record, numbered from 0 in file order; `problem` says why it could not be decoded."""

    index: int
    record: Mapping[str, object]
    problem: str | None = None


class _HashingRaw(io.RawIOBase):
    """A raw binary file that hashes every byte read through it, in order: the digest of the prefix read so far."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.hasher = sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._f.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            view = memoryview(buffer)[:n]
            self.hasher.update(view)
            self.count += n
        return n or 0

    def close(self) -> None:
        self._f.close()
        super().close()


class Reader:
    """Rows of one file, streamed. `position()` is how far into the file reading has got (for progress);
    `digest()` is the sha256 of the bytes read so far (text formats)."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = path
        self.format = Format.of(path)
        self.columns = list(columns)
        self.size = path.stat().st_size
        self.total_rows: int | None = None
        self._file: IO[bytes] | None = None
        self._raw: _HashingRaw | None = None
        self._parquet: Any = None
        if self.format is Format.PARQUET:
            self._open_parquet()
        elif self.format is Format.CSV:
            self._check_csv_header()

    def _open_parquet(self) -> None:
        _, pq = pyarrow_modules()
        try:
            self._parquet = pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises its own ArrowInvalid, OSError...
            raise RecordFileError(f"{self.path} is not a readable Parquet file: {exc}") from exc
        schema = self._parquet.schema_arrow
        missing = [c for c in self.columns if c not in schema.names]
        if missing:
            raise RecordFileError(f"{self.path} has no column(s) {missing}; its columns are {schema.names}")
        self.total_rows = self._parquet.metadata.num_rows
        self._schema = schema

    def arrow_type(self, column: str) -> Any:
        """The input's Parquet type of a column, or None for text formats."""
        return self._schema.field(column).type if self._parquet is not None else None

    def _check_csv_header(self) -> None:
        with self.path.open("rb") as f:
            header = next(csv.reader(_decoding(f)), None)
        if header is None:
            raise RecordFileError(f"{self.path} is empty: a CSV input needs a header row naming its columns")
        missing = [c for c in self.columns if c not in header]
        if missing:
            raise RecordFileError(f"{self.path} has no column(s) {missing}; its header is {header}")
        self._check_csv()

    def _check_csv(self) -> None:
        """Refuse a file whose quoting is broken, before any row is scored.

        A quote that is never closed makes every later line part of one cell: where the cell was meant to end,
        and so how many rows follow, cannot be known. Scoring the merged text as one row would silently lose the
        rows inside it, and one error row would undercount them, so the file is refused with the line where the
        broken record starts. A row with the wrong number of cells is different: its neighbours are intact, so it
        costs only its own row, reported in the errors file (see `_csv_rows`). One streaming pass of the csv
        module (C), cheap next to scoring the rows."""
        with self.path.open("rb") as f:
            reader = csv.reader(_decoding(f), strict=True)
            start = 1
            try:
                for _ in reader:
                    start = reader.line_num + 1
            except csv.Error as exc:
                raise RecordFileError(
                    f"{self.path}: the CSV record starting at line {start} cannot be parsed ({exc}): a quote is "
                    "not closed, or text follows a closing quote. Every row after it would be merged into one "
                    "cell, so the file is refused; fix the quoting (a quote inside a quoted cell is written twice)"
                ) from None

    def position(self) -> int:
        return self._raw.count if self._raw is not None else 0

    def digest(self) -> Digest | None:
        """{bytes, sha256} of the input read so far (text formats; None for Parquet, which pyarrow reads itself).
        Rows are read the same way on every run, so the same rows of the same file give the same digest."""
        if self._raw is None:
            return None
        return {"bytes": self._raw.count, "sha256": self._raw.hasher.copy().hexdigest()}

    def __iter__(self) -> Iterator[Row]:
        return self.rows()

    def rows(self, done: Sequence[int] = (), on_done: Callable[[int], None] | None = None) -> Iterator[Row]:
        """Rows in file order. `done` holds a resumed job's row count per finished chunk: those rows are passed
        over without being decoded, and the first row yielded is row sum(done). Text formats still read and hash
        their bytes (the same reads as an uninterrupted run, so `digest()` matches the one each chunk recorded);
        `on_done(k)` is called as soon as the rows of finished chunk k are behind, or at the end of the file if it
        ends first, so the caller can compare digests there."""
        skip = _Skip(done, on_done)
        if self.format is Format.PARQUET:
            yield from self._parquet_rows(skip)
            return
        self._raw = _HashingRaw(self.path.open("rb", buffering=0))
        with io.BufferedReader(self._raw) as f:
            self._file = f
            yield from self._jsonl_rows(f, skip) if self.format is Format.JSONL else self._csv_rows(f, skip)
        skip.finish()

    def _jsonl_rows(self, f: IO[bytes], skip: _Skip) -> Iterator[Row]:
        index = 0
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue  # blank lines are not rows
            if not skip.take():
                yield _jsonl_row(index, lineno, raw)
            index += 1

    def _csv_rows(self, f: IO[bytes], skip: _Skip) -> Iterator[Row]:
        reader = csv.reader(_decoding(f), strict=True)
        header = next(reader)
        try:
            for index, values in enumerate(reader):
                if skip.take():
                    continue  # parsed to find where the row ends (a quoted cell may hold newlines), nothing more
                if len(values) != len(header):  # zip() would drop the extra cells or leave columns missing
                    yield Row(
                        index,
                        {},
                        f"CSV line {reader.line_num} has {len(values)} cell(s), the header has {len(header)}: "
                        "quote a cell that holds a comma",
                    )
                    continue
                record = dict(zip(header, values))
                bad = [name for name, value in record.items() if _has_undecodable(value)]
                if bad:
                    yield Row(index, {}, f"invalid UTF-8 in column(s) {bad} (CSV line {reader.line_num})")
                else:
                    yield Row(index, record)
        except csv.Error as exc:  # the file changed since _check_csv
            raise RecordFileError(f"{self.path}: CSV line {reader.line_num} cannot be parsed ({exc})") from exc

    def _parquet_rows(self, skip: _Skip) -> Iterator[Row]:
        """Row groups wholly done are not read at all; done rows of a partly done batch are sliced off before they
        become Python values."""
        metadata = self._parquet.metadata
        index = 0
        groups: list[int] = []
        for g in range(metadata.num_row_groups):
            rows = metadata.row_group(g).num_rows
            if not groups and index + rows <= skip.rows:
                index += rows
            else:
                groups.append(g)
        skip.finish()  # no digest to compare: the job's identity holds the whole file's sha256
        if not groups:
            return
        for batch in self._parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=self.columns, row_groups=groups):
            if index < skip.rows:
                cut = min(skip.rows - index, batch.num_rows)
                batch, index = batch.slice(cut), index + cut
            for record in batch.to_pylist():
                yield Row(index, record)
                index += 1


class _Skip:
    """The rows a resumed job passes over: `take()` counts one more row read and says whether it is one of them,
    calling `on_done(k)` when the last row of finished chunk k has been read."""

    def __init__(self, done: Sequence[int], on_done: Callable[[int], None] | None) -> None:
        self._ends = list(accumulate(done))
        self.rows = self._ends[-1] if self._ends else 0
        self._on_done = on_done
        self._taken = 0
        self._reached = 0  # chunks whose end has been reported

    def take(self) -> bool:
        if self._taken >= self.rows:
            return False
        self._taken += 1
        self._report(self._taken)
        return True

    def finish(self) -> None:
        """The end of the file (or, for Parquet, of the skip): report the chunks whose rows were not all there."""
        self._report(self.rows)

    def _report(self, upto: int) -> None:
        while self._reached < len(self._ends) and self._ends[self._reached] <= upto:
            if self._on_done is not None:
                self._on_done(self._reached)
            self._reached += 1


def _decoding(f: IO[bytes]) -> io.TextIOWrapper:
    """Bytes that are not UTF-8 become lone surrogates, caught per row instead of crashing the reader."""
    return io.TextIOWrapper(f, encoding="utf-8", errors="surrogateescape", newline="")


def _has_undecodable(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _jsonl_row(index: int, lineno: int, raw: bytes) -> Row:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Row(index, {}, f"invalid UTF-8 at byte {exc.start} of line {lineno}")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return Row(index, {}, f"line {lineno} is not valid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(record, dict):
        return Row(index, {}, f"line {lineno} is a JSON {type(record).__name__}, not an object")
    return Row(index, record)


# Writing --------------------------------------------------------------------------------------------------------

RESULT_COLUMNS = ("label", "score", "labels", "scores", "truncated")


def to_json_id(value: object) -> JsonId:
    """Ids go through the state files as JSON: keep JSON values, spell anything else (dates, decimals) as text."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


class Writer:
    """Result rows {id_name, label, score, labels, scores, truncated} in one format, written to an open file.

    JSON Lines and Parquet keep `labels`/`scores` as lists; CSV cells hold them as JSON arrays.
    """

    def __init__(
        self, f: IO[bytes], fmt: Format, id_name: str, *, row_numbers: bool = False, id_arrow_type: Any = None
    ) -> None:
        self.f = f
        self.format = fmt
        self.id_name = id_name
        self.columns = (id_name, *RESULT_COLUMNS)
        self._parquet: Any = None
        if fmt is Format.CSV:
            self._text = io.TextIOWrapper(f, encoding="utf-8", newline="", write_through=True)
            self._csv = csv.writer(self._text, lineterminator="\n")
            self._csv.writerow(self.columns)
        elif fmt is Format.PARQUET:
            pa, pq = pyarrow_modules()
            if row_numbers:
                id_arrow_type = pa.int64()
            elif id_arrow_type is None or not _plain_arrow_type(pa, id_arrow_type):
                id_arrow_type = pa.string()  # ids from text formats, or of types JSON cannot carry
            self._schema = result_schema(pa, id_name, id_arrow_type)
            self._pa = pa
            self._parquet = pq.ParquetWriter(f, self._schema)

    def write(self, rows: Sequence[StateRow]) -> None:
        """Rows as {"id", "labels", "scores", "truncated"} (the state-file shape), in output order."""
        self.write_columns(
            [r["id"] for r in rows],
            [r["labels"] for r in rows],
            [r["scores"] for r in rows],
            [r["truncated"] for r in rows],
        )

    def write_columns(
        self,
        ids: Sequence[JsonId],
        labels: Sequence[Sequence[str]],
        scores: Sequence[Sequence[float]],
        truncated: Sequence[bool],
    ) -> None:
        """Scored rows given column by column (Ray's Arrow blocks), in output order: labels best first."""
        if not ids:
            return
        if self.format is Format.JSONL:
            lines = (
                json.dumps(self._record(*row), ensure_ascii=False) + "\n" for row in zip(ids, labels, scores, truncated)
            )
            self.f.write("".join(lines).encode("utf-8"))
        elif self.format is Format.CSV:
            for ident, names, values, cut in zip(ids, labels, scores, truncated):
                self._csv.writerow(
                    [
                        "" if ident is None else ident if isinstance(ident, str) else json.dumps(ident),
                        names[0],
                        repr(values[0]),
                        json.dumps(names, ensure_ascii=False),
                        json.dumps(values),
                        "true" if cut else "false",
                    ]
                )
        else:
            if self._schema.field(0).type == self._pa.string():
                ids = [ident if ident is None or isinstance(ident, str) else json.dumps(ident) for ident in ids]
            columns = (ids, [n[0] for n in labels], [v[0] for v in scores], labels, scores, truncated)
            arrays = [self._pa.array(c, type=field.type) for c, field in zip(columns, self._schema)]
            self._parquet.write_table(self._pa.Table.from_arrays(arrays, schema=self._schema))

    def _record(
        self, ident: JsonId, labels: Sequence[str], scores: Sequence[float], truncated: bool
    ) -> dict[str, object]:
        return {
            self.id_name: ident,
            "label": labels[0],
            "score": scores[0],
            "labels": labels,
            "scores": scores,
            "truncated": truncated,
        }

    def close(self) -> None:
        """Finish the file (Parquet footer); the caller flushes, fsyncs and closes the underlying file."""
        if self._parquet is not None:
            self._parquet.close()
        elif self.format is Format.CSV:
            self._text.flush()
            self._text.detach()


def result_schema(pa: Any, id_name: str, id_type: Any, *extra: tuple[str, Any]) -> Any:
    """The one Arrow schema of result rows (RESULT_COLUMNS after the id), for Parquet files and Ray blocks."""
    fields = [
        (id_name, id_type),
        ("label", pa.string()),
        ("score", pa.float64()),
        ("labels", pa.list_(pa.string())),
        ("scores", pa.list_(pa.float64())),
        ("truncated", pa.bool_()),
    ]
    return pa.schema(fields + list(extra))


def _plain_arrow_type(pa: Any, t: Any) -> bool:
    types = pa.types
    return bool(types.is_integer(t) or types.is_floating(t) or types.is_string(t) or types.is_boolean(t))
