"""Request-scoped dependencies shared by routers.

Each is `async def`: FastAPI runs a plain `def` dependency in its thread pool, a hop that cost more than a
whole Do & Batzoglou fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.api.security import Principal, get_principal
from service.datasets.store import DatasetStore
from service.jobs.manager import JobManager, JobObserver
from service.jobs.models import Access
from service.models.store import GroupCommit, ModelStore
from service.settings import Settings


@dataclass(frozen=True)
class AppServices:
    """What the fit and job handlers use of the app, made once at start-up.

    Read from the request, not injected with ``Depends``: FastAPI solves each dependency per request, and
    three of them cost a Do & Batzoglou fit about a fifth of its whole time in the service.
    """

    settings: Settings
    jobs: JobManager
    observer: JobObserver  # where fits run inline report (the app's metrics), as the job manager reports its jobs
    datasets: DatasetStore
    models: ModelStore
    model_writes: GroupCommit  # the models of synchronous fits, committed a batch per turn of the event loop


def services(request: Request) -> AppServices:
    app_services: AppServices = request.app.state.services
    return app_services


async def get_jobs(request: Request) -> JobManager:
    """The job manager the lifespan started."""
    return services(request).jobs


async def get_access(principal: Annotated[Principal, Depends(get_principal)]) -> Access:
    """Whose jobs the caller may see: its tenant's, every job for an admin key, everything on a service
    without keys. From the principal the edge middleware identified (a 401 if there is none: fail closed)."""
    return access_of(principal)


def access_of(principal: Principal) -> Access:
    return Access(tenant=principal.tenant, admin=principal.admin)
