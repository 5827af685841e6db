"""The worker process: takes one job at a time from its pipe, solves it, reports progress and the result.

Runs in a child process, so a fit can use a core fully, be killed when it will not stop, and take
nothing of another job's state with it.
"""

from __future__ import annotations

import logging
import os
import resource
import selectors
import signal
import time
from multiprocessing.connection import Connection
from typing import Any

from service.em.errors import EMError
from service.em.loop import Hooks
from service.jobs.models import Replay, StorageError, WorkItem
from service.jobs.protocol import (
    Assignment,
    Finished,
    IterationEvent,
    Progress,
    SmallFit,
    SmallFitAnswer,
    Started,
    answers_to_bytes,
    fits_in,
)
from service.jobs.traces import StartTraces
from service.models.store import ModelRecord, SQLiteModelFile, SQLiteModelStore

logger = logging.getLogger("service.jobs.worker")

_FLUSH_INTERVAL_S = 0.05
_FLUSH_MAX_EVENTS = 1000
_WORKER_NICENESS = 5


class RunHooks(Hooks):
    """The hooks :func:`execute` needs of a job runner: iteration events out in batches (one message per
    iteration would cost more than a fast iteration itself; 20 batches a second is live enough to watch),
    cancellation in, every start's trace kept for the job's trace picture (bounded). A runner says how a batch
    is sent (:meth:`send`) and how a cancel is seen (:meth:`should_cancel`)."""

    def __init__(self) -> None:
        self.buffer: list[IterationEvent] = []
        self.last_flush = time.monotonic()
        self.cancelled = False
        self.traces = StartTraces()

    def on_iteration(self, start: int, iteration: int, log_likelihood: float, delta: float) -> None:
        self.buffer.append(IterationEvent(start, iteration, log_likelihood, delta))
        self.traces.add(start, iteration, log_likelihood)
        if len(self.buffer) >= _FLUSH_MAX_EVENTS or time.monotonic() - self.last_flush >= _FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Send the iteration events still buffered."""
        if self.buffer:
            self.send(self.buffer)
            self.buffer = []
        self.last_flush = time.monotonic()

    def send(self, events: list[IterationEvent]) -> None:
        raise NotImplementedError


class _WorkerHooks(RunHooks):
    def __init__(self, conn: Connection, job_id: str, seq: int, cancel_seq: Any) -> None:
        super().__init__()
        self.conn, self.job_id, self.seq, self.cancel_seq = conn, job_id, seq, cancel_seq
        self.parent_pid = os.getppid()

    def should_cancel(self) -> bool:
        # The parent writes the sequence number of the job to cancel; a stale request for an earlier
        # job on this worker never matches. An orphaned worker (its parent died) stops too.
        self.cancelled = self.cancelled or self.cancel_seq.value == self.seq or os.getppid() != self.parent_pid
        return self.cancelled

    def send(self, events: list[IterationEvent]) -> None:
        self.conn.send(Progress(self.job_id, events))


class _Unfollowed(RunHooks):
    """A small synchronous fit's hooks: nobody follows its iterations or draws its pictures, and nothing but
    its own time limit stops it."""

    def on_iteration(self, start: int, iteration: int, log_likelihood: float, delta: float) -> None:
        pass


class SmallFitModels:
    """A worker's own connection to the model store, opened at the first model it keeps.

    A synchronous fit answers only once its model is stored. The worker that solved it stores it, a batch's
    models in one transaction: on the event loop that write (and the wait for it) cost a small fit's request
    ~100 us of the API process's one core, the service's bottleneck under load, while the workers' cores had
    time to spare.
    """

    def __init__(self, file: SQLiteModelFile) -> None:
        self.file = file
        self.store: SQLiteModelStore | None = None

    def keep(self, fits: list[SmallFit], answers: list[SmallFitAnswer]) -> list[SmallFitAnswer]:
        """``answers`` with the models of the succeeded fits stored (``stored``), or all refused (``refused``)."""
        now = time.time()
        kept, records = [], []
        for i, (fit, answer) in enumerate(zip(fits, answers, strict=True)):
            if fit.keep_as is not None and answer.status == "succeeded" and answer.model is not None:
                kept.append(i)
                records.append(ModelRecord(fit.fit_id, fit.keep_as.owner, fit.keep_as.kind, now, None, answer.model))
        if not kept:
            return answers
        refused = self._put(records)
        answers = list(answers)
        for i in kept:
            if refused is None:
                answers[i] = answers[i]._replace(model=None, stored=True)
            else:
                answers[i] = SmallFitAnswer("failed", refused=refused, iterations=answers[i].iterations)
        return answers

    def _put(self, records: list[ModelRecord]) -> StorageError | None:
        try:
            if self.store is None:
                self.store = self.file.open()
            self.store.put_many(records)
        except StorageError as exc:
            return exc
        except Exception as exc:  # anything else SQLite says (a constraint, a damaged file): logged, and a 503
            logger.exception("keeping %d small fits' models failed", len(records))
            return StorageError(f"the model store cannot be written ({exc}); retry later")
        return None


def run_small_fits(conn: Connection, batch: bytes, models: SmallFitModels | None = None) -> None:
    """Solve a batch of small fits in turn, keep their models (if this worker has the store), answer together."""
    fits = fits_in(batch)
    answers = [SmallFitAnswer.of(execute(fit.fit_id, fit.item, _Unfollowed())) for fit in fits]
    if models is not None:
        answers = models.keep(fits, answers)
    conn.send_bytes(answers_to_bytes(answers))
    if any(answer.worker_exits for answer in answers):
        raise MemoryError  # as after a job: the worker exits and is replaced


def run_job(conn: Connection, assignment: Assignment, cancel_seq: Any) -> None:
    job_id, item = assignment.job_id, assignment.item
    conn.send(Started(job_id, time.time()))
    hooks = _WorkerHooks(conn, job_id, assignment.seq, cancel_seq)
    finished = execute(job_id, item, hooks)
    conn.send(finished)
    if finished.worker_exits:
        raise MemoryError  # the worker exits and is replaced: what the fit took goes back to the system


def execute(job_id: str, item: WorkItem, hooks: RunHooks) -> Finished:
    """Run ``item`` to its end, as any job runner does (a local worker process, a queued job's work horse):
    solve, render, keep the model and the pictures' data; every way it can end is a :class:`Finished`."""
    try:
        solution = item.solve(item.task, hooks)
        hooks.flush()
        if hooks.cancelled:
            return Finished(job_id, "cancelled")
        result = item.render(solution, job_id)
        model = None if item.keep is None else item.keep(solution)
        picture = _picture(item, solution, model, hooks, job_id)
        replay = Replay.of(solution.outcome) if item.fit else None
        return Finished(job_id, "succeeded", result=result, replay=replay, model=model, picture=picture)
    except EMError as exc:
        return Finished(job_id, "failed", error=invalid_request(exc))
    except MemoryError:
        error = {
            "type": "memory_limit",
            "message": "the fit needed more memory than a fit worker may use; fit fewer points or components, "
            "or keep less (trace 'loglik', return_responsibilities false)",
        }
        return Finished(job_id, "failed", error=error, worker_exits=True)
    except Exception:
        logger.exception("job %s failed", job_id)
        error = {"type": "internal_error", "message": "the fit failed unexpectedly; the error was logged"}
        return Finished(job_id, "failed", error=error)


def _picture(item: WorkItem, solution: Any, model: bytes | None, hooks: RunHooks, job_id: str) -> bytes | None:
    """What the job keeps for its pictures; a failure here costs the job its pictures, never its result."""
    if item.picture is None:
        return None
    try:
        return item.picture(item.task, solution, model, hooks.traces.arrays())
    except Exception:
        logger.exception("job %s: the data for its pictures could not be kept", job_id)
        return None


def invalid_request(exc: EMError) -> dict[str, str]:
    """A job's error for input the solver refused (the API answers it as a 422 naming ``field``)."""
    return {"type": "invalid_request", "message": exc.message, "field": exc.field or ""}


def limit_memory(limit_bytes: int | None) -> None:
    """Cap this process's data segment (heap and private mappings: every numpy array), so a runaway fit
    fails with MemoryError here instead of pushing the host into its OOM killer."""
    if limit_bytes is not None:
        resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))


def worker_main(
    conn: Connection,
    cancel_seq: Any,
    memory_limit_bytes: int | None = None,
    small_fits: Connection | None = None,
    model_file: SQLiteModelFile | None = None,
) -> None:
    """Jobs arrive on ``conn``; small synchronous fits on ``small_fits``, served first (they take microseconds,
    and their callers wait), their models kept in ``model_file`` when given."""
    # Ctrl-C reaches the whole process group; the parent decides what happens to running jobs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_memory(memory_limit_bytes)
    # Fits are batch work: when the cores are saturated the event loop (health checks, new requests,
    # streams) should be scheduled first, and a lower priority costs a lone fit nothing.
    os.nice(_WORKER_NICENESS)
    # One selector for the worker's life: multiprocessing's wait() builds one per call.
    selector = selectors.DefaultSelector()
    models = None if model_file is None else SmallFitModels(model_file)
    selector.register(conn, selectors.EVENT_READ)
    if small_fits is not None:
        selector.register(small_fits, selectors.EVENT_READ)
    while True:
        try:
            if small_fits is not None and any(key.fileobj is small_fits for key, _ in selector.select()):
                run_small_fits(small_fits, small_fits.recv_bytes(), models)
                continue
            message = conn.recv()
        except (EOFError, OSError, MemoryError):
            return
        if message is None:
            return
        try:
            run_job(conn, message, cancel_seq)
        except MemoryError:
            return
