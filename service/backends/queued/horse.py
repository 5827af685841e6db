"""What an RQ work horse runs for a queued job: the job's fit, its events on Redis, its end in the shared store.

RQ forks a work horse per job, so a fit that crashes or is killed takes nothing else with it. The horse runs
the same :func:`~service.jobs.worker.execute` as a local worker process and commits the end with the same
:func:`~service.jobs.ending.commit_end`: a job finishes, and is stored, whether or not any API replica is up.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import redis

from service.backends.queued.channel import BEAT_INTERVAL_S, WorkerChannel
from service.backends.queued.stores import WorkerStores, open_worker_stores
from service.jobs.ending import STUCK_PAST_TIME_LIMIT, as_ended, commit_end
from service.jobs.models import JobRecord, StorageError, WorkItem
from service.jobs.protocol import Finished, IterationEvent
from service.jobs.worker import RunHooks, execute, limit_memory
from service.settings import Settings

logger = logging.getLogger("service.worker")

_CANCEL_POLL_S = 0.01  # the cancel flag is read between iterations, at most this often (a Redis round trip)
_PROGRESS_WRITE_INTERVAL_S = 1.0
TIME_LIMIT_GRACE_S = 30.0  # past its time limit a stuck fit's horse is stopped by RQ (job_timeout)
RUNNING_TTL_MARGIN_S = 3600
_STORE_WAIT_S = 30.0


@dataclass(frozen=True)
class QueuedJob:
    """What is queued: the job as stored when queued, what it runs, and who commits its end.

    ``ephemeral``: a synchronous request's job (a large sync fit, a selection's candidate, a bootstrap's batch):
    never stored; its end, result included, goes back through Redis. ``hand_back``: a fit whose follow-up a
    coordinating replica runs; a success is handed back to it (a failure still ends here).
    """

    record: JobRecord
    item: WorkItem
    redis_url: str
    ephemeral: bool = False
    hand_back: bool = False

    @property
    def job_timeout_s(self) -> int:
        return math.ceil(self.item.time_limit_s + TIME_LIMIT_GRACE_S)

    @property
    def running_ttl_s(self) -> int:
        return self.job_timeout_s + RUNNING_TTL_MARGIN_S


class _QueuedHooks(RunHooks):
    def __init__(self, channel: WorkerChannel, stores: WorkerStores | None) -> None:
        super().__init__()
        self.channel, self.stores = channel, stores
        self.last_poll = self.last_progress = time.monotonic()

    def should_cancel(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self.last_poll >= _CANCEL_POLL_S:
            self.last_poll = now
            self.cancelled = self.channel.cancel_requested()
        return self.cancelled

    def send(self, events: list[IterationEvent]) -> None:
        self.channel.append([("iteration", event._asdict()) for event in events])
        now = time.monotonic()
        if self.stores is not None and now - self.last_progress >= _PROGRESS_WRITE_INTERVAL_S:
            self.last_progress = now
            last = events[-1]
            progress = {"start": last.start, "iteration": last.iteration, "log_likelihood": last.log_likelihood}
            self.stores.write(self.stores.jobs.update_progress, self.channel.job_id, progress)


@contextmanager
def _beating(channel: WorkerChannel) -> Iterator[None]:
    """Refresh the job's beat from a thread while it runs: the reaper fails a running job whose beat stops
    (its machine died); a fit holding the GIL in a long numpy call still lets this thread in between calls."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(BEAT_INTERVAL_S):
            try:
                channel.beat()
            except redis.RedisError:
                logger.warning("job %s: could not refresh its beat on Redis", channel.job_id)

    channel.beat()
    thread = threading.Thread(target=beat, name="em-beat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_queued(job: QueuedJob) -> None:
    """The RQ job function: run the job, publish its events, commit its end."""
    record, settings = job.record, Settings()
    memory_mb = settings.worker_memory_limit_mb
    limit_memory(None if memory_mb is None else memory_mb * 2**20)  # this horse only: it is forked per job
    client = redis.Redis.from_url(job.redis_url)
    channel = WorkerChannel(client, record.id, job.running_ttl_s)
    stores = None if job.ephemeral else _open_stores_patiently()
    try:
        with _beating(channel):
            if channel.cancel_requested():  # cancelled while queued, as a worker took it
                _end(job, channel, stores, Finished(record.id, "cancelled"))
                return
            started_at = time.time()
            if stores is not None:
                stores.write(stores.jobs.mark_running, record.id, started_at)
            hooks = _QueuedHooks(channel, stores)
            began = time.monotonic()
            finished = execute(record.id, _placed(job.item, settings), hooks)
            finished = _stuck_past_time_limit(finished, time.monotonic() - began, job.item.time_limit_s)
            if job.hand_back and finished.status == "succeeded":
                channel.hand_back(finished)
                return
            _end(job, channel, stores, finished, started_at)
    finally:
        if stores is not None:
            stores.close()
        client.close()


def _open_stores_patiently() -> WorkerStores:
    """The stores, waiting out a short PostgreSQL outage (a restart); past ``_STORE_WAIT_S`` the job fails in RQ,
    and a replica's reaper fails it in the store once the store is back."""
    deadline = time.monotonic() + _STORE_WAIT_S
    while True:
        try:
            return open_worker_stores()
        except StorageError:
            if time.monotonic() > deadline:
                raise
            logger.warning("the job store cannot be reached; retrying")
            time.sleep(1.0)


def _placed(item: WorkItem, settings: Settings) -> WorkItem:
    """``item``, solved on the Dask cluster when it is a fit of a stored dataset past ``EM_DASK_MIN_ROWS``."""
    if settings.dask_scheduler is None:
        return item
    from service.distributed.gaussian_job import dask_solver  # Dask is imported only where a cluster is set

    solve = dask_solver(item.task, settings.dask_scheduler, settings.dask_min_rows, settings.storage_url)
    return item if solve is None else replace(item, solve=solve)


def _end(
    job: QueuedJob,
    channel: WorkerChannel,
    stores: WorkerStores | None,
    finished: Finished,
    started_at: float | None = None,
) -> None:
    record = replace(job.record, status="running", started_at=started_at) if started_at else job.record
    end = as_ended(record, finished.status, finished.result, finished.error, finished.replay)
    if stores is not None or (finished.status == "succeeded" and finished.model is not None):
        worker_stores = stores or open_worker_stores()
        try:
            end = commit_end(
                worker_stores.jobs, worker_stores.keep_model, end, finished.model, job.ephemeral, finished.picture
            ).record
        finally:
            if stores is None:
                worker_stores.close()
    channel.end(end.status, end.error, end.result if job.ephemeral else None)


def _stuck_past_time_limit(finished: Finished, elapsed_s: float, time_limit_s: float) -> Finished:
    """RQ's job timeout interrupts a fit stuck past its time limit with an exception: say so, not 'internal'."""
    internal = finished.status == "failed" and (finished.error or {}).get("type") == "internal_error"
    if internal and elapsed_s >= time_limit_s:
        return Finished(finished.job_id, "failed", error=dict(STUCK_PAST_TIME_LIMIT))
    return finished
