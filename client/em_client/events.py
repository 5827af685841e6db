"""A job's Server-Sent Events, typed, and where a follower is in the stream (what resuming sends and skips).

The stream (GET /v1/jobs/{id}/events) sends ``iteration`` events (a fit's EM iterations), ``candidate`` events
(a selection's candidates as each finishes) or, after a fit asked for a bootstrap, ``replicates`` events (its
refits' progress), each with an ``id`` that is its position in the job's stream, then
exactly one final event (``succeeded``, ``failed`` or ``cancelled``) whose data is the whole job, then closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from httpx_sse import ServerSentEvent

from em_client._decode import decode
from em_client.models import Candidate, Job

FINAL_EVENTS = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True, kw_only=True, slots=True)
class IterationEvent:
    """One EM iteration of one start of a fit (``start`` counts from 0, ``iteration`` from 1)."""

    id: int
    start: int
    iteration: int
    log_likelihood: float
    delta: float


@dataclass(frozen=True, kw_only=True, slots=True)
class CandidateEvent:
    """One finished candidate of a model selection job."""

    id: int
    candidate: Candidate


@dataclass(frozen=True, kw_only=True, slots=True)
class ReplicatesEvent:
    """A bootstrap's progress: ``done`` of its ``replicates`` refits have ended, ``failed`` of them refused."""

    id: int
    done: int
    replicates: int
    failed: int


JobEvent = IterationEvent | CandidateEvent | ReplicatesEvent


class StreamPosition:
    """What a follower has seen: the last event id (sent as ``Last-Event-ID`` on a reconnection) and the job once
    the final event came. Turns raw events into typed ones, skipping any it has already passed."""

    def __init__(self, last_event_id: int | None = None, strict: bool = False) -> None:
        self.last_event_id = last_event_id
        self.job: Job | None = None
        self._strict = strict

    def headers(self) -> dict[str, str]:
        return {} if self.last_event_id is None else {"Last-Event-ID": str(self.last_event_id)}

    def accept(self, sse: ServerSentEvent) -> JobEvent | None:
        """The typed event to hand on, or None: the final event (kept as ``job``), one already seen, or one of a
        type this client does not know (a newer server's; skipped)."""
        if sse.event in FINAL_EVENTS:
            # Always taken, whatever its id: a finished job's stream replays its final event alone, as event 1.
            self.job = decode(Job, sse.json(), strict=self._strict)
            return None
        event_id = int(sse.id) if sse.id.isdigit() else None
        if event_id is not None:
            if self.last_event_id is not None and event_id <= self.last_event_id:
                return None  # the server resumes after Last-Event-ID already; this guards against a proxy's replay
            self.last_event_id = event_id
        return self._typed(sse.event, event_id or 0, sse.json())

    def _typed(self, kind: str, event_id: int, data: Any) -> JobEvent | None:
        if kind == "iteration":
            iteration = decode(_IterationData, data, strict=self._strict)
            return IterationEvent(
                id=event_id,
                start=iteration.start,
                iteration=iteration.iteration,
                log_likelihood=iteration.log_likelihood,
                delta=iteration.delta,
            )
        if kind == "candidate":
            return CandidateEvent(id=event_id, candidate=decode(Candidate, data, strict=self._strict))
        if kind == "replicates":
            progress = decode(_ReplicatesData, data, strict=self._strict)
            return ReplicatesEvent(
                id=event_id, done=progress.done, replicates=progress.replicates, failed=progress.failed
            )
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class _IterationData:
    """An ``iteration`` event's data, as the schema's description of the stream names it."""

    start: int
    iteration: int
    log_likelihood: float
    delta: float


@dataclass(frozen=True, kw_only=True, slots=True)
class _ReplicatesData:
    done: int
    replicates: int
    failed: int
