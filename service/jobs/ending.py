"""How a job's end is committed: the one place that decides what "succeeded" means (stored, model kept).

Shared by every job runner: the local manager commits ends in the API process; a queued job's work horse
(the distributed backend) commits its own, so a job finishes whether or not an API replica is listening.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from service.jobs.models import JobRecord, JobStatus, Replay, StorageError
from service.jobs.store import JobStore
from service.models.store import ModelRecord, ModelStore

logger = logging.getLogger("service.jobs")

# Keeps a succeeded job's model (its record, the model's JSON, whether the job is a synchronous fit's) before the
# job is shown succeeded; raises a StorageError if it cannot, and the job then fails for that reason.
KeepModel = Callable[[JobRecord, bytes, bool], None]

# How a job ends when its runner, not its fit, ends it (every job runner says these alike).
STUCK_PAST_TIME_LIMIT = {
    "type": "time_limit",
    "message": "the fit did not stop at its time limit (it was stuck before its first iteration) and was stopped; "
    "use fewer points or a larger time_limit_s",
}


def worker_died(how: str) -> dict[str, str]:
    """The error of a job whose worker process died ``how`` (a signal, an exit status)."""
    return {
        "type": "worker_died",
        "message": f"the worker process running this job died ({how}); "
        "if it ran out of memory, use fewer points or components",
    }


def keeper_of(models: ModelStore) -> KeepModel:
    """How a succeeded job keeps its model: a synchronous fit's names no job (it cannot be read back)."""

    def keep_model(record: JobRecord, model: bytes, ephemeral: bool) -> None:
        job_id = None if ephemeral else record.id
        models.put(ModelRecord(record.id, record.owner, record.kind, time.time(), job_id, model))

    return keep_model


@dataclass(frozen=True)
class CommittedEnd:
    """The end as stored, and what the attempt says of the store: healthy (True), refusing writes (False, with
    ``reason``), or unknown (None: it refused this job's write alone, e.g. a result over its size limit)."""

    record: JobRecord
    store_healthy: bool | None
    reason: str | None = None


def as_ended(
    record: JobRecord, status: JobStatus, result: bytes | None, error: dict[str, str] | None, replay: Replay | None
) -> JobRecord:
    """``record`` as it ends: a copy, so the live record changes only once the end is stored."""
    succeeded = status == "succeeded"
    return replace(
        record,
        status=status,
        finished_at=time.time(),
        result=result if succeeded else None,
        replay=replay if succeeded else None,
        error=error,
    )


def commit_end(
    store: JobStore,
    keep_model: KeepModel | None,
    end: JobRecord,
    model: bytes | None = None,
    ephemeral: bool = False,
    picture: bytes | None = None,
) -> CommittedEnd:
    """Commit ``end`` (and the model a succeeded job keeps; an ephemeral job only that; and what it keeps for
    pictures); if the store refuses it, commit (and return) the job failed for that reason.

    So "succeeded" is never shown for a result or model that is not stored, and GET, listings and the final
    event all tell the same status.
    """
    try:
        if end.status == "succeeded" and model is not None and keep_model is not None:
            keep_model(end, model, ephemeral)
        if ephemeral:
            return CommittedEnd(end, None)  # the job store was not written
        store.finish(end, picture=picture if end.status == "succeeded" else None)
        return CommittedEnd(end, True)
    except StorageError as exc:
        logger.error("could not store the end of job %s: %s", end.id, exc)
        failed = as_ended(end, "failed", None, {"type": exc.error_type, "message": str(exc)}, None)
        if exc.error_type == "storage":
            return CommittedEnd(failed, False, str(exc))
        if not ephemeral:
            try:
                store.finish(failed)
            except StorageError as again:
                logger.error("job store write failed: %s", again)
                return CommittedEnd(failed, False, str(again))
        return CommittedEnd(failed, None)
