"""What the job manager, the pool and the worker processes say to each other: typed messages, not tuples.

Every message pickles across a pipe; each names the job it is about. The small-fit pair is typed here too, but
crosses as plain tuples (see :class:`SmallFit`).
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from service.jobs import wire
from service.jobs.models import JobStatus, Replay, StorageError, WorkItem


@dataclass(frozen=True)
class Assignment:
    """Parent to worker: run ``item`` as job ``job_id``; ``seq`` tells this run's cancel requests from older ones."""

    job_id: str
    seq: int
    item: WorkItem


class KeepAs(NamedTuple):
    """Whose model a small fit makes, and of which family: what its stored record says besides the model."""

    owner: str | None
    kind: str


class SmallFit(NamedTuple):
    """Parent to an idle worker, on its small-fit pipe: solve ``item`` now as fit ``fit_id``, with nobody
    following it (no Started, no Progress); each is answered by a :class:`SmallFitAnswer` on the same pipe.

    Fits that wait for a worker go to it together, a batch of up to a few, answered together: on this machine
    a wake-up of another process costs as much CPU as the Python around it, and under load most small fits
    wait for a worker (see ``WorkerPool.run_small_fit``). Both travel as plain tuples: the event loop pickles
    one of each per small fit, at hundreds a second, and pickle spends microseconds on every dataclass and
    array it meets (see :mod:`service.jobs.wire`). A fit is pickled once, when it is asked for
    (:meth:`to_bytes`); a batch is a tuple of those bytes (:func:`batch_of`, :func:`fits_in`).
    """

    fit_id: str
    item: WorkItem
    keep_as: KeepAs | None = None  # the worker stores the fit's model as this, if it has the model store

    def to_bytes(self) -> bytes:
        item = self.item
        assert item.picture is None  # nobody draws a small fit's pictures
        packed = wire.packable(item.task)
        task = wire.pack(item.task) if packed else item.task
        calls = _pickled_calls(item.solve, item.render, item.keep, item.fit)
        keep_as = None if self.keep_as is None else tuple(self.keep_as)
        message = (self.fit_id, calls, packed, task, item.time_limit_s, keep_as)
        return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> SmallFit:
        fit_id, calls, packed, task, time_limit_s, keep_as = pickle.loads(data)
        solve, render, keep, fit = _unpickled_calls(calls)
        task = wire.unpack(task) if packed else task
        item = WorkItem(solve, task, render, time_limit_s, keep, None, fit)
        return cls(fit_id, item, None if keep_as is None else KeepAs(*keep_as))


# What a small fit's item calls is one of a few module-level functions (a family's solve, render and keep): pickled
# by reference, each costs microseconds of the event loop per fit, to say the same thing every time. So each
# combination is pickled once, and unpickled once per worker. (Bounded: a caller making new callables per fit
# would only miss the cache.)
@functools.lru_cache(maxsize=64)
def _pickled_calls(solve: Any, render: Any, keep: Any, fit: bool) -> bytes:
    return pickle.dumps((solve, render, keep, fit), protocol=pickle.HIGHEST_PROTOCOL)


@functools.lru_cache(maxsize=64)
def _unpickled_calls(calls: bytes) -> tuple[Any, Any, Any, bool]:
    solve, render, keep, fit = pickle.loads(calls)
    return solve, render, keep, fit


def batch_of(fits: Sequence[bytes]) -> bytes:
    """One message of small fits (each from :meth:`SmallFit.to_bytes`)."""
    return pickle.dumps(tuple(fits), protocol=pickle.HIGHEST_PROTOCOL)


def fits_in(batch: bytes) -> list[SmallFit]:
    return [SmallFit.from_bytes(fit) for fit in pickle.loads(batch)]


class SmallFitAnswer(NamedTuple):
    """Worker to parent: how a :class:`SmallFit` ended (``iterations``: every start's, for the metrics).

    A worker with the model store keeps a succeeded fit's model itself (``stored``, and ``model`` is not sent
    back); ``refused`` is the store's refusal of it, and the fit has failed.
    """

    status: JobStatus
    result: bytes | None = None
    error: dict[str, str] | None = None
    model: bytes | None = None
    iterations: int = 0
    worker_exits: bool = False
    stored: bool = False
    refused: StorageError | None = None

    @classmethod
    def of(cls, finished: Finished) -> SmallFitAnswer:
        iterations = 0 if finished.replay is None else finished.replay.final_id - 1
        return cls(finished.status, finished.result, finished.error, finished.model, iterations, finished.worker_exits)


def answers_to_bytes(answers: Sequence[SmallFitAnswer]) -> bytes:
    """A batch's answers, in the order of its fits, as one message."""
    return pickle.dumps(tuple(tuple(answer) for answer in answers), protocol=pickle.HIGHEST_PROTOCOL)


def answers_in(message: bytes) -> list[SmallFitAnswer]:
    return [SmallFitAnswer(*answer) for answer in pickle.loads(message)]


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
