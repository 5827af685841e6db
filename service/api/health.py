"""Liveness: answers while the process serves, without touching the solver."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def read_health() -> dict[str, str]:
    """200 while the process serves requests."""
    return {"status": "ok"}
