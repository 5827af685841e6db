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
    responses={503: {"description": "the job runner or store is not up", "model": dict[str, str]}},
)
async def read_readiness(jobs: Annotated[JobManager, Depends(get_jobs)]) -> JSONResponse:
    """200 once the job runner and store are up, 503 otherwise."""
    if jobs.ready:
        return JSONResponse({"status": "ready", **jobs.stats()})
    return JSONResponse({"status": "not ready"}, status_code=503)
