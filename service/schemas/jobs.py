"""The job resource: status, progress, and the fit result once there is one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from service.schemas.coins import CoinFitResult
from service.schemas.gaussian import GaussianFitResult

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobProgress(BaseModel):
    start: int = Field(description="which start (0-based) the iteration belongs to")
    iteration: int
    log_likelihood: float


class JobError(BaseModel):
    type: str = Field(description="interrupted, worker_died, time_limit, out_of_memory, invalid_request, ...")
    message: str


class Job(BaseModel):
    id: str
    kind: Literal["coins", "gaussian"]
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: JobProgress | None
    result: Annotated[CoinFitResult | GaussianFitResult, Field(discriminator="model")] | None = Field(
        description="the fit result once succeeded (left out of listings: fetch the job for it)"
    )
    error: JobError | None
    request: dict[str, Any] = Field(description="a summary of the request (sizes and options, not the data)")


class JobPage(BaseModel):
    items: list[Job] = Field(description="newest first")
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last page")
