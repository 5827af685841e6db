"""Async jobs: submit a fit, read it, list them, cancel one, follow one live over Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from service.api.datasets import attach_dataset
from service.api.deps import get_access, get_jobs, services
from service.api.family_routes import json_examples, with_family_signature
from service.api.fit import FIT_ERRORS
from service.api.job_examples import finished_job_example, queued_job_example
from service.api.routing import OrjsonRoute
from service.api.runs import start_job
from service.api.views import RawJSONResponse, job_document, job_json
from service.families.base import Family
from service.families.registry import FAMILIES, JOB_KINDS, Job, JobPage
from service.jobs.manager import JobManager
from service.jobs.models import Access, JobRecord, JobStatus
from service.jobs.store import JobFilter
from service.schemas.common import FitOptions, Message

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=OrjsonRoute)

JobKind = Literal[JOB_KINDS]  # type: ignore[valid-type]

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such job (or it expired)", "model": Message}}


def _accepted(record: JobRecord) -> RawJSONResponse:
    return RawJSONResponse(job_json(record), status_code=202, headers={"Location": f"/v1/jobs/{record.id}"})


def _add_job_route(family: Family[Any, Any, Any]) -> None:
    async def create_job(body: FitOptions, request: Request, access: Access) -> RawJSONResponse:
        app = services(request)
        await attach_dataset(family, body, request)
        return _accepted(await start_job(family, body, app.settings, app.jobs, access))

    router.add_api_route(
        f"/{family.kind}",
        with_family_signature(create_job, family, access=True),
        methods=["POST"],
        name=f"create_{family.kind}_job",
        status_code=202,
        response_model=Job,
        response_class=RawJSONResponse,
        responses={202: {"content": json_examples(queued_job_example(family))}, **FIT_ERRORS},
        summary=f"Start a job that fits {family.title}",
    )


for _family in FAMILIES:
    _add_job_route(_family)


@router.get("", response_model=JobPage, response_class=RawJSONResponse, summary="List recent jobs")
async def list_jobs(
    jobs: Annotated[JobManager, Depends(get_jobs)],
    access: Annotated[Access, Depends(get_access)],
    limit: Annotated[int, Query(ge=1, le=200, description="jobs per page")] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    status: Annotated[JobStatus | None, Query(description="only jobs in this status")] = None,
    kind: Annotated[
        JobKind | None, Query(description="only jobs of this kind (a model family, or gaussian_select)")
    ] = None,
) -> RawJSONResponse:
    """Recent jobs, newest first, without their results (fetch a job for its result)."""
    # An empty cursor is what a client sends for "no cursor yet" (cursor=""): the first page.
    records, next_cursor = await jobs.list(
        limit, cursor or None, JobFilter(status=status, kind=kind, owner=access.owner_filter)
    )
    page = {"items": [job_document(r) for r in records], "next_cursor": next_cursor}
    return RawJSONResponse(orjson.dumps(page))


@router.get(
    "/{job_id}",
    response_model=Job,
    response_class=RawJSONResponse,
    responses={200: {"content": json_examples(finished_job_example(FAMILIES))}, **NOT_FOUND},
    summary="Read a job",
)
async def read_job(
    job_id: str, jobs: Annotated[JobManager, Depends(get_jobs)], access: Annotated[Access, Depends(get_access)]
) -> RawJSONResponse:
    """Status, progress, and the result once the job has succeeded."""
    return RawJSONResponse(job_json(await jobs.get(job_id, access)))


@router.delete(
    "/{job_id}",
    status_code=202,
    response_model=Job,
    response_class=RawJSONResponse,
    responses={
        **NOT_FOUND,
        200: {"description": "already cancelled", "model": Job},
        409: {"description": "the job already finished", "model": Message},
    },
    summary="Cancel a job",
)
async def cancel_job(
    job_id: str, jobs: Annotated[JobManager, Depends(get_jobs)], access: Annotated[Access, Depends(get_access)]
) -> RawJSONResponse:
    """Cancel a queued or running job (a running fit stops within about a second)."""
    record, already = await jobs.cancel(job_id, access)
    return RawJSONResponse(job_json(record), status_code=200 if already else 202)


async def _existing_job(
    job_id: str, jobs: Annotated[JobManager, Depends(get_jobs)], access: Annotated[Access, Depends(get_access)]
) -> JobRecord:
    return await jobs.get(job_id, access)


# Errors of the stream endpoint are JSON like everywhere else, not events: say so in the schema.
STREAM_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "no such job (or it expired)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Message"}}},
    }
}


# What the stream sends, for Swagger UI and client authors (the final event's data is the whole Job).
_EVENT_STREAM_EXAMPLE = (
    "id: 1\nevent: iteration\n"
    'data: {"start":0,"iteration":1,"log_likelihood":-34.3906,"delta":0.1165}\n\n'
    "id: 2\nevent: iteration\n"
    'data: {"start":0,"iteration":2,"log_likelihood":-33.8817,"delta":0.1018}\n\n'
    "id: 13\nevent: succeeded\n"
    'data: {"id":"…","kind":"coins","status":"succeeded","result":{…},…}\n\n'
)
EVENT_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`text/event-stream`: events `iteration` (data: `start`, `iteration`, `log_likelihood`, "
        "`delta`), then exactly one of `succeeded`, `failed`, `cancelled` (data: the Job, as GET returns it); "
        "each event's `id` is its position in the job's stream",
        "content": {"text/event-stream": {"example": _EVENT_STREAM_EXAMPLE}},
    },
    **STREAM_NOT_FOUND,
}


@router.get("/{job_id}/events", response_class=EventSourceResponse, responses=EVENT_STREAM, summary="Follow a job")
async def stream_job_events(
    job: Annotated[JobRecord, Depends(_existing_job)],
    jobs: Annotated[JobManager, Depends(get_jobs)],
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="the id of the last event received; continue after it"),
    ] = None,
) -> AsyncIterable[ServerSentEvent]:
    """Server-Sent Events: one `iteration` event per EM iteration, then one final event with the job; then close.

    A follower that reconnects with `Last-Event-ID` continues after that event. Events are JSON objects:
    `iteration` events carry `start`, `iteration`, `log_likelihood` and `delta`; the final event
    (`succeeded`, `failed` or `cancelled`) carries the Job as `GET /v1/jobs/{id}` returns it.
    """
    async for event in jobs.events(job.id, after=_event_position(last_event_id)):
        if event.final:
            final = await jobs.get(job.id)
            yield ServerSentEvent(event=event.kind, id=str(event.id), raw_data=job_json(final).decode())
        else:
            yield ServerSentEvent(event=event.kind, id=str(event.id), raw_data=orjson.dumps(event.data).decode())


def _event_position(last_event_id: str | None) -> int:
    """Where to resume. EventSource clients resend the last id they saw, or an empty/``null`` one before any:
    those, like anything that is not an id this stream handed out, start from the beginning."""
    if last_event_id is None:
        return 0
    text = last_event_id.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else 0
