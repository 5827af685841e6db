"""How a :class:`JobRecord` is spelled as a store row, and a job listing's cursor: shared by every job store, so a
record round-trips and a cursor means the same whichever backend keeps the jobs."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from service.jobs.models import JobRecord, JobStatus, Replay

# A row's columns, in the order :func:`row_of` gives and :func:`record_of` takes them.
COLUMNS = "id, kind, status, created_at, started_at, finished_at, request, progress, result, error, replay, owner"


class InvalidCursor(ValueError):
    pass


def dump(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value)


def load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def dump_replay(replay: Replay | None) -> str | None:
    return None if replay is None else json.dumps(replay.to_dict())


def row_of(record: JobRecord) -> tuple[Any, ...]:
    """``record``'s values for :data:`COLUMNS` (JSON values as text, the result as bytes)."""
    return (
        record.id,
        record.kind,
        record.status,
        record.created_at,
        record.started_at,
        record.finished_at,
        json.dumps(record.request),
        dump(record.progress),
        record.result,
        dump(record.error),
        dump_replay(record.replay),
        record.owner,
    )


def record_of(row: tuple[Any, ...]) -> JobRecord:
    job_id, kind, status, created_at, started_at, finished_at, request, progress, result, error, replay, owner = row
    status_value: JobStatus = status
    return JobRecord(
        id=job_id,
        kind=kind,
        status=status_value,
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
        request=json.loads(request),
        progress=load(progress),
        result=None if result is None else bytes(result),  # drivers may give a memoryview or bytearray
        error=load(error),
        replay=None if replay is None else Replay.from_dict(json.loads(replay)),
        owner=owner,
    )


def encode_cursor(record: JobRecord) -> str:
    return base64.urlsafe_b64encode(json.dumps([record.created_at, record.id]).encode()).decode()


FOREIGN_CURSOR = "cursor is not one this server handed out; start again without it"


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The ``[created_at, id]`` of a cursor :func:`encode_cursor` made; anything else is an :class:`InvalidCursor`."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor))
    except (ValueError, RecursionError) as exc:
        # ValueError: not base64, not UTF-8 or not JSON; RecursionError: JSON nested too deep to parse.
        raise InvalidCursor(FOREIGN_CURSOR) from exc
    # Only what encode_cursor writes gets through: a finite float and an id SQLite can bind. Anything
    # looser fails later, as a 500 (float() of a 400-digit integer overflows; a lone surrogate cannot bind).
    match decoded:
        case [float(created_at), str(job_id)] if math.isfinite(created_at) and is_utf8(job_id):
            return created_at, job_id
    raise InvalidCursor(FOREIGN_CURSOR)


def is_utf8(text: str) -> bool:
    """False for a str holding lone surrogates (JSON can spell them: "\\ud800"), which UTF-8 cannot encode."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
