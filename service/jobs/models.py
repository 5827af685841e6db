"""What a job is, independent of where it is stored or run."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from service.em.loop import FitOutcome

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


def new_job_id() -> str:
    """An unguessable id: 128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


@dataclass
class JobRecord:
    id: str
    kind: str
    status: JobStatus
    created_at: float
    request: dict[str, Any] = field(default_factory=dict)  # a summary of the request, never the data
    started_at: float | None = None
    finished_at: float | None = None
    progress: dict[str, Any] | None = None
    result: bytes | None = None  # the rendered result JSON, stored as served
    error: dict[str, str] | None = None
    replay: Replay | None = None  # the events a late follower is sent (succeeded jobs)
    owner: str | None = None  # the tenant (API key) that made it; None on a service without keys

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES


class Owned(Protocol):
    """Anything stored for a tenant: a job, a dataset."""

    @property
    def owner(self) -> str | None: ...


@dataclass(frozen=True)
class Access:
    """Who is asking: a tenant (one per API key; None on a service without keys) and whether it is an admin."""

    tenant: str | None = None
    admin: bool = False

    def may_see(self, record: Owned) -> bool:
        return self.admin or self.tenant is None or record.owner == self.tenant

    @property
    def owner_filter(self) -> str | None:
        """The owner a listing is limited to (None: everything)."""
        return None if self.admin else self.tenant


EVERYONE = Access()


@dataclass(frozen=True)
class Replay:
    """What a follower of a job no longer in memory is sent: the returned start's iterations under their
    live event ids, then the final event. Taken from the solver's outcome when the job finishes, so the
    job layer never has to parse a result (or know how the solver chose its start) to rebuild events."""

    start: int  # the returned start
    id_offset: int  # live event id = id_offset + iteration
    iterations: list[tuple[int, float, float]]  # (iteration, log_likelihood, delta), from the trace
    final_id: int  # the live id of the final event

    @classmethod
    def of(cls, outcome: FitOutcome[Any]) -> Replay:
        # Live, every start's iterations were numbered in turn and the final event came last.
        n_iters = [restart.n_iter for restart in outcome.restarts]
        best = outcome.returned_start
        return cls(
            start=best,
            id_offset=sum(n_iters[:best]),
            iterations=[(t.iteration, t.log_likelihood, t.delta) for t in outcome.trace],
            final_id=sum(n_iters) + 1,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "id_offset": self.id_offset, "iterations": self.iterations, "final": self.final_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Replay:
        iterations = [(int(i), float(ll), float(d)) for i, ll, d in data["iterations"]]
        return cls(int(data["start"]), int(data["id_offset"]), iterations, int(data["final"]))


@dataclass(frozen=True)
class WorkItem:
    """What a worker process runs: ``render(solve(task, hooks), job_id)`` gives the result JSON, and
    ``keep(solution)`` the model the fit keeps.

    The solution has an ``outcome`` (the driver's :class:`~service.em.loop.FitOutcome`), from which the
    worker takes the job's :class:`Replay`.

    ``solve`` and ``render`` are module-level functions, so the item pickles by reference and the
    job runner needs to know nothing of models or schemas.

    ``picture`` (a stored job's) bundles what its pictures need: ``(task, solution, kept model JSON, every start's
    trace arrays) -> bytes``, stored with the job's end. A work item that is not a fit (a picture being drawn) has
    ``fit`` False: its solution has no outcome to replay (a picture being drawn, a bootstrap's batch of refits).
    """

    solve: Callable[..., Any]
    task: Any
    render: Callable[[Any, str], bytes]
    time_limit_s: float
    keep: Callable[[Any], bytes] | None = None  # the JSON of the model a solution keeps (stored with the job's end)
    picture: Callable[[Any, Any, bytes | None, dict[str, Any]], bytes] | None = None
    fit: bool = True


@dataclass(frozen=True)
class FollowUp:
    """Work that starts from a job's succeeded result and ends before the job does (a bootstrap's refits).

    ``parts(result)`` is queued at once as ephemeral ``kind`` jobs spread over the workers; as each succeeds
    the job sends a ``part_event`` event with ``progress(that part's result)``; when all have,
    ``combine(result, their results in order)`` is the job's result. A part that fails fails the job,
    cancelling the job cancels its parts (as for a group: see ``submit_group``).
    """

    kind: str
    parts: Callable[[bytes], list[WorkItem]]
    combine: Callable[[bytes, list[bytes]], bytes]
    part_event: str
    progress: Callable[[bytes], dict[str, Any]]


class JobError(Exception):
    """Base of the job layer's errors; routes map each to a status code."""


class JobNotFound(JobError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r} (it may have expired)")


class JobAlreadyFinished(JobError):
    def __init__(self, job_id: str, status: str) -> None:
        super().__init__(f"job {job_id!r} already {status}; only queued or running jobs can be cancelled")
        self.status = status


class QueueFull(JobError):
    def __init__(self, capacity: int, retry_after_s: int) -> None:
        super().__init__(f"the job queue is full ({capacity} waiting); retry in about {retry_after_s} s")
        self.retry_after_s = retry_after_s


class StorageError(JobError):
    """The store could not take a write; ``error_type`` is what a job that hit it reports. Pickles (a worker that
    writes a small fit's model reports its store's refusal this way)."""

    error_type = "storage"


class StorageFull(StorageError):
    """The disk (or the store's size cap) is full: retry once space is freed."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the job store is full ({detail}); retry later")
        self.detail = detail
        self.retry_after_s = 30

    def __reduce__(self) -> tuple[type[StorageFull], tuple[str]]:
        return (type(self), (self.detail,))


class ResultTooLarge(StorageError):
    error_type = "result_too_large"

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"the result is too large to store ({detail}); ask for less (return_responsibilities false, "
            "trace 'loglik' or 'none') or fit fewer points"
        )
        self.detail = detail

    def __reduce__(self) -> tuple[type[ResultTooLarge], tuple[str]]:
        return (type(self), (self.detail,))


class FitFailed(JobError):
    """A job ended without a result; carries the job's error (type and message, and the field for a 422)."""

    def __init__(self, error: dict[str, str]) -> None:
        super().__init__(error.get("message", "the fit failed"))
        self.error = error
