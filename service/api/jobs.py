"""Async jobs: submit a fit, read it, list them, cancel one, follow one live over Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Header, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from service.api.deps import get_jobs, get_settings
from service.api.fit import FIT_ERRORS
from service.api.routing import OrjsonRoute
from service.api.runs import coin_work, gaussian_work, submit
from service.api.translate import coin_summary, coin_task, gaussian_summary, gaussian_task
from service.api.views import RawJSONResponse, job_document, job_json
from service.jobs.manager import JobManager
from service.jobs.models import JobRecord
from service.schemas.coins import CoinFitRequest
from service.schemas.common import Message
from service.schemas.examples import COIN_EXAMPLES, GAUSSIAN_EXAMPLES
from service.schemas.gaussian import GaussianFitRequest
from service.schemas.jobs import Job, JobPage
from service.settings import Settings

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=OrjsonRoute)

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such job (or it expired)", "model": Message}}


def _accepted(record: JobRecord) -> RawJSONResponse:
    return RawJSONResponse(job_json(record), status_code=202, headers={"Location": f"/v1/jobs/{record.id}"})


@router.post(
    "/coins",
    status_code=202,
    response_model=Job,
    response_class=RawJSONResponse,
    responses=FIT_ERRORS,
    summary="Start a coin fit as a job",
)
async def create_coin_job(
    body: Annotated[CoinFitRequest, Body(openapi_examples=COIN_EXAMPLES)],
    settings: Annotated[Settings, Depends(get_settings)],
    jobs: Annotated[JobManager, Depends(get_jobs)],
) -> RawJSONResponse:
    """Queue a K-coin fit; follow it at `Location` or its `/events` stream."""
    task = coin_task(body, settings, settings.default_job_time_limit_s)
    return _accepted(await submit(jobs, "coins", coin_work(task), coin_summary(body) | {"mode": "async"}))


@router.post(
    "/gaussian",
    status_code=202,
    response_model=Job,
    response_class=RawJSONResponse,
    responses=FIT_ERRORS,
    summary="Start a Gaussian mixture fit as a job",
)
async def create_gaussian_job(
    body: Annotated[GaussianFitRequest, Body(openapi_examples=GAUSSIAN_EXAMPLES)],
    settings: Annotated[Settings, Depends(get_settings)],
    jobs: Annotated[JobManager, Depends(get_jobs)],
) -> RawJSONResponse:
    """Queue a Gaussian mixture fit; follow it at `Location` or its `/events` stream."""
    task = gaussian_task(body, settings, settings.default_job_time_limit_s)
    return _accepted(await submit(jobs, "gaussian", gaussian_work(task), gaussian_summary(body) | {"mode": "async"}))


@router.get("", response_model=JobPage, response_class=RawJSONResponse, summary="List recent jobs")
async def list_jobs(
    jobs: Annotated[JobManager, Depends(get_jobs)],
    limit: Annotated[int, Query(ge=1, le=200, description="jobs per page")] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> RawJSONResponse:
    """Recent jobs, newest first, without their results (fetch a job for its result)."""
    records, next_cursor = await jobs.list(limit, cursor)
    page = {"items": [job_document(r) for r in records], "next_cursor": next_cursor}
    return RawJSONResponse(orjson.dumps(page))


@router.get("/{job_id}", response_model=Job, response_class=RawJSONResponse, responses=NOT_FOUND, summary="Read a job")
async def read_job(job_id: str, jobs: Annotated[JobManager, Depends(get_jobs)]) -> RawJSONResponse:
    """Status, progress, and the result once the job has succeeded."""
    return RawJSONResponse(job_json(await jobs.get(job_id)))


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
async def cancel_job(job_id: str, jobs: Annotated[JobManager, Depends(get_jobs)]) -> RawJSONResponse:
    """Cancel a queued or running job (a running fit stops within about a second)."""
    record, already = await jobs.cancel(job_id)
    return RawJSONResponse(job_json(record), status_code=200 if already else 202)


async def _existing_job(job_id: str, jobs: Annotated[JobManager, Depends(get_jobs)]) -> JobRecord:
    return await jobs.get(job_id)


# Errors of the stream endpoint are JSON like everywhere else, not events: say so in the schema.
STREAM_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "no such job (or it expired)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Message"}}},
    }
}


@router.get("/{job_id}/events", response_class=EventSourceResponse, responses=STREAM_NOT_FOUND, summary="Follow a job")
async def stream_job_events(
    job: Annotated[JobRecord, Depends(_existing_job)],
    jobs: Annotated[JobManager, Depends(get_jobs)],
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
) -> AsyncIterable[ServerSentEvent]:
    """Server-Sent Events: one `iteration` event per EM iteration, then one final event with the job; then close.

    A follower that reconnects with `Last-Event-ID` continues after that event.
    """
    async for event in jobs.events(job.id, after=last_event_id or 0):
        if event.final:
            final = await jobs.get(job.id)
            yield ServerSentEvent(event=event.kind, id=str(event.id), raw_data=job_json(final).decode())
        else:
            yield ServerSentEvent(event=event.kind, id=str(event.id), raw_data=orjson.dumps(event.data).decode())
