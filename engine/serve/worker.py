"""One worker thread per served model: load (at start-up, or lazily), a bounded queue, and dynamic batching.

Requests that arrive within `batch_wait` of each other are run together: the worker takes the first queued job,
keeps collecting for at most `batch_wait` seconds (or until `max_batch_inputs` inputs), then runs one `predict`
per distinct parameter set over the concatenated inputs and hands each job its slice. The queue is bounded:
when it is full, `submit` raises Overloaded at once instead of letting latency grow without limit.
Pure threading, no HTTP: the server awaits the job's future from its event loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from engine.errors import EngineError, InferenceError, Overloaded

log = logging.getLogger("engine")


class Predictor(Protocol):
    """TextClassifier and ZeroShotClassifier both fit: one result per input, in input order."""

    def predict(self, inputs: Sequence[Any], parameters: Any) -> Sequence[Any]: ...


class State(str, Enum):
    NOT_LOADED = "not loaded"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class BatchPolicy:
    """`max_batch_inputs=1` turns batching off (one request per model run)."""

    batch_wait: float = 0.005
    max_batch_inputs: int = 128
    max_queue: int = 256


@dataclass(frozen=True)
class JobResult:
    results: list[Any]
    queue_time: float  # seconds from submit to the start of the model run
    compute_time: float  # seconds of the model run this job was part of
    batch_requests: int  # requests that shared that model run


@dataclass
class Job:
    """Inputs of one request; `parameters` must be hashable: jobs with equal parameters share a model run."""

    inputs: list[Any]
    parameters: Hashable
    cost: int  # model inputs this job adds (zero-shot: texts x labels)
    future: Future[JobResult] = field(default_factory=Future)
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class Stats:
    requests: int = 0
    model_runs: int = 0
    inputs: int = 0


_STOP = object()


class ModelWorker:
    """Loads its model on the first `start()` (in its own thread) and then serves the queue until `stop()`."""

    def __init__(self, name: str, load: Callable[[], Predictor], policy: BatchPolicy, load_estimate: float) -> None:
        self.name = name
        self.policy = policy
        self.load_estimate = load_estimate
        self.stats = Stats()
        self.error: BaseException | None = None
        self._load = load
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=policy.max_queue)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._state = State.NOT_LOADED
        self._load_started = 0.0
        self._settled = threading.Event()  # set once the load has succeeded or failed

    @property
    def state(self) -> State:
        return self._state

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        """Begin loading in the background (idempotent)."""
        with self._lock:
            if self._thread is None:
                self._state = State.LOADING
                self._load_started = time.monotonic()
                self._thread = threading.Thread(target=self._run, name=f"engine-serve-{self.name}", daemon=True)
                self._thread.start()

    def wait_loaded(self, timeout: float | None = None) -> State:
        """Start loading if needed and block until the model is ready or failed (or `timeout` passes)."""
        self.start()
        self._settled.wait(timeout)
        return self._state

    def estimated_time(self) -> float:
        """Seconds until the model should be ready (a rough guess from its file size), at least 0.1."""
        return round(max(0.1, self.load_estimate - (time.monotonic() - self._load_started)), 1)

    def submit(self, job: Job) -> Future[JobResult]:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(
                f"model {self.name} has {self.policy.max_queue} requests queued; retry shortly or start the server "
                "with a larger --max-queue"
            ) from None
        return job.future

    def stop(self) -> None:
        if self._thread is not None:
            try:
                self._queue.put(_STOP, timeout=1)
            except queue.Full:
                pass  # the thread is a daemon; it dies with the process

    def _run(self) -> None:
        try:
            model = self._load()
        except BaseException as exc:  # noqa: BLE001 - reported to every waiting and later request
            self.error = exc
            self._state = State.FAILED
            self._settled.set()
            log.error("loading model %s failed: %s", self.name, exc)
            self._fail_queued(exc)
            return
        self._state = State.READY
        self._settled.set()
        while True:
            jobs = self._collect()
            if jobs is None:
                return
            self._run_batch(model, jobs)

    def _fail_queued(self, exc: BaseException) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(exc)

    def _collect(self) -> list[Job] | None:
        """The first queued job plus whatever arrives within the wait bound, up to the input budget."""
        first = self._queue.get()
        if first is _STOP:
            return None
        jobs, cost = [first], first.cost
        deadline = time.perf_counter() + self.policy.batch_wait
        while cost < self.policy.max_batch_inputs:
            try:
                remaining = deadline - time.perf_counter()
                nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is _STOP:
                self._queue.put(_STOP)  # handled after this batch
                break
            jobs.append(nxt)
            cost += nxt.cost
        return jobs

    def _run_batch(self, model: Predictor, jobs: list[Job]) -> None:
        groups: dict[Hashable, list[Job]] = {}
        for job in jobs:
            if job.future.set_running_or_notify_cancel():  # False: the client went away, skip its work
                groups.setdefault(job.parameters, []).append(job)
        for parameters, group in groups.items():
            try:
                self._run_group(model, parameters, group)
            except Exception as exc:  # noqa: BLE001 - the request gets the error, the worker lives on
                if len(group) == 1:
                    group[0].future.set_exception(_engine_error(exc))
                    continue
                for job in group:  # isolate the request that broke the shared run
                    try:
                        self._run_group(model, parameters, [job])
                    except Exception as exc:  # noqa: BLE001
                        job.future.set_exception(_engine_error(exc))

    def _run_group(self, model: Predictor, parameters: Hashable, group: list[Job]) -> None:
        start = time.perf_counter()
        results = list(model.predict([x for job in group for x in job.inputs], parameters))
        compute = time.perf_counter() - start
        self.stats.model_runs += 1
        self.stats.requests += len(group)
        self.stats.inputs += len(results)
        offset = 0
        for job in group:
            part = results[offset : offset + len(job.inputs)]
            offset += len(job.inputs)
            job.future.set_result(JobResult(part, start - job.submitted, compute, len(group)))


def _engine_error(exc: Exception) -> EngineError:
    """Errors of the engine pass as they are; anything else is an inference failure."""
    if isinstance(exc, EngineError):
        return exc
    return InferenceError(f"inference failed: {type(exc).__name__}: {exc}")
