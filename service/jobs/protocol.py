"""What the job manager, the pool and the worker processes say to each other: typed messages, not tuples.

Every message pickles across a pipe; each names the job it is about.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from service.jobs.models import JobStatus, Replay, WorkItem


@dataclass(frozen=True)
class Assignment:
    """Parent to worker: run ``item`` as job ``job_id``; ``seq`` tells this run's cancel requests from older ones."""

    job_id: str
    seq: int
    item: WorkItem


@dataclass(frozen=True)
class SmallFit:
    """Parent to an idle worker, on its small-fit pipe: solve ``item`` now as fit ``fit_id``, with nobody
    following it (no Started, no Progress); the answer is one :class:`Finished` on the same pipe."""

    fit_id: str
    item: WorkItem


class IterationEvent(NamedTuple):
    start: int
    iteration: int
    log_likelihood: float
    delta: float


@dataclass(frozen=True)
class Started:
    job_id: str
    at: float


@dataclass(frozen=True)
class Progress:
    job_id: str
    events: list[IterationEvent]


@dataclass(frozen=True)
class Finished:
    job_id: str
    status: JobStatus
    result: bytes | None = None
    error: dict[str, str] | None = None
    replay: Replay | None = None
    model: bytes | None = None  # the kept model's JSON (see Family.keep), for a succeeded job
    picture: bytes | None = None  # what the job keeps for its pictures (see WorkItem.picture)
    worker_exits: bool = False  # the worker stops after this job (e.g. after a MemoryError): give it no more


@dataclass(frozen=True)
class Died:
    """From the pool: a worker process ended; ``job_id`` is the job it was running, if any."""

    job_id: str | None
    exitcode: int | None


WorkerMessage = Started | Progress | Finished
PoolMessage = Started | Progress | Finished | Died
