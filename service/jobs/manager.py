"""Jobs as routes see them: submit, read, list, cancel, follow. One interface, one local implementation.

:class:`JobManager` is all a route uses. :class:`LocalJobManager` runs jobs in this host's worker
processes and keeps records in a :class:`~service.jobs.store.JobStore`; a shared-queue version for
several API replicas (Redis streams for the queue and events, say) would implement the same interface.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol

import anyio
import orjson

from service.jobs.ending import STUCK_PAST_TIME_LIMIT, KeepModel, as_ended, commit_end, worker_died
from service.jobs.models import (
    EVERYONE,
    FINAL_STATUSES,
    Access,
    FollowUp,
    JobAlreadyFinished,
    JobNotFound,
    JobRecord,
    JobStatus,
    QueueFull,
    Replay,
    StorageError,
    WorkItem,
    new_job_id,
)
from service.jobs.pool import WorkerPool, describe_exit
from service.jobs.protocol import Died, Finished, IterationEvent, KeepAs, PoolMessage, Progress, SmallFitAnswer, Started
from service.jobs.store import JobFilter, JobStore
from service.models.store import SQLiteModelFile

logger = logging.getLogger("service.jobs")

_INLINE_WRITE_MAX = 64 * 1024  # bytes of result JSON: larger results are written from a thread


@dataclass(frozen=True)
class JobEvent:
    """One SSE event: ``iteration`` (data: start, iteration, log-likelihood, delta) or a final status."""

    id: int
    kind: str
    data: dict[str, Any] | None = None  # None for the final event: the route renders the job itself

    @property
    def final(self) -> bool:
        return self.kind in FINAL_STATUSES


class JobManager(Protocol):
    @property
    def ready(self) -> bool: ...
    @property
    def not_ready_reason(self) -> str | None: ...
    def stats(self) -> dict[str, int]: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def submit(
        self,
        kind: str,
        item: WorkItem,
        request: dict[str, Any],
        *,
        owner: str | None = None,
        ephemeral: bool = False,
        follow_up: FollowUp | None = None,
    ) -> JobRecord: ...
    def submit_group(
        self,
        kind: str,
        part_kind: str,
        items: builtins.list[WorkItem],
        request: dict[str, Any],
        combine: Callable[[str, builtins.list[bytes], float], bytes],
        *,
        part_event: str = "part",
        owner: str | None = None,
        ephemeral: bool = False,
    ) -> JobRecord: ...
    async def wait(self, job_id: str) -> JobRecord: ...
    async def run_small_fit(self, fit_id: str, item: WorkItem, keep_as: KeepAs | None = None) -> SmallFitAnswer | None:
        """A small synchronous fit solved off the event loop, if a worker here is free for it; None: solve it
        yourself. Not a job: nothing is followed, and no job is stored. Its model is stored as ``keep_as`` by
        the worker when the answer says ``stored``; otherwise it is the caller's to keep."""
        ...

    async def get(self, job_id: str, access: Access = EVERYONE) -> JobRecord: ...
    async def list(
        self, limit: int, cursor: str | None, where: JobFilter | None = None
    ) -> tuple[list[JobRecord], str | None]: ...
    async def cancel(self, job_id: str, access: Access = EVERYONE) -> tuple[JobRecord, bool]:
        """Cancel a queued or running job; the flag says whether it was cancelled already."""
        ...

    def events(self, job_id: str, after: int = 0) -> AsyncIterator[JobEvent]: ...
    def store_size_bytes(self) -> int: ...
    async def picture(self, job_id: str) -> bytes | None:
        """What a succeeded job kept for its pictures (None if nothing); the caller has checked access."""
        ...

    def uses_dataset(self, dataset_id: str) -> bool:
        """Whether a queued or running job fits this dataset (it must not be deleted under it)."""
        ...


class JobObserver(Protocol):
    """Told what happens to jobs (metrics); the default observer ignores it all."""

    def job_finished(self, kind: str, status: str) -> None: ...
    def iterations_run(self, kind: str, count: int) -> None: ...


class _Unobserved:
    def job_finished(self, kind: str, status: str) -> None:
        pass

    def iterations_run(self, kind: str, count: int) -> None:
        pass


@dataclass(frozen=True)
class JobLimits:
    workers: int
    queue_size: int
    retention_s: float
    cancel_grace_s: float = 1.0
    time_limit_grace_s: float = 5.0
    replay_window_s: float = 60.0  # how long a finished job's live events stay in memory for late followers
    progress_write_interval_s: float = 1.0
    store_max_bytes: int | None = None  # finished jobs are evicted, oldest first, past this size
    worker_memory_bytes: int | None = None  # each worker's RLIMIT_DATA
    storage_probe_interval_s: float = 5.0


@dataclass(eq=False)
class _ActiveJob:
    record: JobRecord
    item: WorkItem | None  # dropped once handed to a worker: the parent need not hold the data
    time_limit_s: float
    events: list[JobEvent] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_requested_at: float | None = None
    timed_out: bool = False
    last_progress_write: float = 0.0
    # A synchronous fit's job: its caller waits for the result, so it is neither stored nor kept for
    # late followers (nothing else can see it).
    ephemeral: bool = False
    finishing: bool = False  # its result is being committed; it is shown finished only once stored
    parts: builtins.list[str] | None = None  # a group's parts (ephemeral jobs on the workers): see submit_group
    follow_up: FollowUp | None = None  # run on the workers after this job's own fit succeeds

    def add_event(self, kind: str, data: dict[str, Any] | None = None) -> None:
        self.events.append(JobEvent(len(self.events) + 1, kind, data))


class LocalJobManager:
    def __init__(
        self,
        store: JobStore,
        limits: JobLimits,
        observer: JobObserver | None = None,
        keep_model: KeepModel | None = None,
        small_fit_models: SQLiteModelFile | None = None,
    ) -> None:
        """``small_fit_models``: where the workers keep small synchronous fits' models (see ``run_small_fit``)."""
        self.store, self.limits = store, limits
        self.keep_model = keep_model
        self.observer: JobObserver = observer or _Unobserved()
        self.pool = WorkerPool(limits.workers, self._on_message, limits.worker_memory_bytes, small_fit_models)
        self._active: dict[str, _ActiveJob] = {}
        self._pending: deque[str] = deque()
        self._ready = False
        self._background: set[asyncio.Task[None]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._storage_error: str | None = None  # why the store refuses writes, while it does
        self._store_bytes = 0

    # --- lifecycle ---

    @property
    def ready(self) -> bool:
        return self._ready and self.pool.alive and self._storage_error is None

    @property
    def not_ready_reason(self) -> str | None:
        if self._storage_error is not None:
            return self._storage_error
        if len(self._pending) >= self.limits.queue_size:
            return "the job queue is full"
        return None if self.ready else "the job runner is not up"

    def stats(self) -> dict[str, int]:
        return {"queued": len(self._pending), "busy_workers": self.pool.busy_count, "workers": self.limits.workers}

    async def picture(self, job_id: str) -> bytes | None:
        return await anyio.to_thread.run_sync(self.store.picture, job_id)

    async def run_small_fit(self, fit_id: str, item: WorkItem, keep_as: KeepAs | None = None) -> SmallFitAnswer | None:
        return await self.pool.run_small_fit(fit_id, item, keep_as) if self._ready else None

    def store_size_bytes(self) -> int:
        """The store's size as last measured (by the watchdog): cheap enough for every metrics scrape."""
        return self._store_bytes

    async def start(self) -> None:
        now = time.time()
        interrupted = self.store.fail_unfinished(
            "the service stopped while this job was queued or running; submit it again", now
        )
        if interrupted:
            logger.warning("marked %d job(s) interrupted by the previous shutdown as failed", interrupted)
        self.store.purge(now - self.limits.retention_s)
        self._store_bytes = self.store.size_bytes()
        await anyio.to_thread.run_sync(self.pool.start, asyncio.get_running_loop())
        self._watchdog = asyncio.create_task(self._watch())
        self._ready = True

    async def stop(self) -> None:
        self._ready = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        # Jobs cannot outlive the process: fail them now, so nothing is left "running" in the store.
        # A job whose result is being committed is left to finish (its write is awaited below).
        for active in list(self._active.values()):
            if not active.record.finished and not active.finishing:
                self._finish(
                    active,
                    "failed",
                    error={
                        "type": "interrupted",
                        "message": "the service shut down while this job was queued or running; submit it again",
                    },
                )
        await anyio.to_thread.run_sync(self.pool.stop)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self.store.close()

    # --- the interface ---

    async def submit(
        self,
        kind: str,
        item: WorkItem,
        request: dict[str, Any],
        *,
        owner: str | None = None,
        ephemeral: bool = False,
        follow_up: FollowUp | None = None,
    ) -> JobRecord:
        """Queue a job, stored before this returns (a StorageError if the store refuses it).

        ``ephemeral`` (a synchronous fit, whose caller waits for the result) is never stored and is dropped
        from memory as soon as it ends. ``follow_up``: see :class:`FollowUp`.
        """
        if len(self._pending) >= self.limits.queue_size:
            raise QueueFull(self.limits.queue_size, retry_after_s=max(1, len(self._pending) // self.limits.workers))
        active = self._queue(kind, item, request, owner=owner, ephemeral=ephemeral)
        active.follow_up = follow_up
        return active.record

    def _queue(
        self, kind: str, item: WorkItem, request: dict[str, Any], *, owner: str | None, ephemeral: bool
    ) -> _ActiveJob:
        record = JobRecord(
            id=new_job_id(), kind=kind, status="queued", created_at=time.time(), request=request, owner=owner
        )
        if not ephemeral:
            try:
                self.store.insert(record)
            except StorageError as exc:
                self._storage_error = str(exc)
                raise
        active = self._active[record.id] = _ActiveJob(record, item, item.time_limit_s, ephemeral=ephemeral)
        self._pending.append(record.id)
        self._dispatch()
        return active

    def submit_group(
        self,
        kind: str,
        part_kind: str,
        items: builtins.list[WorkItem],
        request: dict[str, Any],
        combine: Callable[[str, builtins.list[bytes], float], bytes],
        *,
        part_event: str = "part",
        owner: str | None = None,
        ephemeral: bool = False,
    ) -> JobRecord:
        """Queue a job made of parts that run in parallel on the workers (a model selection's candidates).

        Each part is an ephemeral ``part_kind`` job (it keeps its model like any fit); as each succeeds the group
        sends a ``part_event`` event with its result. When all have, ``combine(group_id, results, elapsed_s)`` is
        the group's result. A part that fails fails the group (the rest are cancelled); cancelling the group
        cancels its parts.
        All parts are queued at once, or none (QueueFull).
        """
        if len(self._pending) + len(items) > self.limits.queue_size:
            raise QueueFull(self.limits.queue_size, retry_after_s=max(1, len(self._pending) // self.limits.workers))
        record = JobRecord(
            id=new_job_id(), kind=kind, status="running", created_at=time.time(), request=request, owner=owner
        )
        record.started_at = record.created_at
        if not ephemeral:
            try:
                self.store.insert(record)
                self.store.mark_running(record.id, record.started_at)
            except StorageError as exc:
                self._storage_error = str(exc)
                raise
        # The group's own clock never runs out: each part has its time limit, enforced on its worker.
        active = _ActiveJob(record, None, float("inf"), ephemeral=ephemeral)
        self._active[record.id] = active
        part_request = {**request, "group": record.id}
        parts = [self._queue(part_kind, item, part_request, owner=owner, ephemeral=True) for item in items]
        active.parts = [part.record.id for part in parts]
        self._spawn(self._run_group(active, parts, combine, part_event))
        return record

    async def _run_group(
        self,
        active: _ActiveJob,
        parts: builtins.list[_ActiveJob],
        combine: Callable[[str, builtins.list[bytes], float], bytes],
        part_event: str,
    ) -> None:
        first_start = time.monotonic()
        results = await self._await_parts(active, parts, lambda ended: (part_event, orjson.loads(ended)))
        if results is not None:
            result = combine(active.record.id, results, time.monotonic() - first_start)
            self._finish(active, "succeeded", result=result)

    async def _await_parts(
        self,
        active: _ActiveJob,
        parts: builtins.list[_ActiveJob],
        event_of: Callable[[bytes], tuple[str, dict[str, Any]]],
    ) -> builtins.list[bytes] | None:
        """The parts' results in order once all have succeeded, sending ``event_of(a part's result)`` as each
        succeeds; None once the job has ended otherwise (a part failed or was cancelled: the others are
        cancelled and the job ends for that reason)."""

        async def ended(part: _ActiveJob) -> JobRecord:
            await part.done.wait()  # held here: an ephemeral part leaves the manager's table when it ends
            return part.record

        results: builtins.list[bytes | None] = [None] * len(parts)
        index = {part.record.id: i for i, part in enumerate(parts)}
        for done in asyncio.as_completed([ended(part) for part in parts]):
            part = await done
            if active.record.finished:  # the service stopped: the job was failed with everything else
                return None
            if part.status != "succeeded" or part.result is None:
                await self._cancel_parts(active)
                if active.cancel_requested_at is not None:
                    self._finish(active, "cancelled")
                else:
                    error = dict(part.error or {"type": "failed", "message": f"a part ended {part.status}"})
                    self._finish(active, "failed", error=error)
                return None
            results[index[part.id]] = part.result
            active.add_event(*event_of(part.result))
            self._notify(active)
        return [result for result in results if result is not None]

    async def _run_follow_up(
        self, active: _ActiveJob, result: bytes, replay: Replay | None, model: bytes | None, picture: bytes | None
    ) -> None:
        """After the job's own fit: its follow-up's parts on the workers, then the job's end (see FollowUp)."""
        follow_up = active.follow_up
        assert follow_up is not None and active.parts is not None
        part_request = {**active.record.request, "group": active.record.id}
        owner = active.record.owner
        parts = [
            self._queue(follow_up.kind, item, part_request, owner=owner, ephemeral=True)
            for item in follow_up.parts(result)
        ]
        active.parts = [part.record.id for part in parts]
        if active.cancel_requested_at is not None:  # cancelled while the parts were being planned
            await self._cancel_parts(active)
        results = await self._await_parts(
            active, parts, lambda ended: (follow_up.part_event, follow_up.progress(ended))
        )
        if results is None:
            return
        final = follow_up.combine(result, results)
        # The final event comes after the parts' events: a late follower's replay must say so.
        replay = None if replay is None else replace(replay, final_id=len(active.events) + 1)
        if not active.ephemeral and len(final) + len(model or b"") + len(picture or b"") > _INLINE_WRITE_MAX:
            active.finishing = True
            await self._finish_large(active, final, replay, model, picture)
        else:
            self._finish(active, "succeeded", result=final, replay=replay, model=model, picture=picture)

    async def _cancel_parts(self, active: _ActiveJob) -> None:
        for part in active.parts or ():
            if part in self._active:  # an ended ephemeral part is gone: nothing to cancel
                with contextlib.suppress(JobNotFound, JobAlreadyFinished):
                    await self.cancel(part)

    async def wait(self, job_id: str) -> JobRecord:
        active = self._active.get(job_id)
        if active is None:
            return await self.get(job_id)
        await active.done.wait()
        return active.record

    def uses_dataset(self, dataset_id: str) -> bool:
        # Every queued or running job is in memory; its summary names the dataset it fits.
        return any(
            not active.record.finished and active.record.request.get("dataset") == dataset_id
            for active in self._active.values()
        )

    async def get(self, job_id: str, access: Access = EVERYONE) -> JobRecord:
        """The job, if ``access`` may see it: another tenant's job is as unknown as a missing one."""
        active = self._active.get(job_id)
        record = active.record if active is not None else await anyio.to_thread.run_sync(self.store.get, job_id)
        if record is None or not access.may_see(record):
            raise JobNotFound(job_id)
        return record

    async def list(
        self, limit: int, cursor: str | None, where: JobFilter | None = None
    ) -> tuple[list[JobRecord], str | None]:
        records, next_cursor = await anyio.to_thread.run_sync(self.store.list, limit, cursor, where)
        # Jobs of this process carry fresher progress in memory than the throttled copy in the store.
        fresh = [self._active[r.id].record if r.id in self._active else r for r in records]
        return [without_result(r) for r in fresh], next_cursor

    async def cancel(self, job_id: str, access: Access = EVERYONE) -> tuple[JobRecord, bool]:
        record = await self.get(job_id, access)
        active = self._active.get(job_id)
        if record.status == "cancelled":
            return record, True
        if active is not None and active.finishing:
            raise JobAlreadyFinished(job_id, "finished")  # its result is being stored: too late to cancel
        if record.finished or active is None:
            raise JobAlreadyFinished(job_id, record.status)
        if job_id in self._pending:
            self._pending.remove(job_id)
            self._finish(active, "cancelled")
        elif active.parts is not None:
            if active.cancel_requested_at is None:
                active.cancel_requested_at = time.monotonic()
                await self._cancel_parts(active)  # the group then ends cancelled
        elif active.cancel_requested_at is None:
            # Running, or handed to a worker that has not said "started" yet: the worker checks its cancel
            # flag before the first iteration, and the watchdog kills it if it does not stop.
            active.cancel_requested_at = time.monotonic()
            self.pool.cancel(job_id)
        return record, False

    async def events(self, job_id: str, after: int = 0) -> AsyncIterator[JobEvent]:
        """The job's events after event ``after``, then its final event, then the end.

        The final event comes even when ``after`` is at or past it: a follower that reconnects to a
        finished job learns how it ended instead of waiting for events that will never come.
        """
        active = self._active.get(job_id)
        if active is None:
            async for event in self._replay_stored(job_id, after):
                yield event
            return
        seen = after
        while True:
            async with active.changed:
                await active.changed.wait_for(partial(_has_more, active, seen))
            # Live event n is active.events[n - 1]. Past the end of a finished job: its final event alone.
            batch = active.events[seen:] or active.events[-1:]
            seen += len(batch)
            for event in batch:
                yield event
                if event.final:
                    return

    async def _replay_stored(self, job_id: str, after: int) -> AsyncIterator[JobEvent]:
        """A job no longer in memory, from its stored record (see :func:`stored_events`)."""
        events = stored_events(await self.get(job_id))
        for event in [event for event in events if event.id > after] or events[-1:]:
            yield event

    # --- worker messages (event loop thread) ---

    def _on_message(self, message: PoolMessage) -> None:
        active = self._active.get(message.job_id) if message.job_id is not None else None
        if active is not None and not active.record.finished:
            match message:
                case Started(job_id=job_id, at=at):
                    active.record.status = "running"
                    active.record.started_at = at
                    if not active.ephemeral:
                        self._write(self.store.mark_running, job_id, at)
                case Progress(events=events):
                    self._on_progress(active, events)
                case Finished(status="succeeded") if active.cancel_requested_at is not None and active.parts is None:
                    # The worker finished between its last look at the cancel flag and the cancel, which was
                    # answered 202: the job ends as its caller was told, keeping nothing it made.
                    self._finish(active, "cancelled")
                case Finished(status="succeeded", result=bytes() as result, replay=replay, model=model) if (
                    active.follow_up is not None and active.parts is None
                ):
                    active.parts = []  # from now on a cancel cancels the parts (see _run_follow_up)
                    self._spawn(self._run_follow_up(active, result, replay, model, message.picture))
                case Finished(status="succeeded", result=bytes() as result, replay=replay, model=model) if (
                    not active.ephemeral
                    and len(result) + len(model or b"") + len(message.picture or b"") > _INLINE_WRITE_MAX
                ):
                    # Shown succeeded only once committed: until then it reads "running".
                    active.finishing = True
                    self._spawn(self._finish_large(active, result, replay, model, message.picture))
                case Finished(status=status, result=result, error=error, replay=replay, model=model):
                    self._finish(
                        active, status, result=result, error=error, replay=replay, model=model, picture=message.picture
                    )
                case Died(exitcode=exitcode):
                    self._on_worker_died(active, exitcode)
        self._dispatch()

    def _on_progress(self, active: _ActiveJob, batch: builtins.list[IterationEvent]) -> None:
        for event in batch:
            active.add_event("iteration", event._asdict())
        self.observer.iterations_run(active.record.kind, len(batch))
        last = batch[-1]
        active.record.progress = {
            "start": last.start,
            "iteration": last.iteration,
            "log_likelihood": last.log_likelihood,
        }
        now = time.monotonic()
        if not active.ephemeral and now - active.last_progress_write >= self.limits.progress_write_interval_s:
            active.last_progress_write = now
            self._write(self.store.update_progress, active.record.id, active.record.progress)
        self._notify(active)

    def _on_worker_died(self, active: _ActiveJob, exitcode: int | None) -> None:
        if active.cancel_requested_at is not None:
            self._finish(active, "cancelled")
        elif active.timed_out:
            self._finish(active, "failed", error=dict(STUCK_PAST_TIME_LIMIT))
        else:
            self._finish(active, "failed", error=worker_died(describe_exit(exitcode)))

    def _finish(
        self,
        active: _ActiveJob,
        status: JobStatus,
        result: bytes | None = None,
        error: dict[str, str] | None = None,
        replay: Replay | None = None,
        model: bytes | None = None,
        picture: bytes | None = None,
    ) -> None:
        """Commit the job's end (a small write, done here), then show it."""
        end = as_ended(active.record, status, result, error, replay)
        self._show_end(active, self._store_end(end, model, active.ephemeral, picture))

    async def _finish_large(
        self, active: _ActiveJob, result: bytes, replay: Replay | None, model: bytes | None, picture: bytes | None
    ) -> None:
        end = as_ended(active.record, "succeeded", result, None, replay)
        store_end = partial(self._store_end, end, model, active.ephemeral, picture)
        self._show_end(active, await anyio.to_thread.run_sync(store_end))

    def _store_end(
        self, end: JobRecord, model: bytes | None = None, ephemeral: bool = False, picture: bytes | None = None
    ) -> JobRecord:
        """Commit ``end`` (see :func:`~service.jobs.ending.commit_end`); a store that refuses it is unhealthy."""
        committed = commit_end(self.store, self.keep_model, end, model, ephemeral, picture)
        if committed.store_healthy is not None:
            self._storage_error = committed.reason
        return committed.record

    def _show_end(self, active: _ActiveJob, ended: JobRecord) -> None:
        record = active.record
        record.status, record.finished_at = ended.status, ended.finished_at
        record.result, record.error, record.replay = ended.result, ended.error, ended.replay
        active.item = None
        active.finishing = False
        active.add_event(record.status)
        active.done.set()
        self.observer.job_finished(record.kind, record.status)
        self._notify(active)
        # Held events are many small objects; at a hundred fits a second, keeping those no follower needs
        # made the garbage collector pause for 100 ms. Waiters and open streams keep their own reference.
        if active.ephemeral:
            self._active.pop(record.id, None)
        else:
            asyncio.get_running_loop().call_later(self.limits.replay_window_s, self._active.pop, record.id, None)

    def _write(self, write: Any, *args: Any) -> bool:
        """A store write whose loss is tolerable (progress, "running"); a refused one marks the store
        unhealthy (``/readyz`` answers 503 until a probe write succeeds)."""
        try:
            write(*args)
        except StorageError as exc:
            logger.error("job store write failed: %s", exc)
            self._storage_error = str(exc)
            return False
        return True

    # --- scheduling ---

    def _dispatch(self) -> None:
        while self._pending and self.pool.idle_count and self._ready:
            job_id = self._pending.popleft()
            active = self._active[job_id]
            assert active.item is not None
            self.pool.run(job_id, active.item)
            active.item = None

    async def _watch(self) -> None:
        """Kill workers that ignore a cancel or overrun their time limit; purge expired jobs hourly."""
        last_purge = last_housekeeping = time.monotonic()
        while True:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            for job_id, active in list(self._active.items()):
                if active.record.status != "running" or active.parts is not None:
                    continue
                if (
                    active.cancel_requested_at is not None
                    and now - active.cancel_requested_at > self.limits.cancel_grace_s
                ):
                    self.pool.kill(job_id)
                elif self._overran(active):
                    active.timed_out = True
                    self.pool.kill(job_id)
            if now - last_purge > 3600:
                last_purge = now
                await anyio.to_thread.run_sync(self.store.purge, time.time() - self.limits.retention_s)
            if now - last_housekeeping > self.limits.storage_probe_interval_s:
                last_housekeeping = now
                await self._keep_store()

    async def _keep_store(self) -> None:
        """Measure the store, evict past its cap, and learn whether a store that refused writes takes them again."""
        try:
            if self.limits.store_max_bytes is not None:
                await anyio.to_thread.run_sync(self.store.evict_oldest, self.limits.store_max_bytes)
            if self._storage_error is not None:
                await anyio.to_thread.run_sync(self.store.probe)
                logger.warning("the job store takes writes again")
                self._storage_error = None
            self._store_bytes = await anyio.to_thread.run_sync(self.store.size_bytes)
        except StorageError as exc:
            self._storage_error = str(exc)

    def _overran(self, active: _ActiveJob) -> bool:
        started = active.record.started_at
        return started is not None and time.time() - started > active.time_limit_s + self.limits.time_limit_grace_s

    def _notify(self, active: _ActiveJob) -> None:
        async def notify() -> None:
            async with active.changed:
                active.changed.notify_all()

        self._spawn(notify())

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _has_more(active: _ActiveJob, seen: int) -> bool:
    # A finished job has all its events: a follower past the end must not wait for more.
    return len(active.events) > seen or active.done.is_set()


def stored_events(record: JobRecord) -> list[JobEvent]:
    """What the store still tells of a job's events, under the ids they had live (see :class:`Replay`).

    A job without a replay (failed, cancelled) kept no counts: its final event alone, as event 1.
    """
    final = record.status if record.finished else "failed"
    replay = record.replay
    if replay is None:
        return [JobEvent(1, final)]
    events = [
        JobEvent(
            replay.id_offset + iteration,
            "iteration",
            {"start": replay.start, "iteration": iteration, "log_likelihood": log_likelihood, "delta": delta},
        )
        for iteration, log_likelihood, delta in replay.iterations
    ]
    events.append(JobEvent(replay.final_id, final))
    return events


def without_result(record: JobRecord) -> JobRecord:
    if record.result is None and record.replay is None:
        return record
    return JobRecord(**{**record.__dict__, "result": None, "replay": None})
