"""JSON views of job records, built with orjson so a stored result is embedded without re-parsing it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi.responses import JSONResponse

from service.jobs.models import JobRecord


def _timestamp(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")


def job_document(record: JobRecord) -> dict[str, Any]:
    error = None if record.error is None else {"type": record.error["type"], "message": record.error["message"]}
    return {
        "id": record.id,
        "kind": record.kind,
        "status": record.status,
        "created_at": _timestamp(record.created_at),
        "started_at": _timestamp(record.started_at),
        "finished_at": _timestamp(record.finished_at),
        "progress": record.progress,
        "result": None if record.result is None else orjson.Fragment(record.result),
        "error": error,
        "request": record.request,
    }


def job_json(record: JobRecord) -> bytes:
    return orjson.dumps(job_document(record))


class RawJSONResponse(JSONResponse):
    """A response whose body is already JSON bytes (a stored or worker-rendered result): sent as is."""

    def render(self, content: Any) -> bytes:
        assert isinstance(content, bytes)
        return content
