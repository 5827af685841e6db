"""Assembles the app: settings, logging, middleware, routers, error handlers, and the job runner's lifetime."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from service.api import datasets as dataset_routes
from service.api import fit, health, jobs, metrics, plots, selection
from service.api import models as model_routes
from service.api.deps import AppServices
from service.api.edge import EdgeMiddleware
from service.api.errors import install_error_handlers
from service.api.middleware import RequestContextMiddleware
from service.api.routing import AllowedMethodsMiddleware
from service.api.security import UNAUTHORIZED, declare_security, with_security_schemes
from service.backends.assemble import open_backend
from service.datasets.store import DatasetStore
from service.jobs.manager import JobManager
from service.logs import configure_logging
from service.metrics import Metrics
from service.models.store import GroupCommit, ModelStore
from service.settings import Settings

logger = logging.getLogger("service.main")

DESCRIPTION = """
Fits statistical models by Expectation-Maximisation.

* **Coins** — experiments of flips, each by one of K coins of unknown bias (Do & Batzoglou's two-coin
  problem, generalised): estimate every coin's bias and, optionally, how often each coin is picked.
* **Gaussian mixtures** — a 1-D or d-D point cloud from K normal groups: estimate weights, means and
  covariances (`full`, `diag`, `spherical`, `tied`, as scikit-learn defines them).

Every fit returns the parameters, an iteration trace, a convergence flag and the reason it stopped.
Short fits: `/v1/fit/*`. Long ones: `/v1/jobs/*`, followed live at `/v1/jobs/{id}/events`.
"""


_EXPIRY_INTERVAL_S = 3600.0


async def _expire_datasets_and_models(
    datasets: DatasetStore, models: ModelStore, jobs: JobManager, settings: Settings
) -> None:
    """At start-up, then hourly: delete datasets neither uploaded nor fitted within their retention period,
    and models neither made nor used within theirs (and each key's past the cap)."""
    while True:
        now = time.time()
        expired = datasets.expire(now - settings.dataset_retention_s, jobs.uses_dataset)
        forgotten = await anyio.to_thread.run_sync(models.expire, now - settings.model_retention_s)
        if expired or forgotten:
            logger.info("expired %d datasets and %d models", expired, forgotten)
        await asyncio.sleep(_EXPIRY_INTERVAL_S)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_format, settings.log_level)
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = open_backend(settings, app_metrics)
        manager, models, datasets = backend.jobs, backend.models, backend.datasets
        await manager.start()
        app.state.services = AppServices(settings, manager, app_metrics, datasets, models, GroupCommit(models))
        app_metrics.watch_jobs(manager.stats, manager.store_size_bytes)
        # Everything built so far (libraries, schemas, the app) lives as long as the process: move it out of
        # the collector's sight, so full collections under load scan only what requests create.
        gc.collect()
        gc.freeze()
        expiry = asyncio.create_task(_expire_datasets_and_models(datasets, models, manager, settings))
        try:
            yield
        finally:
            expiry.cancel()
            await manager.stop()
            backend.close()

    # Swagger UI and ReDoc assets are served by the app itself: /docs works behind a firewall.
    app = FastAPIOffline(
        title="EM fitting service",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=dict.fromkeys(("tracing", "metrics", "logs", "operation_spans"), settings.opentelemetry),
    )
    app.state.settings = settings
    app.state.metrics = app_metrics
    install_error_handlers(app)
    # /v1/* needs a key when keys are configured: the edge checks it; the schema says so on each operation.
    for router in (
        fit.router, jobs.router, dataset_routes.router, model_routes.router, selection.fit_router,
        selection.job_router, plots.router,
    ):  # fmt: skip
        declare_security(router.routes)
        app.include_router(router, responses=UNAUTHORIZED)  # type: ignore[arg-type]
    generate_openapi = app.openapi
    app.openapi = lambda: with_security_schemes(generate_openapi())  # type: ignore[method-assign]
    app.include_router(health.router)
    app.include_router(metrics.router)
    # Innermost first. Allow names every method of a path. The edge refuses from the head alone (431, 413,
    # 401) before the body is read; inside CORS, so browsers can read its answers, and inside the request
    # context, so they are logged and counted.
    app.add_middleware(AllowedMethodsMiddleware, routes=lambda: app.router.routes)
    app.add_middleware(EdgeMiddleware, settings=settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID", "Last-Event-ID"],
            expose_headers=["X-Request-ID", "Location", "Retry-After"],
        )
    app.add_middleware(RequestContextMiddleware, metrics=app_metrics)
    return app


app = create_app()
