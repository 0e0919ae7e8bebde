"""Where a Ray job's data lives: local paths or URIs (s3://...) through pyarrow's filesystems, the input's format,
and the sink that writes result blocks as files into a staging directory, published only once complete.

pyarrow and Ray are optional imports (the `ray` extra), so their objects are typed `Any` here.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.errors import RecordFileError
from engine.jobs.formats import Format, Writer, pyarrow_modules, to_json_id
from engine.jobs.ray.scorer import ERROR_COLUMN

SUCCESS_FILE = "_SUCCESS.json"  # written last into OUTPUT: its presence says the output is complete


def filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path in it) for a local path or a URI such as s3://bucket/key."""
    import pyarrow.fs

    if "://" not in uri:
        return pyarrow.fs.LocalFileSystem(), os.path.abspath(uri)
    fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    return fs, str(path)


def input_format(uri: str) -> Format:
    """The format from the name's extension; for a directory, from the extension its files share."""
    suffix = Path(uri.rstrip("/")).suffix
    if suffix:
        return Format.of(Path(uri.rstrip("/")))
    import pyarrow.fs

    fs, path = filesystem(uri)
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
        import pyarrow.compute as pc
        from ray.data.block import BlockAccessor

        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return 0, 0
        table = pa.concat_tables(tables, promote_options="permissive")
        failed = pc.is_valid(table.column(ERROR_COLUMN))
        good, bad = table.filter(pc.invert(failed)), table.filter(failed)
        fs, root = filesystem(self.staging)
        name = f"part-{ctx.task_idx:06d}"
        if good.num_rows:
            id_type = table.schema.field(self.id_name).type if self.keep_id_type else None
            buffer = io.BytesIO()
            writer = Writer(buffer, self.format, self.id_name, id_arrow_type=id_type)
            writer.write_columns(
                [to_json_id(i) for i in good.column(self.id_name).to_pylist()],
                *(good.column(c).to_pylist() for c in ("labels", "scores", "truncated")),
            )
            writer.close()
            with fs.open_output_stream(f"{root}/output/{name}.{self.format.value}") as f:
                f.write(buffer.getvalue())
        if bad.num_rows:
            ids = bad.column(self.id_name).to_pylist()
            lines = [
                {self.id_name: to_json_id(i), "error": e} for i, e in zip(ids, bad.column(ERROR_COLUMN).to_pylist())
            ]
            with fs.open_output_stream(f"{root}/errors/{name}.jsonl") as f:
                f.write("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode("utf-8"))
        return good.num_rows, bad.num_rows


def datasink(sink: ResultSink) -> Any:
    """ResultSink as a ray.data.Datasink (built here so importing engine.jobs.ray needs no Ray)."""
    from ray.data import Datasink

    class _Sink(Datasink):  # type: ignore[type-arg]
        def __init__(self) -> None:
            self.sink = sink

        def on_write_start(self, schema: Any = None) -> None:
            fs, root = filesystem(sink.staging)
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


def replace_dir(fs: Any, src: str, dst: str) -> None:
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
