"""Assembles the app: settings, routers, error handlers, and what lives for the app's lifetime."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from service.api import fit, health
from service.api.errors import install_error_handlers
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
        # Fits run in threads (numpy releases the GIL); no more at once than there are cores to run them.
        app.state.fit_limiter = anyio.CapacityLimiter(max(1, os.cpu_count() or 1))
        yield

    app = FastAPI(title="EM fitting service", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(fit.router)
    app.include_router(health.router)
    return app


app = create_app()
