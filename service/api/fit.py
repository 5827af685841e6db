"""Synchronous fits: the request is validated, solved off the event loop, and answered in one response."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Depends, Request

from service.api.deps import get_settings
from service.api.translate import coin_result, coin_task, gaussian_result, gaussian_task
from service.em.tasks import solve_coins, solve_gaussian
from service.schemas.coins import CoinFitRequest, CoinFitResult
from service.schemas.examples import COIN_EXAMPLES, GAUSSIAN_EXAMPLES
from service.schemas.gaussian import GaussianFitRequest, GaussianFitResult
from service.settings import Settings

router = APIRouter(prefix="/v1/fit", tags=["fit"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"description": "the request does not validate, or cannot be fitted as asked"}
}


@router.post("/coins", response_model=CoinFitResult, responses=_ERRORS, summary="Fit a K-coin binomial mixture")
async def fit_coins(
    body: Annotated[CoinFitRequest, Body(openapi_examples=COIN_EXAMPLES)],
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
) -> CoinFitResult:
    """Estimate each coin's bias (and optionally mixing weights) from experiments of flips by EM."""
    task = coin_task(body, settings)
    solution = await anyio.to_thread.run_sync(solve_coins, task, limiter=request.app.state.fit_limiter)
    return coin_result(solution, job_id=str(uuid.uuid4()))


@router.post(
    "/gaussian",
    response_model=GaussianFitResult,
    responses=_ERRORS,
    summary="Fit a Gaussian mixture to points",
)
async def fit_gaussian(
    body: Annotated[GaussianFitRequest, Body(openapi_examples=GAUSSIAN_EXAMPLES)],
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
) -> GaussianFitResult:
    """Estimate weights, means and covariances of K normal groups in a 1-D or d-D point cloud by EM."""
    task = gaussian_task(body, settings)
    solution = await anyio.to_thread.run_sync(solve_gaussian, task, limiter=request.app.state.fit_limiter)
    return gaussian_result(solution, job_id=str(uuid.uuid4()))
