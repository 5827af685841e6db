"""Ends of jobs whose work horse did not end them itself, told by the RQ worker process that ran them.

- a horse stopped on purpose (a cancel the fit did not heed within the grace period; RQ's stop-job command):
  the job ends ``cancelled``;
- a horse that died (killed, out of memory): the job ends ``failed`` with ``error.type: "worker_died"``.

Both run in the worker's parent process, which outlives its horse; a job already ended is left alone.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import redis
from rq.job import Job

from service.backends.queued.channel import WorkerChannel, key
from service.backends.queued.horse import QueuedJob
from service.backends.queued.stores import open_worker_stores
from service.jobs.ending import as_ended, commit_end, worker_died

logger = logging.getLogger("service.worker")


def job_stopped(job: Job, connection: redis.Redis) -> None:
    _end_for_horse(job, connection, "cancelled", None)


def horse_died(job: Job, retpid: int, ret_val: int, rusage: Any) -> None:
    how = f"signal {os.WTERMSIG(ret_val)}" if os.WIFSIGNALED(ret_val) else f"exit status {os.WEXITSTATUS(ret_val)}"
    _end_for_horse(job, job.connection, "failed", worker_died(how))


def _end_for_horse(job: Job, connection: redis.Redis, status: str, error: dict[str, str] | None) -> None:
    queued = job.args[0] if job.args else None
    if not isinstance(queued, QueuedJob):
        return
    channel = WorkerChannel(connection, queued.record.id, queued.running_ttl_s)
    if connection.exists(key(queued.record.id, "done")):
        return  # the horse ended it before it died
    if queued.ephemeral:
        channel.end(status, error)
        return
    stores = open_worker_stores()
    try:
        record = stores.jobs.get(queued.record.id)
        if record is None or record.finished:
            return
        ended = commit_end(stores.jobs, None, as_ended(record, status, None, error, None)).record  # type: ignore[arg-type]
        logger.warning("job %s ended %s: its work horse did not end it", record.id, ended.status)
        channel.end(ended.status, ended.error)
    finally:
        stores.close()
