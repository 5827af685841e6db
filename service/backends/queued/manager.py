"""The distributed backend's job manager: jobs in PostgreSQL, queued on Redis (RQ), followed on Redis streams.

An API replica keeps no job state of its own that another replica would need: any replica answers any request
about any job. Jobs run only on worker processes (``python -m service.worker``), which commit their own ends;
with no worker up a job stays ``queued``. What a replica does hold is coordination it started itself: a model
selection's candidates and a bootstrap's refits are parts queued like any job, awaited here and combined here.
If this replica stops, those jobs are failed (by it, or by another replica's reaper when its beat stops).

The reaper (every replica, every ``reaper_interval_s``) fails a running job whose beat has stopped (its worker
machine died) and a queued job Redis no longer holds (Redis restarted without its append-only file).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import anyio
import orjson
import redis
import redis.asyncio
from rq import Queue, Worker
from rq.callbacks import Callback
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus

from service.backends.queued.channel import (
    BEAT_INTERVAL_S,
    BEAT_TTL_S,
    END_TTL_S,
    ApiChannel,
    End,
    dataset_users_key,
    key,
    unavailable,
)
from service.backends.queued.horse import QueuedJob, run_queued
from service.jobs.ending import KeepModel, as_ended, commit_end
from service.jobs.manager import JobEvent, JobLimits, JobObserver, stored_events, without_result
from service.jobs.models import (
    EVERYONE,
    Access,
    FollowUp,
    JobAlreadyFinished,
    JobNotFound,
    JobRecord,
    QueueFull,
    StorageError,
    WorkItem,
    new_job_id,
)
from service.jobs.models import (
    JobStatus as Status,
)
from service.jobs.protocol import KeepAs, SmallFitAnswer
from service.jobs.store import JobFilter, JobStore

logger = logging.getLogger("service.jobs")

_WAIT_POLL_S = 5.0  # a waiter looks at the job's worker this often while it waits for the end
_HOUSEKEEPING_INTERVAL_S = 60.0


@dataclass(eq=False)
class _Coordinated:
    """A job whose parts this replica awaits (a group, a follow-up): what its waiters and its cancel need."""

    record: JobRecord
    ephemeral: bool
    ended: asyncio.Future[JobRecord]
    parts: builtins.list[str]
    cancel_requested: bool = False
    task: asyncio.Task[None] | None = None


class DistributedJobManager:
    def __init__(
        self,
        store: JobStore,
        limits: JobLimits,
        redis_url: str,
        queue_name: str,
        observer: JobObserver | None = None,
        keep_model: KeepModel | None = None,
        reaper_interval_s: float = 2.0,
        queue_lost_after_s: float = 30.0,  # younger, a job Redis does not know may be being queued still
    ) -> None:
        self.store, self.limits, self.redis_url = store, limits, redis_url
        self.keep_model = keep_model
        self.observer = observer
        self.reaper_interval_s, self.queue_lost_after_s = reaper_interval_s, queue_lost_after_s
        self._redis = redis.asyncio.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        self._channel = ApiChannel(self._redis)
        # RQ is synchronous: its calls run in threads (or, for the few sync methods of the interface, briefly here).
        self._sync_redis = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        self._queue = Queue(queue_name, connection=self._sync_redis)
        self._coordinated: dict[str, _Coordinated] = {}
        self._dataset_of: dict[str, str] = {}  # the dataset of an ephemeral job this replica queued
        self._waited: set[str] = set()  # ephemeral jobs a request of this replica waits for (the reaper watches)
        self._stats = {"queued": 0, "busy_workers": 0, "workers": 0}
        self._store_bytes = 0
        self._problem: str | None = "the job runner is not up"
        self._background: set[asyncio.Task[Any]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # --- lifecycle ---

    @property
    def ready(self) -> bool:
        return self._problem is None

    @property
    def not_ready_reason(self) -> str | None:
        if self._problem is None and self._stats["queued"] >= self.limits.queue_size:
            return "the job queue is full"
        return self._problem

    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def store_size_bytes(self) -> int:
        return self._store_bytes

    async def start(self) -> None:
        # Redis or PostgreSQL being down at start-up is not fatal: /readyz says so, and the reaper's checks
        # find them back.
        await self._check_health()
        self._reaper = asyncio.create_task(self._reap_forever())

    async def stop(self) -> None:
        self._stopping.set()
        if self._reaper is not None:
            await self._reaper
        # Jobs on workers go on without this replica; what it coordinates cannot.
        for coordinated in list(self._coordinated.values()):
            if coordinated.task is not None:
                coordinated.task.cancel()
        for coordinated in list(self._coordinated.values()):
            await self._cancel_parts(coordinated)
            error = {
                "type": "interrupted",
                "message": "the API replica coordinating this job shut down; submit it again",
            }
            with contextlib.suppress(StorageError):
                await self._end_coordinated(coordinated, "failed", error=error)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._redis.aclose()
        self._sync_redis.close()
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
        """Queue a job on Redis, stored first (a StorageError if PostgreSQL or Redis refuses it: 503)."""
        record = await anyio.to_thread.run_sync(self._submit, kind, item, request, owner, ephemeral, follow_up)
        if follow_up is not None:
            self._coordinate(record, ephemeral, partial(self._run_follow_up, follow_up=follow_up))
        return record

    def _submit(
        self,
        kind: str,
        item: WorkItem,
        request: dict[str, Any],
        owner: str | None,
        ephemeral: bool,
        follow_up: FollowUp | None,
        room_needed: int = 1,
    ) -> JobRecord:
        self._check_room(room_needed)
        record = JobRecord(
            id=new_job_id(), kind=kind, status="queued", created_at=time.time(), request=request, owner=owner
        )
        if not ephemeral:
            self.store.insert(record)
        job = QueuedJob(record, item, self.redis_url, ephemeral=ephemeral, hand_back=follow_up is not None)
        if ephemeral and isinstance(dataset := request.get("dataset"), str):
            # Not in the store: the dataset's delete (on any replica) learns of this job from Redis.
            with _redis_errors():
                users = dataset_users_key(dataset)
                self._sync_redis.sadd(users, record.id)
                self._sync_redis.expire(users, job.running_ttl_s)
            self._dataset_of[record.id] = dataset
        self._enqueue(job)
        return record

    def _check_room(self, jobs: int) -> None:
        """QueueFull unless ``jobs`` more fit in the queue. A group's parts, checked together with the group, each
        need one less than the group has (``1 - len(parts)``)."""
        with _redis_errors():
            waiting = self._queue.count
        if waiting + jobs > self.limits.queue_size:
            raise QueueFull(self.limits.queue_size, retry_after_s=max(1, waiting // max(1, self._stats["workers"])))

    def _enqueue(self, job: QueuedJob) -> None:
        try:
            with _redis_errors():
                self._queue.enqueue_call(
                    run_queued,
                    args=(job,),
                    job_id=job.record.id,
                    timeout=job.job_timeout_s,
                    result_ttl=0,  # the end is in the store (or, for an ephemeral job, on the channel)
                    failure_ttl=END_TTL_S,
                    on_stopped=Callback("service.backends.queued.rescue.job_stopped"),
                )
        except StorageError:
            if not job.ephemeral:  # never queued: say so in the store, not "queued" forever
                with contextlib.suppress(StorageError):
                    self.store.finish(as_ended(job.record, "failed", None, _QUEUE_DOWN, None))
            raise

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
        """See :meth:`~service.jobs.manager.LocalJobManager.submit_group`; the parts are queued jobs, awaited
        and combined by this replica."""
        self._check_room(len(items))
        record = JobRecord(
            id=new_job_id(), kind=kind, status="running", created_at=time.time(), request=request, owner=owner
        )
        record.started_at = record.created_at
        if not ephemeral:
            self.store.insert(record)
            self.store.mark_running(record.id, record.started_at)
        part_request = {**request, "group": record.id}
        parts = [self._submit(part_kind, item, part_request, owner, True, None, 1 - len(items)).id for item in items]
        began = time.monotonic()

        async def run(coordinated: _Coordinated) -> None:
            results = await self._await_parts(coordinated, lambda ended: (part_event, orjson.loads(ended)))
            if results is not None:
                result = combine(record.id, results, time.monotonic() - began)
                await self._end_coordinated(coordinated, "succeeded", result=result)

        self._coordinate(record, ephemeral, run, parts)
        return record

    async def run_small_fit(self, fit_id: str, item: WorkItem, keep_as: KeepAs | None = None) -> SmallFitAnswer | None:
        return None  # the workers are other machines' processes: a queue round trip costs more than the fit

    async def wait(self, job_id: str) -> JobRecord:
        coordinated = self._coordinated.get(job_id)
        if coordinated is not None:
            return await asyncio.shield(coordinated.ended)
        end = await self._wait_ephemeral(job_id)
        try:
            return await self.get(job_id)
        except JobNotFound:  # an ephemeral job: its end came through the channel
            record = JobRecord(id=job_id, kind="", status="queued", created_at=time.time())
            return as_ended(record, _status(end.status), end.result, end.error, None)

    async def _wait_ephemeral(self, job_id: str) -> End:
        """The end of an ephemeral job this replica queued (a synchronous request's, or a part): watched by the
        reaper meanwhile (no store row tells another replica of it), and no longer holding its dataset after."""
        self._waited.add(job_id)
        try:
            return await self._wait_end(job_id)
        finally:
            self._waited.discard(job_id)
            await anyio.to_thread.run_sync(self._forget_dataset_use, job_id)

    async def _wait_end(self, job_id: str) -> End:
        while True:
            with _redis_errors():
                end = await self._channel.wait_end(job_id, _WAIT_POLL_S)
            if end is not None:
                return end

    def _forget_dataset_use(self, job_id: str) -> None:
        dataset = self._dataset_of.pop(job_id, None)
        if dataset is not None:
            with contextlib.suppress(redis.RedisError):
                self._sync_redis.srem(dataset_users_key(dataset), job_id)

    def uses_dataset(self, dataset_id: str) -> bool:
        with _redis_errors():
            if self._sync_redis.exists(dataset_users_key(dataset_id)):
                return True
        for status in ("queued", "running"):
            cursor: str | None = None
            while True:
                records, cursor = self.store.list(500, cursor, JobFilter(status=status))
                if any(record.request.get("dataset") == dataset_id for record in records):
                    return True
                if cursor is None:
                    break
        return False

    async def get(self, job_id: str, access: Access = EVERYONE) -> JobRecord:
        coordinated = self._coordinated.get(job_id)
        if coordinated is not None and coordinated.ephemeral:
            record: JobRecord | None = coordinated.record
        else:
            record = await anyio.to_thread.run_sync(self.store.get, job_id)
        if record is None or not access.may_see(record):
            raise JobNotFound(job_id)
        return record

    async def list(
        self, limit: int, cursor: str | None, where: JobFilter | None = None
    ) -> tuple[builtins.list[JobRecord], str | None]:
        records, next_cursor = await anyio.to_thread.run_sync(self.store.list, limit, cursor, where)
        return [without_result(record) for record in records], next_cursor

    async def picture(self, job_id: str) -> bytes | None:
        return await anyio.to_thread.run_sync(self.store.picture, job_id)

    async def cancel(self, job_id: str, access: Access = EVERYONE) -> tuple[JobRecord, bool]:
        record = await self.get(job_id, access)
        if record.status == "cancelled":
            return record, True
        if record.finished:
            raise JobAlreadyFinished(job_id, record.status)
        coordinated = self._coordinated.get(job_id)
        with _redis_errors():
            await self._channel.ask_cancel(job_id, END_TTL_S + 24 * 3600)
        if coordinated is not None and coordinated.parts:
            if not coordinated.cancel_requested:
                coordinated.cancel_requested = True
                await self._cancel_parts(coordinated)  # the job then ends cancelled
            return record, False
        if await anyio.to_thread.run_sync(self._take_off_queue, job_id):
            ended = await anyio.to_thread.run_sync(self._commit, as_ended(record, "cancelled", None, None, None))
            with _redis_errors():
                await self._channel.end(job_id, ended.status, ended.error)
            return ended, False
        # Running: its worker reads the flag between iterations; one that does not stop is stopped.
        self._spawn(self._stop_if_still_running(job_id))
        return record, False

    def _take_off_queue(self, job_id: str) -> bool:
        """Cancel the RQ job if it is still waiting in the queue (True); False once a worker has it."""
        with _redis_errors():
            try:
                job = Job.fetch(job_id, connection=self._sync_redis)
                if job.get_status() not in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
                    return False
                job.cancel()
                return True
            except (NoSuchJobError, InvalidJobOperation):
                return False

    async def _stop_if_still_running(self, job_id: str) -> None:
        await asyncio.sleep(self.limits.cancel_grace_s)
        record = await anyio.to_thread.run_sync(self.store.get, job_id)
        if record is None or record.finished:
            return
        with contextlib.suppress(InvalidJobOperation, NoSuchJobError, redis.RedisError):
            # RQ kills the work horse; the worker's on_stopped callback ends the job cancelled.
            await anyio.to_thread.run_sync(send_stop_job_command, self._sync_redis, job_id)
            logger.warning("job %s ignored its cancel; its work horse was stopped", job_id)

    async def events(self, job_id: str, after: int = 0) -> AsyncIterator[JobEvent]:
        """As :meth:`~service.jobs.manager.LocalJobManager.events`: from the job's Redis stream while it has one,
        else from the stored job's replay."""
        seen = after
        while True:
            with _redis_errors():
                if not await self._channel.has_events(job_id) and await self._finished_or_gone(job_id):
                    for event in await self._replayed(job_id, seen):
                        yield event
                    return
                done = await self._channel.has_ended(job_id)
                batch = await self._channel.read(job_id, seen, block_ms=None if done else 5000)
                if not batch and done:  # at or past the end: its final event alone
                    batch = await self._channel.last(job_id)
            for entry in batch:
                event = JobEvent(entry.id, entry.kind, entry.data)
                yield event
                if event.final:
                    return
                seen = event.id

    async def _finished_or_gone(self, job_id: str) -> bool:
        record = await anyio.to_thread.run_sync(self.store.get, job_id)
        return record is None or record.finished

    async def _replayed(self, job_id: str, after: int) -> builtins.list[JobEvent]:
        events = stored_events(await self.get(job_id))
        return [event for event in events if event.id > after] or events[-1:]

    # --- coordination: groups and follow-ups ---

    def _coordinate(
        self,
        record: JobRecord,
        ephemeral: bool,
        run: Callable[[_Coordinated], Awaitable[None]],
        parts: builtins.list[str] | None = None,
    ) -> None:
        coordinated = _Coordinated(record, ephemeral, asyncio.get_running_loop().create_future(), parts or [])
        self._coordinated[record.id] = coordinated

        async def guarded() -> None:
            beat = asyncio.create_task(self._beat(record.id))
            try:
                await run(coordinated)
            except Exception:
                logger.exception("job %s: its coordination failed", record.id)
                error = {"type": "internal_error", "message": "the job failed unexpectedly; the error was logged"}
                await self._cancel_parts(coordinated)
                with contextlib.suppress(StorageError):
                    await self._end_coordinated(coordinated, "failed", error=error)
            finally:
                beat.cancel()
                self._coordinated.pop(record.id, None)

        coordinated.task = asyncio.ensure_future(guarded())

    async def _beat(self, job_id: str) -> None:
        while True:
            with contextlib.suppress(redis.RedisError):
                await self._channel.beat(job_id)
            await asyncio.sleep(BEAT_INTERVAL_S)

    async def _run_follow_up(self, coordinated: _Coordinated, follow_up: FollowUp) -> None:
        """The job's fit runs on a worker, which hands a success back; then the follow-up's parts, then the end."""
        job_id = coordinated.record.id
        while True:
            with _redis_errors():
                fit = await self._channel.handed(job_id, 1.0)
                end = None if fit is not None else await self._channel.wait_end(job_id, 0.01)
            if fit is not None:
                break
            if end is not None:  # the fit failed or was cancelled: its worker ended the job
                coordinated.ended.set_result(await self._end_record(coordinated, end))
                return
        assert fit.result is not None
        part_request = {**coordinated.record.request, "group": job_id}
        owner = coordinated.record.owner
        items = follow_up.parts(fit.result)
        coordinated.parts = [
            (
                await anyio.to_thread.run_sync(
                    self._submit, follow_up.kind, item, part_request, owner, True, None, 1 - len(items)
                )
            ).id
            for item in items
        ]
        if coordinated.cancel_requested or await self._cancel_asked(job_id):
            coordinated.cancel_requested = True
            await self._cancel_parts(coordinated)
        results = await self._await_parts(coordinated, lambda ended: (follow_up.part_event, follow_up.progress(ended)))
        if results is None:
            return
        final = follow_up.combine(fit.result, results)
        # The final event comes after the parts' events: a late follower's replay must say so.
        replay = None if fit.replay is None else replace(fit.replay, final_id=await self._channel.last_id(job_id) + 1)
        await self._end_coordinated(
            coordinated, "succeeded", result=final, replay=replay, model=fit.model, picture=fit.picture
        )

    async def _cancel_asked(self, job_id: str) -> bool:
        with _redis_errors():
            return await self._channel.cancel_asked(job_id)

    async def _end_record(self, coordinated: _Coordinated, end: End) -> JobRecord:
        if coordinated.ephemeral:
            return as_ended(coordinated.record, _status(end.status), end.result, end.error, None)
        return await self.get(coordinated.record.id)

    async def _await_parts(
        self, coordinated: _Coordinated, event_of: Callable[[bytes], tuple[str, dict[str, Any]]]
    ) -> builtins.list[bytes] | None:
        """The parts' results in order once all have succeeded, appending ``event_of(result)`` to the job's
        events as each does; None once the job has ended otherwise (a part failed or was cancelled: the
        others are cancelled, and the job ends for that reason)."""
        parts = coordinated.parts
        index = {part: i for i, part in enumerate(parts)}
        results: builtins.list[bytes | None] = [None] * len(parts)

        async def ended(part: str) -> tuple[str, End]:
            return part, await self._wait_ephemeral(part)

        for done in asyncio.as_completed([ended(part) for part in parts]):
            part, end = await done
            if end.status != "succeeded" or end.result is None:
                await self._cancel_parts(coordinated)
                if coordinated.cancel_requested:
                    await self._end_coordinated(coordinated, "cancelled")
                else:
                    error = dict(end.error or {"type": "failed", "message": f"a part ended {end.status}"})
                    await self._end_coordinated(coordinated, "failed", error=error)
                return None
            results[index[part]] = end.result
            kind, data = event_of(end.result)
            with _redis_errors():
                await self._channel.append(coordinated.record.id, [(kind, data)], END_TTL_S + 24 * 3600)
        return [result for result in results if result is not None]

    async def _cancel_parts(self, coordinated: _Coordinated) -> None:
        for part in coordinated.parts:
            with contextlib.suppress(redis.RedisError):
                await self._channel.ask_cancel(part, END_TTL_S)
            if await anyio.to_thread.run_sync(_quietly(self._take_off_queue), part):
                with contextlib.suppress(redis.RedisError):
                    await self._channel.end(part, "cancelled")

    async def _end_coordinated(
        self,
        coordinated: _Coordinated,
        status: Status,
        result: bytes | None = None,
        error: dict[str, str] | None = None,
        replay: Any = None,
        model: bytes | None = None,
        picture: bytes | None = None,
    ) -> None:
        end = as_ended(coordinated.record, status, result, error, replay)
        committed = await anyio.to_thread.run_sync(
            lambda: commit_end(self.store, self.keep_model, end, model, coordinated.ephemeral, picture)
        )
        ended = committed.record
        with contextlib.suppress(redis.RedisError):
            await self._channel.end(ended.id, ended.status, ended.error)
        if self.observer is not None:
            self.observer.job_finished(ended.kind, ended.status)
        if not coordinated.ended.done():
            coordinated.ended.set_result(ended)

    def _commit(self, end: JobRecord) -> JobRecord:
        return commit_end(self.store, self.keep_model, end).record

    # --- the reaper and housekeeping ---

    async def _reap_forever(self) -> None:
        # Stopped by an event, not by cancelling the task: a cancel that lands while the reaper waits on a thread
        # (anyio shields that wait) can be lost, and stop() then waited for the reaper forever.
        last_housekeeping = 0.0
        while not await self._stopping_within(self.reaper_interval_s):
            try:
                await self._check_health()
                if self._problem is None:
                    await self._reap()
                    if time.monotonic() - last_housekeeping > _HOUSEKEEPING_INTERVAL_S:
                        last_housekeeping = time.monotonic()
                        await self._keep_store()
            except (StorageError, redis.RedisError) as exc:
                logger.warning("reaper: %s", exc)
            except Exception:
                logger.exception("reaper failed")

    async def _stopping_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def _check_health(self) -> None:
        try:
            await self._redis.ping()
            self._stats = await anyio.to_thread.run_sync(self._read_stats)
        except redis.RedisError as exc:
            self._problem = str(unavailable(exc))
            return
        try:
            await anyio.to_thread.run_sync(self.store.probe)
        except StorageError as exc:
            self._problem = str(exc)
            return
        self._problem = None

    def _read_stats(self) -> dict[str, int]:
        workers = Worker.all(queue=self._queue)
        busy = sum(1 for worker in workers if worker.get_state() == "busy")
        return {"queued": self._queue.count, "busy_workers": busy, "workers": len(workers)}

    async def _reap(self) -> None:
        """Fail what no worker will end: running jobs whose beat stopped, queued jobs Redis lost."""
        running = await anyio.to_thread.run_sync(self._unfinished, "running")
        running = [r for r in running if r.id not in self._coordinated]
        beating = await self._channel.beating([record.id for record in running])
        for record, alive in zip(running, beating, strict=True):
            started = record.started_at or record.created_at
            if not alive and time.time() - started > BEAT_TTL_S:
                await self._fail_if_unfinished(record.id, _WORKER_GONE)
        now = time.time()
        queued = [
            r
            for r in await anyio.to_thread.run_sync(self._unfinished, "queued")
            if now - r.created_at > self.queue_lost_after_s
        ]
        for record in queued:
            status = await anyio.to_thread.run_sync(_rq_status, self._sync_redis, record.id)
            if status is None:
                await self._fail_if_unfinished(record.id, _QUEUE_LOST)
            elif status in (JobStatus.FAILED, JobStatus.STOPPED):  # its worker could not start it (no store)
                await self._fail_if_unfinished(record.id, _NOT_STARTED)
        for job_id in list(self._waited):
            if (error := await anyio.to_thread.run_sync(self._why_ephemeral_is_lost, job_id)) is not None:
                await self._channel.end(job_id, "failed", error)

    def _why_ephemeral_is_lost(self, job_id: str) -> dict[str, str] | None:
        """Why an ephemeral job with no end will never get one from a worker (None: it may yet): Redis lost it
        (``queue_lost``), or its worker died (``worker_died``: its beat has stopped, or RQ saw its horse die, for
        longer than a beat lasts, so the worker's own handler had its chance)."""
        try:
            job: Job | None = Job.fetch(job_id, connection=self._sync_redis)
        except NoSuchJobError:
            job = None
        if self._sync_redis.exists(key(job_id, "end")):
            return None  # (read after the job: a job RQ dropped on finishing has its end by then)
        if job is None:
            return _QUEUE_LOST
        status = job.get_status()
        since = job.ended_at or job.started_at
        long_ago = since is not None and time.time() - since.timestamp() > BEAT_TTL_S
        if status == JobStatus.STARTED:
            died = long_ago and not self._sync_redis.exists(key(job_id, "beat"))
        else:
            died = long_ago and status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
        return _WORKER_GONE if died else None

    def _unfinished(self, status: str) -> builtins.list[JobRecord]:
        records, _ = self.store.list(1000, None, JobFilter(status=status))  # type: ignore[arg-type]
        return records

    async def _fail_if_unfinished(self, job_id: str, error: dict[str, str]) -> None:
        record = await anyio.to_thread.run_sync(self.store.get, job_id)
        if record is None or record.finished:
            return
        logger.warning("job %s failed: %s", job_id, error["message"])
        ended = await anyio.to_thread.run_sync(self._commit, as_ended(record, "failed", None, error, None))
        await self._channel.end(job_id, ended.status, ended.error)

    async def _keep_store(self) -> None:
        await anyio.to_thread.run_sync(self.store.purge, time.time() - self.limits.retention_s)
        if self.limits.store_max_bytes is not None:
            await anyio.to_thread.run_sync(self.store.evict_oldest, self.limits.store_max_bytes)
        self._store_bytes = await anyio.to_thread.run_sync(self.store.size_bytes)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


_WORKER_GONE = {
    "type": "worker_died",
    "message": "the worker running this job stopped answering (its process or machine died); submit it again",
}
_QUEUE_LOST = {
    "type": "queue_lost",
    "message": "the job queue (Redis) lost this job while it waited (Redis restarted without persistence); "
    "submit it again",
}
_NOT_STARTED = {
    "type": "storage",
    "message": "the worker that took this job could not reach the job store (PostgreSQL); submit it again",
}
_QUEUE_DOWN = {"type": "storage", "message": "the job queue (Redis) could not be reached; submit it again"}


def _status(text: str) -> Status:
    return text if text in ("succeeded", "failed", "cancelled") else "failed"  # type: ignore[return-value]


def _rq_status(client: redis.Redis, job_id: str) -> JobStatus | None:
    try:
        return Job.fetch(job_id, connection=client).get_status()
    except NoSuchJobError:
        return None


def _quietly(call: Callable[[str], bool]) -> Callable[[str], bool]:
    def quiet(job_id: str) -> bool:
        try:
            return call(job_id)
        except StorageError:
            return False

    return quiet


@contextlib.contextmanager
def _redis_errors() -> Iterator[None]:
    """Redis refusing or unreachable is the service's storage error: 503 with Retry-After, never a 500."""
    try:
        yield
    except redis.RedisError as exc:
        raise unavailable(exc) from exc
