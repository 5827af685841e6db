"""Synchronous fits: validated, run as a job in a worker process, answered in one response."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from service.api.deps import get_jobs, get_settings
from service.api.routing import OrjsonRoute
from service.api.runs import coin_work, gaussian_work, run_to_completion
from service.api.translate import coin_summary, coin_task, gaussian_summary, gaussian_task
from service.api.views import RawJSONResponse
from service.jobs.manager import JobManager
from service.schemas.coins import CoinFitRequest, CoinFitResult
from service.schemas.common import Message
from service.schemas.examples import COIN_EXAMPLES, GAUSSIAN_EXAMPLES
from service.schemas.gaussian import GaussianFitRequest, GaussianFitResult
from service.settings import Settings

router = APIRouter(prefix="/v1/fit", tags=["fit"], route_class=OrjsonRoute)

FIT_ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"description": "the job queue is full (see Retry-After), or the fit's worker failed", "model": Message},
}


@router.post(
    "/coins",
    response_model=CoinFitResult,
    response_class=RawJSONResponse,
    responses=FIT_ERRORS,
    summary="Fit a K-coin binomial mixture",
)
async def fit_coins(
    body: Annotated[CoinFitRequest, Body(openapi_examples=COIN_EXAMPLES)],
    settings: Annotated[Settings, Depends(get_settings)],
    jobs: Annotated[JobManager, Depends(get_jobs)],
) -> RawJSONResponse:
    """Estimate each coin's bias (and optionally mixing weights) from experiments of flips by EM."""
    task = coin_task(body, settings, settings.default_time_limit_s)
    return RawJSONResponse(await run_to_completion(jobs, "coins", coin_work(task), coin_summary(body)))


@router.post(
    "/gaussian",
    response_model=GaussianFitResult,
    response_class=RawJSONResponse,
    responses=FIT_ERRORS,
    summary="Fit a Gaussian mixture to points",
)
async def fit_gaussian(
    body: Annotated[GaussianFitRequest, Body(openapi_examples=GAUSSIAN_EXAMPLES)],
    settings: Annotated[Settings, Depends(get_settings)],
    jobs: Annotated[JobManager, Depends(get_jobs)],
) -> RawJSONResponse:
    """Estimate weights, means and covariances of K normal groups in a 1-D or d-D point cloud by EM."""
    task = gaussian_task(body, settings, settings.default_time_limit_s)
    return RawJSONResponse(await run_to_completion(jobs, "gaussian", gaussian_work(task), gaussian_summary(body)))
