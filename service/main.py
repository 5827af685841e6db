"""Assembles the app: settings, routers, error handlers, and what lives for the app's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import fit, health, jobs
from service.api.errors import install_error_handlers
from service.jobs.manager import JobLimits, LocalJobManager
from service.jobs.store import SQLiteJobStore
from service.settings import Settings

DESCRIPTION = """
Fits statistical models by Expectation-Maximisation.

* **Coins** — experiments of flips, each by one of K coins of unknown bias (Do & Batzoglou's two-coin problem,
  generalised): estimate every coin's bias and, optionally, how often each coin is picked.
* **Gaussian mixtures** — a 1-D or d-D point cloud from K normal groups: estimate weights, means and covariances
  (`full`, `diag`, `spherical`, `tied`, as scikit-learn defines them).

Every fit returns the parameters, an iteration trace, a convergence flag and the reason it stopped.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limits = JobLimits(
            workers=settings.workers, queue_size=settings.queue_size, retention_s=settings.job_retention_s
        )
        jobs = LocalJobManager(SQLiteJobStore(settings.data_dir), limits)
        await jobs.start()
        app.state.jobs = jobs
        try:
            yield
        finally:
            await jobs.stop()

    app = FastAPI(title="EM fitting service", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(fit.router)
    app.include_router(jobs.router)
    app.include_router(health.router)
    return app


app = create_app()
