"""A job's events, cancel flag, heartbeat and end on Redis: what lets any API replica follow any job.

Keys of job ``id`` (the ``{id}`` hash tag keeps them in one slot of a Redis cluster):

- ``em:{id}:events`` -- a stream; entry ``0-n`` is the job's live event ``n``, the id an SSE client resumes from
  with ``Last-Event-ID``; fields ``kind`` and ``data`` (JSON; empty for the final event, whose kind is the status).
- ``em:{id}:seq`` -- the last event id given. Every writer appends through one script that numbers and adds in
  one step, so a worker's iterations and a coordinating replica's part events never take the same id.
- ``em:{id}:cancel`` -- set when a cancel is asked; the worker polls it between iterations.
- ``em:{id}:beat`` -- refreshed while the job runs (a short expiry): a replica's reaper fails a running job whose
  beat has gone, i.e. whose worker machine died.
- ``em:{id}:end`` -- a hash: ``status``, ``error`` (JSON), ``result`` (bytes, for an end the API reads back:
  an ephemeral job's).
- ``em:{id}:done`` -- a list pushed once, at the end: a waiting replica blocks on it, not on the stream.
- ``em:dataset:{dataset}:users`` -- a set of the ephemeral jobs fitting a stored dataset (a delete must wait).
- ``em:{id}:handed`` -- a list holding one pickled Finished: a fit with a follow-up hands its success to the
  coordinating replica, which ends the job later (so this is no end: ``done`` stays unset).

Everything expires: while the job may run, an hour past its time limit; after its end, ``END_TTL_S``; later
followers are served from the stored job (its replay).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import orjson
import redis
import redis.asyncio

from service.jobs.models import StorageError
from service.jobs.protocol import Finished

END_TTL_S = 3600  # how long a finished job's events stay on Redis for late followers (then: the stored replay)
BEAT_INTERVAL_S = 2.0
BEAT_TTL_S = 10  # a running job whose beat is older than this has lost its worker

# Numbers and appends events in one step. KEYS: stream, sequence. ARGV: expiry (s), then kind, data pairs.
_APPEND = """
local n = tonumber(redis.call('GET', KEYS[2]) or '0')
for i = 2, #ARGV, 2 do
  n = n + 1
  redis.call('XADD', KEYS[1], '0-' .. n, 'kind', ARGV[i], 'data', ARGV[i + 1])
end
redis.call('SET', KEYS[2], n, 'EX', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return n
"""


def key(job_id: str, what: str) -> str:
    return f"em:{{{job_id}}}:{what}"


def dataset_users_key(dataset_id: str) -> str:
    """The ephemeral jobs (synchronous fits, parts) fitting a dataset: no store row tells other replicas of them."""
    return f"em:dataset:{dataset_id}:users"


def _append_call(job_id: str, ttl_s: int, events: list[tuple[str, dict[str, Any] | None]]) -> dict[str, Any]:
    """The append script's keys and arguments for ``events`` of job ``job_id``."""
    args: list[Any] = [ttl_s]
    for kind, data in events:
        args.extend(encode(kind, data))
    return {"keys": [key(job_id, "events"), key(job_id, "seq")], "args": args}


def _queue_end(pipe: Any, job_id: str, fields: dict[str | bytes, bytes]) -> None:
    """Queue on ``pipe`` (sync or asyncio) what makes a job ended on Redis: its end, the done list waiters block on,
    and no more beat."""
    end, done = key(job_id, "end"), key(job_id, "done")
    pipe.hset(end, mapping=fields)
    pipe.expire(end, END_TTL_S)
    pipe.rpush(done, b"1")
    pipe.expire(done, END_TTL_S)
    pipe.delete(key(job_id, "beat"))


@dataclass(frozen=True)
class StreamEvent:
    id: int
    kind: str
    data: dict[str, Any] | None


def encode(kind: str, data: dict[str, Any] | None) -> tuple[str, bytes]:
    return kind, b"" if data is None else orjson.dumps(data)


def parse_entries(reply: Any) -> list[StreamEvent]:
    """XREAD's reply as events."""
    events = []
    for _stream, entries in reply or ():
        for entry_id, fields in entries:
            number = int(entry_id.split(b"-")[1])
            data = fields.get(b"data") or b""
            events.append(StreamEvent(number, fields[b"kind"].decode(), orjson.loads(data) if data else None))
    return events


def unavailable(exc: Exception) -> StorageError:
    return StorageError(f"the job queue (Redis) cannot be reached: {exc}; retry shortly")


@dataclass(frozen=True)
class End:
    """How a job ended, as the channel tells it: status, error, and (for an ephemeral job) its result."""

    status: str
    error: dict[str, str] | None
    result: bytes | None


def _end_fields(status: str, error: dict[str, str] | None, result: bytes | None) -> dict[str | bytes, bytes]:
    fields: dict[str | bytes, bytes] = {"status": status.encode(), "error": orjson.dumps(error)}
    if result is not None:
        fields["result"] = result
    return fields


def read_end(fields: Any) -> End | None:
    if not fields:
        return None
    return End(status=fields[b"status"].decode(), error=orjson.loads(fields[b"error"]), result=fields.get(b"result"))


class WorkerChannel:
    """The worker's side (synchronous redis-py): append events, poll the cancel flag, beat, end."""

    def __init__(self, client: redis.Redis, job_id: str, running_ttl_s: int) -> None:
        self.client, self.job_id, self.running_ttl_s = client, job_id, running_ttl_s
        self._append = client.register_script(_APPEND)

    def append(self, events: list[tuple[str, dict[str, Any] | None]]) -> int:
        return int(self._append(**_append_call(self.job_id, self.running_ttl_s, events)))

    def cancel_requested(self) -> bool:
        return bool(self.client.exists(key(self.job_id, "cancel")))

    def beat(self) -> None:
        self.client.set(key(self.job_id, "beat"), b"1", ex=BEAT_TTL_S)

    def end(self, status: str, error: dict[str, str] | None = None, result: bytes | None = None) -> None:
        """The job's final event and its end, in one transaction."""
        pipe = self.client.pipeline()
        self._append(**_append_call(self.job_id, END_TTL_S, [(status, None)]), client=pipe)
        _queue_end(pipe, self.job_id, _end_fields(status, error, result))
        pipe.execute()

    def hand_back(self, finished: Finished) -> None:
        """A fit whose end a coordinator commits (it runs the fit's follow-up): no final event from here."""
        pipe = self.client.pipeline()
        pipe.rpush(key(self.job_id, "handed"), pickle.dumps(finished))
        pipe.expire(key(self.job_id, "handed"), END_TTL_S)
        pipe.delete(key(self.job_id, "beat"))  # the coordinator beats for the job from now on
        pipe.execute()


class ApiChannel:
    """An API replica's side (redis.asyncio): read events and ends, ask for cancels, append a coordinator's
    events."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self._append = client.register_script(_APPEND)

    async def read(self, job_id: str, after: int, block_ms: int | None) -> list[StreamEvent]:
        """Events after ``after``; waits up to ``block_ms`` for one (None: does not wait)."""
        reply = await self.client.xread({key(job_id, "events"): f"0-{after}"}, count=1000, block=block_ms)
        return parse_entries(reply)

    async def has_events(self, job_id: str) -> bool:
        return bool(await self.client.exists(key(job_id, "events")))

    async def has_ended(self, job_id: str) -> bool:
        return bool(await self.client.exists(key(job_id, "done")))

    async def last(self, job_id: str) -> list[StreamEvent]:
        """The stream's last event (a finished job's final one)."""
        entries = await self.client.xrevrange(key(job_id, "events"), count=1)
        return parse_entries([(key(job_id, "events"), entries)])

    async def last_id(self, job_id: str) -> int:
        return int(await self.client.get(key(job_id, "seq")) or 0)

    async def cancel_asked(self, job_id: str) -> bool:
        return bool(await self.client.exists(key(job_id, "cancel")))

    async def append(self, job_id: str, events: list[tuple[str, dict[str, Any] | None]], ttl_s: int) -> int:
        return int(await self._append(**_append_call(job_id, ttl_s, events)))

    async def end(self, job_id: str, status: str, error: dict[str, str] | None = None) -> None:
        """A job ended here (cancelled while queued, a coordinated job's end): its final event and end."""
        await self.append(job_id, [(status, None)], END_TTL_S)
        pipe = self.client.pipeline()
        _queue_end(pipe, job_id, _end_fields(status, error, None))
        await pipe.execute()

    async def wait_end(self, job_id: str, timeout_s: float) -> End | None:
        """The job's end once it comes (None if not within ``timeout_s``). The done list is read back, not
        popped, so any number of waiters see it."""
        done = key(job_id, "done")
        if not await self.client.exists(done):
            popped = await self.client.blmove(done, done, timeout_s, "LEFT", "RIGHT")  # type: ignore[arg-type]
            if popped is None:
                return None
        return read_end(await self.client.hgetall(key(job_id, "end")))

    async def handed(self, job_id: str, timeout_s: float) -> Finished | None:
        """A fit's success handed back by its worker (None if not within ``timeout_s``)."""
        handed = key(job_id, "handed")
        moved = await self.client.blmove(handed, handed, timeout_s, "LEFT", "RIGHT")  # type: ignore[arg-type]
        return None if moved is None else pickle.loads(moved)  # type: ignore[arg-type]  # our own workers wrote it

    async def ask_cancel(self, job_id: str, ttl_s: int) -> None:
        await self.client.set(key(job_id, "cancel"), b"1", ex=ttl_s)

    async def beating(self, job_ids: list[str]) -> list[bool]:
        if not job_ids:
            return []
        values = await self.client.mget([key(job_id, "beat") for job_id in job_ids])
        return [value is not None for value in values]

    async def beat(self, job_id: str) -> None:
        await self.client.set(key(job_id, "beat"), b"1", ex=BEAT_TTL_S)
