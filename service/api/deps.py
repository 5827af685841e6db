"""Request-scoped dependencies shared by routers.

Each is `async def`: FastAPI runs a plain `def` dependency in its thread pool, a hop that cost more than a
whole Do & Batzoglou fit.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.security import Principal, get_principal
from service.jobs.manager import JobManager, JobObserver
from service.jobs.models import Access
from service.settings import Settings


async def get_settings(request: Request) -> Settings:
    """The settings the app was built with (fixed at start-up, replaceable in tests via create_app)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_jobs(request: Request) -> JobManager:
    """The job manager the lifespan started."""
    jobs: JobManager = request.app.state.jobs
    return jobs


async def get_observer(request: Request) -> JobObserver:
    """Where fits run inline report (the app's metrics), as the job manager reports its jobs."""
    observer: JobObserver = request.app.state.metrics
    return observer


async def get_access(principal: Annotated[Principal, Depends(get_principal)]) -> Access:
    """Whose jobs the caller may see: its tenant's, every job for an admin key, everything on a service
    without keys. From the principal the edge middleware identified (a 401 if there is none: fail closed)."""
    return Access(tenant=principal.tenant, admin=principal.admin)
