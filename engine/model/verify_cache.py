"""Remembers which model graphs passed the sha256 and graph checks, by the file's identity, so that loading the same
unchanged file again skips reading, hashing and scanning it (the larger part of a load after onnxruntime's).

An entry holds the file's identity (device, inode, size, mtime_ns, ctime_ns), the sha256 it matched and the
manifest it was checked against. Any write or replacement changes the identity: the kernel sets ctime on every
change, and no unprivileged call can set it back. A file changed within the timestamps' granularity of its
verification could keep its identity, so a file is only remembered once its ctime is RACY_NS older than the
moment reading began (as git does with its index). The cache lives in the user's cache directory and is ignored
if another user owns it or others may write it. ENGINE_VERIFY_CACHE=off turns it off (or names another file).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from engine.model.fileio import FileIdentity, identity, write_atomic

RACY_NS = 2_000_000_000  # coarser than any file system's ctime granularity we load from
MAX_ENTRIES = 256


def cache_file() -> Path | None:
    setting = os.environ.get("ENGINE_VERIFY_CACHE")
    if setting is not None:
        return None if setting.lower() in ("", "0", "off", "no") else Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "offline-textclf-engine" / "verified.json"


def _entries(path: Path) -> dict[str, Any]:
    try:
        st = os.stat(path)
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_mode & 0o022
            or st.st_uid != getattr(os, "getuid", lambda: st.st_uid)()
        ):
            return {}
        entries = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _key(graph: Path) -> str:
    return str(graph.resolve())


def lookup(graph: Path, sha256: str, manifest_sha256: str) -> FileIdentity | None:
    """The graph's current identity if it is a regular file already verified against this sha256 and manifest."""
    where = cache_file()
    if where is None:
        return None
    entry = _entries(where).get(_key(graph))
    try:
        st = os.stat(graph)
    except OSError:
        return None
    now = identity(st)
    if (
        stat.S_ISREG(st.st_mode)
        and isinstance(entry, dict)
        and entry.get("identity") == list(now)
        and entry.get("sha256") == sha256
        and entry.get("manifest") == manifest_sha256
    ):
        return now
    return None


def remember(graph: Path, checked: FileIdentity, sha256: str, manifest_sha256: str, read_start_ns: int) -> None:
    """Record a graph that passed the checks, unless it changed too recently to tell a later change apart."""
    where = cache_file()
    if where is None or checked[4] > read_start_ns - RACY_NS:
        return
    entries = _entries(where)
    entries[_key(graph)] = {"identity": list(checked), "sha256": sha256, "manifest": manifest_sha256}
    while len(entries) > MAX_ENTRIES:
        entries.pop(next(iter(entries)))
    try:
        where.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(where, json.dumps(entries).encode("utf-8"))
    except OSError:
        pass  # a cache that cannot be written only costs the next load its checks
