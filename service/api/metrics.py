"""Prometheus scrape endpoint (open, like the health endpoints)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def read_metrics(request: Request) -> Response:
    """HTTP traffic, fits by model and outcome, EM iterations, queue depth and busy workers."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
