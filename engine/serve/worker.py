"""One worker thread per served model: load (at start-up, or lazily), a bounded queue, and fair dynamic batching.

The queue counts model inputs, not requests (a zero-shot text counts once per candidate label): `submit` refuses
a request at once when the inputs already queued plus its own would pass `max_queue` (Overloaded, 503), and a
request that could never fit (RequestTooLargeError, 413), so memory is bounded by the configuration, whatever the
requests look like. Each model run takes at most `max_batch_inputs` inputs, shared out round-robin between the
queued requests with the same parameters: a large request is cut into slices that alternate with its
neighbours', so a small request waits for about one model run, not for the large one to finish. Requests that
arrive within `batch_wait` of each other share runs. A request whose client has gone is dropped (`drop`): its
inputs that have not run never run. Pure threading, no HTTP: the server awaits each job's future from its event
loop, and `events` reports what the worker does (engine.server turns it into Prometheus metrics).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from engine.errors import EngineError, InferenceError, Overloaded, RequestTooLargeError

log = logging.getLogger("engine")


class Predictor(Protocol):
    """TextClassifier and ZeroShotClassifier both fit: one result per input, in input order."""

    def predict(self, inputs: Sequence[Any], parameters: Any) -> Sequence[Any]: ...


class WorkerEvents(Protocol):
    """What a worker reports, from its own thread."""

    def model_run(self, model: str, inputs: int, requests: int, seconds: float) -> None: ...

    def queue_wait(self, model: str, seconds: float) -> None: ...

    def dropped(self, model: str, inputs: int) -> None: ...


class NoEvents:
    def model_run(self, model: str, inputs: int, requests: int, seconds: float) -> None:
        pass

    def queue_wait(self, model: str, seconds: float) -> None:
        pass

    def dropped(self, model: str, inputs: int) -> None:
        pass


class State(str, Enum):
    NOT_LOADED = "not loaded"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class BatchPolicy:
    """`max_batch_inputs=1` turns batching off (one input per model run). `max_queue` counts model inputs."""

    batch_wait: float = 0.005
    max_batch_inputs: int = 128
    max_queue: int = 4096


@dataclass(frozen=True)
class JobResult:
    results: list[Any]
    queue_time: float  # seconds from submit to the start of the first model run with this job's inputs
    compute_time: float  # seconds of the model runs this job was part of
    batch_requests: int  # the most requests that shared one of those runs


@dataclass(eq=False)
class Job:
    """Inputs of one request; `parameters` must be hashable: jobs with equal parameters share model runs.
    The fields after `submitted` are the worker's, changed under its lock."""

    inputs: list[Any]
    parameters: Hashable
    cost: int  # model inputs this job adds (zero-shot: texts x labels)
    future: Future[JobResult] = field(default_factory=Future)
    submitted: float = field(default_factory=time.perf_counter)
    taken: int = 0  # inputs handed to model runs so far, in order
    results: list[Any] = field(default_factory=list)
    started: float | None = None
    compute: float = 0.0
    shared: int = 0
    closed: bool = False  # failed or dropped: nothing more is run or delivered

    @property
    def unit(self) -> int:
        """Model inputs per input (zero-shot: labels per text), for slicing the batch budget."""
        return max(1, math.ceil(self.cost / max(1, len(self.inputs))))

    def remaining_cost(self) -> int:
        n = len(self.inputs)
        return self.cost * (n - self.taken) // n if n else 0


@dataclass
class Stats:
    requests: int = 0  # answered
    model_runs: int = 0
    inputs: int = 0  # run
    dropped_requests: int = 0  # their client went away before they were answered
    dropped_inputs: int = 0  # never run because of that


Slice = tuple[Job, int, int]


def share_out(jobs: Sequence[Job], budget: int) -> list[Slice]:
    """Split `budget` model inputs between the jobs, equal shares first, what a job cannot use going to the
    others; every job gets at least one input while the budget lasts. An input costlier than the whole budget
    runs alone when its job is at the head (jobs rotate through the head)."""
    if jobs and jobs[0].unit > budget:  # the head's turn: its input alone, or it would wait for ever
        return [(jobs[0], jobs[0].taken, jobs[0].taken + 1)]
    take = [0] * len(jobs)
    left = [len(j.inputs) - j.taken for j in jobs]
    while True:
        able = [i for i, j in enumerate(jobs) if take[i] < left[i] and j.unit <= budget]
        if not able:
            break
        share = max(1, budget // len(able))
        for i in able:
            unit = jobs[i].unit
            k = min(left[i] - take[i], max(1, share // unit), budget // unit)
            take[i] += k
            budget -= k * unit
    return [(j, j.taken, j.taken + t) for j, t in zip(jobs, take) if t]


class ModelWorker:
    """Loads its model on the first `start()` (in its own thread) and then serves the queue until `stop()`."""

    def __init__(
        self,
        name: str,
        load: Callable[[], Predictor],
        policy: BatchPolicy,
        load_estimate: float,
        events: WorkerEvents | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self.load_estimate = load_estimate
        self.events: WorkerEvents = events or NoEvents()
        self.stats = Stats()
        self.error: BaseException | None = None
        self._load = load
        self._cond = threading.Condition()
        self._pending: deque[Job] = deque()  # round-robin order: a job that got a slice goes to the back
        self._queued = 0  # model inputs of the pending jobs not yet run
        self._stopping = False
        self._rate = 0.0  # model inputs per second of recent runs, for Retry-After
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
        """Requests waiting for (some of) their inputs to run."""
        return len(self._pending)

    @property
    def queued_inputs(self) -> int:
        return self._queued

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

    def retry_after(self) -> float:
        """Seconds until the inputs queued now should have run, from the recent rate: between 1 and 60."""
        if self._rate <= 0:
            return 1.0
        return float(min(60, max(1, math.ceil(self._queued / self._rate))))

    def submit(self, job: Job) -> Future[JobResult]:
        limit = self.policy.max_queue
        if not job.inputs:  # nothing to run (and nothing a model run would ever finish)
            job.closed = True
            _settle(job.future, JobResult([], 0.0, 0.0, 0))
            return job.future
        if job.cost > limit:
            raise RequestTooLargeError(
                f"this request has {job.cost} model inputs, more than the {limit} that model {self.name}'s queue "
                f"holds; split it into requests of at most {limit} inputs, or start the server with a larger "
                "--max-queue"
            )
        with self._cond:
            if self._state is State.FAILED or self._stopping:
                raise Overloaded(f"model {self.name} is not serving (failed to load, or shutting down)")
            if self._queued + job.cost > limit:
                raise Overloaded(
                    f"model {self.name} has {self._queued} inputs queued and this request adds {job.cost}, over "
                    f"--max-queue {limit}; retry shortly or start the server with a larger --max-queue"
                )
            self._pending.append(job)
            self._queued += job.cost
            self._cond.notify()
        return job.future

    def drop(self, job: Job) -> int:
        """The job's client has gone: its inputs that have not run never will. Returns how many those are."""
        with self._cond:
            if job.closed:
                return 0
            job.closed = True
            job.future.cancel()
            left = len(job.inputs) - job.taken
            if job in self._pending:
                self._pending.remove(job)
                self._queued -= job.remaining_cost()
            else:
                left = 0
            self.stats.dropped_requests += 1
            self.stats.dropped_inputs += left
        self.events.dropped(self.name, left)
        return left

    def withdraw(self, job: Job) -> bool:
        """Take back a job none of whose inputs has run yet (its queue deadline passed). False if it has started."""
        with self._cond:
            if job.taken or job.closed or job not in self._pending:
                return False
            job.closed = True
            job.future.cancel()
            self._pending.remove(job)
            self._queued -= job.remaining_cost()
            return True

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            model = self._load()
        except BaseException as exc:
            self.error = exc
            self._state = State.FAILED
            self._settled.set()
            log.error("loading model %s failed: %s", self.name, exc)
            self._fail_pending(exc)
            return
        self._state = State.READY
        self._settled.set()
        while True:
            batch = self._next_batch()
            if batch is None:
                self._fail_pending(Overloaded(f"model {self.name} stopped: the server is shutting down"))
                return
            self._run_batch(model, *batch)

    def _fail_pending(self, exc: BaseException) -> None:
        with self._cond:
            jobs = list(self._pending)
            self._pending.clear()
            self._queued = 0
            for job in jobs:
                job.closed = True
        for job in jobs:
            _settle(job.future, exc=exc)

    def _next_batch(self) -> tuple[Hashable, list[Slice]] | None:
        """Wait for work, give late arrivals `batch_wait` to join, then slice the next model run's inputs out of
        the jobs that share the oldest job's parameters. None once stopped."""
        budget = self.policy.max_batch_inputs
        with self._cond:
            while True:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return None
                deadline = time.perf_counter() + self.policy.batch_wait
                while self._queued < budget and self._pending and not self._stopping:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._pending:
                    break
            parameters = self._pending[0].parameters
            slices = share_out([j for j in self._pending if j.parameters == parameters], budget)
            now = time.perf_counter()
            for job, _, stop in slices:
                before = job.remaining_cost()
                job.taken = stop
                self._queued -= before - job.remaining_cost()
                if job.started is None:
                    job.started = now
                    self.events.queue_wait(self.name, now - job.submitted)
            served = {id(job) for job, _, _ in slices}
            rest = [j for j in self._pending if id(j) not in served]
            self._pending = deque(rest + [j for j, _, _ in slices if j.taken < len(j.inputs)])
        return parameters, slices

    def _run_batch(self, model: Predictor, parameters: Hashable, slices: list[Slice]) -> None:
        try:
            self._run_slices(model, parameters, slices)
        except Exception as exc:
            if len(slices) == 1:
                self._fail(slices[0][0], exc)
                return
            for one in slices:  # isolate the request that broke the shared run
                try:
                    self._run_slices(model, parameters, [one])
                except Exception as exc:
                    self._fail(one[0], exc)

    def _run_slices(self, model: Predictor, parameters: Hashable, slices: list[Slice]) -> None:
        inputs = [x for job, a, b in slices for x in job.inputs[a:b]]
        start = time.perf_counter()
        results = list(model.predict(inputs, parameters))
        compute = time.perf_counter() - start
        self.stats.model_runs += 1
        self.stats.inputs += len(results)
        if compute > 0:
            rate = len(results) / compute
            self._rate = rate if self._rate <= 0 else 0.8 * self._rate + 0.2 * rate
        self.events.model_run(self.name, len(results), len(slices), compute)
        offset = 0
        for job, a, b in slices:
            part = results[offset : offset + (b - a)]
            offset += b - a
            with self._cond:
                if job.closed:
                    continue
                job.results.extend(part)  # one thread runs a job's slices in order: results stay in input order
                job.compute += compute
                job.shared = max(job.shared, len(slices))
                done = len(job.results) == len(job.inputs)
                if done:
                    job.closed = True
            if done:
                self.stats.requests += 1
                queue_time = (job.started or start) - job.submitted
                _settle(job.future, JobResult(job.results, queue_time, job.compute, job.shared))

    def _fail(self, job: Job, exc: Exception) -> None:
        with self._cond:
            if job.closed:
                return
            job.closed = True
            if job in self._pending:
                self._pending.remove(job)
                self._queued -= job.remaining_cost()
        _settle(job.future, exc=_engine_error(exc))


def _settle(future: Future[JobResult], result: JobResult | None = None, exc: BaseException | None = None) -> None:
    """Hand over a result or an error, unless the client has gone (the future was cancelled)."""
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]
    except InvalidStateError:
        pass


def _engine_error(exc: Exception) -> EngineError:
    """Errors of the engine pass as they are; anything else is an inference failure."""
    if isinstance(exc, EngineError):
        return exc
    return InferenceError(f"inference failed: {type(exc).__name__}: {exc}")
