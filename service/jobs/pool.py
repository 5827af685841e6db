"""A fixed set of worker processes, one job at a time each; a worker that dies is replaced.

Each worker has its own pipe (a killed worker can corrupt only its own channel, never a queue
shared with the others). A reader thread waits on every pipe and every process sentinel and hands
what it sees to the event loop, where all bookkeeping happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import Any

from service.jobs.ending import worker_died
from service.jobs.models import WorkItem
from service.jobs.protocol import (
    Assignment,
    Died,
    Finished,
    KeepAs,
    PoolMessage,
    SmallFit,
    SmallFitAnswer,
    WorkerMessage,
    answers_in,
    batch_of,
)
from service.jobs.worker import worker_main
from service.models.store import SQLiteModelFile

logger = logging.getLogger("service.jobs.pool")

_INLINE_SEND_MAX = 32 * 1024  # bytes; a pipe buffers 64 KiB
_SMALL_FIT_GRACE_S = 5.0  # past its batch's time limits, a small fit's worker is taken for stuck
# Small fits that may wait for a worker busy with other small fits (a few hundred microseconds each), per
# worker; past that, the caller solves its fit itself.
_SMALL_FITS_WAITING_PER_WORKER = 8
# Waiting small fits sent to a worker in one message (see SmallFit): fewer wake-ups, while the last of a batch
# waits at most a few fits' time for its answer.
_SMALL_FIT_BATCH = 4


@dataclass(eq=False)
class _WaitingFit:
    message: bytes  # SmallFit.to_bytes()
    answer: asyncio.Future[SmallFitAnswer | None]
    time_limit_s: float


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection
    cancel_seq: Any  # shared int: the sequence number of the job to cancel
    small_fits: Connection  # its small-fit pipe, read by the event loop itself (see run_small_fit)
    job_id: str | None = None
    seq: int = 0
    retiring: bool = False  # said it will exit: runs no more jobs, and is replaced when it has gone
    # The answers of the small fits it is solving (a batch, in order), and its deadline for them.
    small_fits_out: list[asyncio.Future[SmallFitAnswer | None]] = field(default_factory=list)
    stuck: asyncio.TimerHandle | None = None

    @property
    def free_for_jobs(self) -> bool:
        return self.job_id is None and not self.retiring

    @property
    def free_for_small_fits(self) -> bool:
        return self.free_for_jobs and not self.small_fits_out


_BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _share_cores_between_workers(workers: int) -> None:
    """Give each worker's BLAS an equal share of the cores (unless the operator chose already).

    OpenBLAS defaults to one spinning thread per core in every process; with several busy workers the
    threads outnumber the cores and every fit slows down many times over.
    """
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    for variable in _BLAS_THREAD_VARIABLES:
        os.environ.setdefault(variable, threads)


def _context() -> multiprocessing.context.ForkServerContext:
    # forkserver: children fork from a clean, single-threaded server that has already imported numpy,
    # scipy and the solver, so a replacement worker starts in milliseconds and inherits no threads.
    # The server starts with the environment of its first use: the BLAS thread share is set by then.
    context: multiprocessing.context.ForkServerContext = multiprocessing.get_context("forkserver")
    # The families (solvers, renderers, schemas) but never FastAPI: a worker needs none of the web layer.
    context.set_forkserver_preload(["service.jobs.worker", "service.families.registry"])
    return context


class WorkerPool:
    def __init__(
        self,
        size: int,
        on_message: Callable[[PoolMessage], None],
        memory_limit_bytes: int | None = None,
        model_file: SQLiteModelFile | None = None,
    ) -> None:
        """``model_file``: where the workers keep the models of the small fits they solve (see
        :class:`~service.jobs.worker.SmallFitModels`); without it, a small fit's model comes back in its answer."""
        self.size = size
        self.memory_limit_bytes = memory_limit_bytes
        self.model_file = model_file
        self._on_message = on_message
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()  # guards the list the reader thread walks, and _retired
        # Pipes of dead workers, closed by the reader thread alone: closed from the event loop while the reader
        # waited on them, a pipe's descriptor could be reused by a new worker's and the reader hang for good.
        self._retired: list[Connection] = []
        self._stopping = threading.Event()
        # Small fits waiting for a worker to finish its small fits.
        self._waiting: deque[_WaitingFit] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: threading.Thread | None = None
        self._context = _context()

    # --- lifecycle (event loop thread) ---

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        _share_cores_between_workers(self.size)
        for _ in range(self.size):
            self._spawn()
        self._reader = threading.Thread(target=self._read_forever, name="job-pool-reader", daemon=True)
        self._reader.start()

    def stop(self, timeout_s: float = 3.0) -> None:
        self._stopping.set()
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            if worker.job_id is not None:
                worker.process.kill()
            else:
                try:
                    worker.conn.send(None)
                except OSError:
                    worker.process.kill()
        for worker in workers:
            worker.process.join(timeout_s)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1)
            self._on_loop(self._forget_small_fits, worker)
        if self._reader is not None:
            self._reader.join(timeout_s)

    @property
    def alive(self) -> bool:
        with self._lock:
            workers_up = bool(self._workers) and all(w.process.is_alive() for w in self._workers)
        return workers_up and self._reader is not None and self._reader.is_alive()

    # --- jobs (event loop thread) ---

    @property
    def idle_count(self) -> int:
        return sum(1 for w in self._workers if w.free_for_jobs)

    @property
    def busy_count(self) -> int:
        return sum(1 for w in self._workers if w.job_id is not None)

    def run(self, job_id: str, item: WorkItem) -> None:
        worker = next(w for w in self._workers if w.free_for_jobs)
        worker.seq += 1
        worker.job_id = job_id
        self._release_waiting_small_fits()
        assert self._loop is not None
        message = ForkingPickler.dumps(Assignment(job_id, worker.seq, item))
        if len(message) <= _INLINE_SEND_MAX:  # fits the pipe's buffer: the write cannot block
            self._send(worker, message)
        else:  # a large task blocks until the worker has read it: off the event loop
            self._loop.run_in_executor(None, self._send, worker, message)

    async def run_small_fit(self, fit_id: str, item: WorkItem, keep_as: KeepAs | None = None) -> SmallFitAnswer | None:
        """Solve a small synchronous fit on a worker that runs no job: its answer, or None when no worker is free
        for it (every one runs a job, or enough fits wait already), and the caller should solve it itself.

        The event loop is the service's one busy core: a small fit's arithmetic there (hundreds of microseconds)
        costs more than handing it to an idle worker's core (a pickled item each way, read by the loop itself:
        tens of microseconds). A worker serves small fits between jobs, never during one; those that wait for
        it go together (see SmallFit).
        """
        assert self._loop is not None
        worker = next((w for w in self._workers if w.free_for_small_fits), None)
        waiting_room = _SMALL_FITS_WAITING_PER_WORKER * self.size
        if worker is None and not (any(w.free_for_jobs for w in self._workers) and len(self._waiting) < waiting_room):
            return None
        message = SmallFit(fit_id, item, keep_as).to_bytes()
        if len(message) > _INLINE_SEND_MAX:  # a larger item could block the loop's write
            return None
        answer: asyncio.Future[SmallFitAnswer | None] = self._loop.create_future()
        self._waiting.append(_WaitingFit(message, answer, item.time_limit_s))
        if worker is not None:
            self._send_small_fits(worker)
        return await answer

    def _kill_stuck(self, worker: _Worker) -> None:
        worker.process.kill()  # the reader thread reports its death, which answers its fits

    def cancel(self, job_id: str) -> None:
        """Ask the worker to stop at its next iteration (cooperative; see :meth:`kill`)."""
        worker = self._worker_of(job_id)
        if worker is not None:
            worker.cancel_seq.value = worker.seq

    def kill(self, job_id: str) -> None:
        """Stop the worker now; the reader thread reports its death and a replacement is started."""
        worker = self._worker_of(job_id)
        if worker is not None:
            worker.process.kill()

    def _worker_of(self, job_id: str) -> _Worker | None:
        return next((w for w in self._workers if w.job_id == job_id), None)

    # --- internals ---

    def _spawn(self) -> None:
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        small_parent, small_child = self._context.Pipe(duplex=True)
        cancel_seq = self._context.RawValue("q", -1)
        process = self._context.Process(
            target=worker_main,
            args=(child_conn, cancel_seq, self.memory_limit_bytes, small_child, self.model_file),
            name="em-worker",
            daemon=True,
        )
        process.start()
        child_conn.close()
        small_child.close()
        worker = _Worker(process, parent_conn, cancel_seq, small_parent)
        with self._lock:
            self._workers.append(worker)
        self._on_loop(self._watch_small_fits, worker)

    # --- small fits (event loop thread) ---

    def _watch_small_fits(self, worker: _Worker) -> None:
        assert self._loop is not None
        if not self._stopping.is_set():
            self._loop.add_reader(worker.small_fits.fileno(), self._on_small_fit_answer, worker)
            self._next_small_fit(worker)

    def _forget_small_fits(self, worker: _Worker) -> None:
        """Stop reading a gone worker's small-fit pipe, and answer the fits it was solving, if any."""
        assert self._loop is not None
        if not worker.small_fits.closed:
            self._loop.remove_reader(worker.small_fits.fileno())
            worker.small_fits.close()
        answers = self._take_small_fits_out(worker)
        if answers:
            died = SmallFitAnswer("failed", error=worker_died(describe_exit(worker.process.exitcode)))
            for answer in answers:
                if not answer.done():
                    answer.set_result(died)

    def _send_small_fits(self, worker: _Worker) -> None:
        """Send the worker the next waiting fits, up to a batch (and within what the pipe buffers)."""
        assert self._loop is not None
        batch: list[_WaitingFit] = []
        size = 0
        while self._waiting and len(batch) < _SMALL_FIT_BATCH:
            waiting = self._waiting[0]
            if batch and size + len(waiting.message) > _INLINE_SEND_MAX:
                break
            self._waiting.popleft()
            if not waiting.answer.done():  # its caller may have gone
                batch.append(waiting)
                size += len(waiting.message)
        if not batch:
            return
        worker.small_fits_out = [waiting.answer for waiting in batch]
        # The fits run in turn, each stopping itself at its time limit; a worker that has not answered well past
        # them all is stuck.
        deadline = sum(waiting.time_limit_s for waiting in batch) + _SMALL_FIT_GRACE_S
        worker.stuck = self._loop.call_later(deadline, self._kill_stuck, worker)
        # Within the pipe's buffer: the write cannot block. A worker that died meanwhile is reported by the reader
        # thread, which answers the fits (see _forget_small_fits).
        with contextlib.suppress(OSError, ValueError):
            worker.small_fits.send_bytes(batch_of([waiting.message for waiting in batch]))

    def _take_small_fits_out(self, worker: _Worker) -> list[asyncio.Future[SmallFitAnswer | None]]:
        answers, worker.small_fits_out = worker.small_fits_out, []
        if worker.stuck is not None:
            worker.stuck.cancel()
            worker.stuck = None
        return answers

    def _on_small_fit_answer(self, worker: _Worker) -> None:
        try:
            finished = answers_in(worker.small_fits.recv_bytes())
        except (EOFError, OSError):  # the worker died: its death is reported by the reader thread
            self._loop.remove_reader(worker.small_fits.fileno())  # type: ignore[union-attr]
            return
        for answer, result in zip(self._take_small_fits_out(worker), finished, strict=True):
            worker.retiring = worker.retiring or result.worker_exits
            if not answer.done():
                answer.set_result(result)
        self._next_small_fit(worker)

    def _next_small_fit(self, worker: _Worker) -> None:
        if worker.free_for_small_fits:
            self._send_small_fits(worker)
        self._release_waiting_small_fits()

    def _release_waiting_small_fits(self) -> None:
        """Waiting small fits go back to their callers once no worker is left to take them (all run jobs)."""
        if self._waiting and not any(w.free_for_jobs for w in self._workers):
            while self._waiting:
                answer = self._waiting.popleft().answer
                if not answer.done():
                    answer.set_result(None)

    def _on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback`` on the event loop, from any thread (start and stop run in one of anyio's)."""
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                self._loop.call_soon_threadsafe(callback, *args)

    def _send(self, worker: _Worker, message: bytes | memoryview) -> None:
        # A worker that died meanwhile is reported by the reader thread, which fails its job.
        with contextlib.suppress(OSError, ValueError):
            worker.conn.send_bytes(message)  # what Connection.send does after pickling; recv() unpickles

    def _read_forever(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                by_conn = {w.conn: w for w in self._workers}
                by_sentinel = {w.process.sentinel: w for w in self._workers}
                retired, self._retired = self._retired, []
            for conn in retired:  # in no snapshot any more: nothing else reads them
                conn.close()
            ready = wait([*by_conn, *by_sentinel], timeout=0.2)
            # Pipes first: a worker's last messages are delivered before the news of its death.
            for conn in (r for r in ready if r in by_conn):
                worker = by_conn[conn]
                try:
                    while conn.poll():
                        self._deliver(worker, conn.recv())
                except (EOFError, OSError):
                    pass
            for sentinel in (r for r in ready if r in by_sentinel):
                self._call_soon(self._on_death, by_sentinel[sentinel])

    def _deliver(self, worker: _Worker, message: WorkerMessage) -> None:
        self._call_soon(self._on_worker_message, worker, message)

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed() and not self._stopping.is_set():
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                self._loop.call_soon_threadsafe(callback, *args)

    def _on_worker_message(self, worker: _Worker, message: WorkerMessage) -> None:
        if isinstance(message, Finished) and worker.job_id == message.job_id:
            worker.job_id = None
            worker.retiring = message.worker_exits
        self._on_message(message)

    def _on_death(self, worker: _Worker) -> None:
        with self._lock:
            if worker not in self._workers:
                return  # already handled (pipe EOF and sentinel can both fire)
            self._workers.remove(worker)
            self._retired.append(worker.conn)  # the reader thread closes it (see _retired)
        worker.process.join(1)
        job_id, exitcode = worker.job_id, worker.process.exitcode
        logger.warning("worker pid %s died (exit code %s) running job %s", worker.process.pid, exitcode, job_id)
        self._forget_small_fits(worker)
        if not self._stopping.is_set():
            self._spawn()
        self._release_waiting_small_fits()
        self._on_message(Died(job_id, exitcode))


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "it did not report an exit code"
    if exitcode < 0:
        try:
            import signal

            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"
