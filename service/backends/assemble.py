"""The stores and job manager of ``EM_BACKEND``: one place that knows which implementation goes with which.

``local`` (the default) needs nothing installed beyond the service; ``distributed`` imports its engines
(psycopg, redis, rq) only when chosen, so they stay an optional extra (``pip install .[distributed]``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.datasets.store import DatasetStore
from service.jobs.ending import keeper_of
from service.jobs.manager import JobLimits, JobManager, JobObserver, LocalJobManager
from service.jobs.store import SQLiteJobStore
from service.models.store import ModelStore, SQLiteModelStore
from service.settings import Settings


@dataclass
class Backend:
    jobs: JobManager
    models: ModelStore
    datasets: DatasetStore
    close: Callable[[], None]  # after the job manager has stopped


def job_limits(settings: Settings) -> JobLimits:
    memory_mb = settings.worker_memory_limit_mb
    return JobLimits(
        workers=settings.workers,
        queue_size=settings.queue_size,
        retention_s=settings.job_retention_s,
        store_max_bytes=None if settings.store_max_mb is None else settings.store_max_mb * 2**20,
        worker_memory_bytes=None if memory_mb is None else memory_mb * 2**20,
    )


def open_backend(settings: Settings, observer: JobObserver) -> Backend:
    if settings.backend == "distributed":
        return _distributed(settings, observer)
    store = SQLiteJobStore(settings.data_dir)  # first: it locks the data directory for this process
    models = SQLiteModelStore(settings.data_dir, settings.max_models)
    jobs = LocalJobManager(
        store, job_limits(settings), observer=observer, keep_model=keeper_of(models), small_fit_models=models.file
    )
    datasets = DatasetStore(settings.data_dir)

    def close() -> None:
        datasets.close()
        models.close()

    return Backend(jobs, models, datasets, close)


_ORPHAN_GRACE_S = 3600.0  # a replica starting must not remove another's upload in progress


def _distributed(settings: Settings, observer: JobObserver) -> Backend:
    from service.backends.postgres import Database, PostgresDatasetMetadata, PostgresJobStore, PostgresModelStore
    from service.backends.queued.manager import DistributedJobManager

    if settings.database_url is None or settings.redis_url is None:
        raise RuntimeError("EM_BACKEND=distributed needs EM_DATABASE_URL (PostgreSQL) and EM_REDIS_URL (Redis)")
    database = Database(settings.database_url).open()
    models = PostgresModelStore(database, settings.max_models)
    jobs = DistributedJobManager(
        PostgresJobStore(database),
        job_limits(settings),
        settings.redis_url,
        settings.queue_name,
        observer=observer,
        keep_model=keeper_of(models),
        reaper_interval_s=settings.reaper_interval_s,
        queue_lost_after_s=settings.queue_lost_after_s,
    )
    # Dataset files live under EM_DATA_DIR, which the workers must see at the same path (a shared volume).
    datasets = DatasetStore(settings.data_dir, PostgresDatasetMetadata(database), orphan_grace_s=_ORPHAN_GRACE_S)

    def close() -> None:
        datasets.close()
        database.close()

    return Backend(jobs, models, datasets, close)
