"""On-disk state of a batch-scoring job, so that a job killed at any moment (SIGKILL included) resumes.

    OUTPUT.partial/
        manifest.json   what the job is: input fingerprint, model manifest sha256, every result-changing parameter
        lock            held (flock) while a job runs, so two jobs never write the same state
        000000.jsonl    one file per finished chunk, each committed by write-to-temp, fsync, rename; its first
                        line holds the digest of the input read up to the end of that chunk and the chunk's row
                        and error counts, so a resumed job counts its finished rows without decoding them
        *.tmp           unfinished writes, discarded when the job starts again

A chunk file exists complete or not at all, so on restart the finished chunks are exactly the files present.
A job whose manifest differs from the stored one is refused: mixing two jobs' rows would be silent corruption.
Size and mtime can be restored after an edit, so a resumed job also reads the input's bytes again (without
decoding the rows: formats.Reader.rows) and compares, at the end of every finished chunk, the digest of the bytes
read so far with the one stored in that chunk (`check_input`): the rows already scored must still be the file's
rows. `--restart` takes the lock first and
never touches the state of a job that is running.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypedDict

from engine.errors import JobLockedError, ResumeRefusedError
from engine.jobs.formats import Digest, StateRow
from engine.model.fileio import fsync_dir, hash_regular, sha256, write_atomic

STATE_FORMAT = "engine-score-state/3"  # /2: chunk files start with the input digest; /3: and their counts
STATE_MANIFEST = "manifest.json"
EDGE_BYTES = 1 << 20


class ChunkHeader(TypedDict):
    """The first line of a chunk file."""

    input: Digest | None  # the input read up to the end of the chunk (None: not hashed while read, Parquet)
    rows: int
    errors: int


def input_fingerprint(path: Path, whole: bool = False) -> dict[str, int | str]:
    """Size, mtime and the sha256 of the first and last MiB: cheap on any size, and catches appends. `whole`
    adds the sha256 of the whole file, for inputs that are not hashed while they are read (Parquet)."""
    stat = path.stat()
    digest = sha256()
    with path.open("rb") as f:
        digest.update(f.read(EDGE_BYTES))
        if stat.st_size > EDGE_BYTES:
            f.seek(max(EDGE_BYTES, stat.st_size - EDGE_BYTES))
            digest.update(f.read(EDGE_BYTES))
    found: dict[str, int | str] = {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256_edges": digest.hexdigest(),
    }
    if whole:
        found["sha256"] = hash_regular(path)[0]
    return found


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    what = []
    if old.get("input") != new["input"]:
        what.append("the input file changed (size, modification time or content)")
    if old.get("model") != new["model"]:
        what.append("the model changed (its manifest.json differs)")
    old_params, new_params = old.get("parameters", {}), new["parameters"]
    for key in sorted(set(old_params) | set(new_params)):
        if old_params.get(key) != new_params.get(key):
            what.append(f"{key}: {old_params.get(key)!r} before, {new_params.get(key)!r} now")
    return what or ["the state format changed"]


class JobState:
    """The state directory of one job, locked for as long as the object is open."""

    def __init__(self, directory: Path, lock: IO[bytes]) -> None:
        self.dir = directory
        self._lock = lock

    @classmethod
    def open(cls, directory: Path, identity: dict[str, Any], *, restart: bool = False) -> JobState:
        """Create the state, or reopen a matching one. restart=True throws away any earlier state first."""
        identity = {"format": STATE_FORMAT, **identity}
        directory.mkdir(parents=True, exist_ok=True)
        lock = _lock(directory)  # before anything is read or removed: a running job keeps its state
        try:
            if restart:
                _clear(directory)
            manifest = directory / STATE_MANIFEST
            if manifest.exists():
                stored = json.loads(manifest.read_bytes())
                if stored != identity:
                    reasons = "; ".join(_differences(stored, identity))
                    raise ResumeRefusedError(
                        f"{directory} holds an unfinished job with other settings ({reasons}). Run again with the "
                        f"same input, model and parameters to resume it, or pass --restart (or delete {directory}) "
                        "to start over."
                    )
            else:
                _clear(directory)  # a job killed before its manifest existed left nothing of value
                write_atomic(manifest, json.dumps(identity, sort_keys=True, indent=1).encode("utf-8"))
            for tmp in directory.glob("*.tmp"):
                tmp.unlink()
        except BaseException:
            lock.close()
            raise
        return cls(directory, lock)

    def chunk_path(self, k: int) -> Path:
        return self.dir / f"{k:06d}.jsonl"

    def committed(self) -> int:
        """How many chunks are finished: they are always 0..n-1, as chunks are committed in order."""
        n = 0
        while self.chunk_path(n).exists():
            n += 1
        return n

    def commit(self, k: int, records: list[StateRow], input_digest: Digest | None = None) -> None:
        """Chunk k's records, after a header: the digest of the input read up to its end (None: not hashed,
        Parquet) and the chunk's row and error counts."""
        header: ChunkHeader = {
            "input": input_digest,
            "rows": len(records),
            "errors": sum("error" in r for r in records),
        }
        lines = [json.dumps(header)] + [json.dumps(r, ensure_ascii=False) for r in records]
        write_atomic(self.chunk_path(k), "".join(line + "\n" for line in lines).encode("utf-8"))

    def header(self, k: int) -> ChunkHeader:
        """Chunk k's first line only: {input, rows, errors}."""
        with self.chunk_path(k).open("rb") as f:
            found: ChunkHeader = json.loads(next(f))
        return found

    def read(self, k: int) -> Iterator[StateRow]:
        with self.chunk_path(k).open("rb") as f:
            next(f)  # the header
            for line in f:
                yield json.loads(line)

    def check_input(self, k: int, input_digest: Digest | None) -> None:
        """Refuse to resume when the input read up to the end of finished chunk k is not what it was."""
        stored = self.header(k)["input"]
        if stored != input_digest:
            raise ResumeRefusedError(
                f"the input changed in rows this unfinished job already scored (its bytes up to the end of chunk {k} "
                f"differ from when that chunk was scored, although size and modification time may match). Pass "
                f"--restart (or delete {self.dir}) to score the file as it is now."
            )

    def close(self) -> None:
        self._lock.close()

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.dir)
        fsync_dir(self.dir.parent)


def _clear(directory: Path) -> None:
    """Everything in the state directory but the lock file, which the caller holds."""
    for entry in directory.iterdir():
        if entry.name == "lock":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    fsync_dir(directory)


def _lock(directory: Path) -> IO[bytes]:
    f = (directory / "lock").open("wb")
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock; one job per OUTPUT is then the user's care
        return f
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise JobLockedError(
            f"another `engine score` is using {directory} right now (it is locked); wait for that job to finish or "
            "stop it first"
        ) from None
    return f
