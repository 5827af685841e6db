"""Liveness and readiness: answered by the event loop alone, never waiting on a fit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from service.api.deps import get_jobs
from service.jobs.manager import JobManager

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def read_health() -> dict[str, str]:
    """200 while the process serves requests."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness",
    response_model=dict[str, str | int],
    responses={
        503: {
            "description": "the job runner is not up, the store refuses writes, or the queue is full",
            "model": dict[str, str],
        }
    },
)
async def read_readiness(jobs: Annotated[JobManager, Depends(get_jobs)]) -> JSONResponse:
    """200 while new jobs can be taken: runner up, store writable, queue not full; 503 (with the reason) otherwise."""
    reason = jobs.not_ready_reason
    if reason is None:
        return JSONResponse({"status": "ready", **jobs.stats()})
    return JSONResponse({"status": "not ready", "reason": reason}, status_code=503, headers={"Retry-After": "5"})
