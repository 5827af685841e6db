"""The shared stores as a worker process sees them: PostgreSQL, opened from the same ``EM_*`` settings as the API.

A work horse opens its own (a forked process must not share its parent's connections) and closes them at the
job's end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from service.backends.postgres import Database, PostgresJobStore, PostgresModelStore
from service.jobs.ending import keeper_of
from service.jobs.models import StorageError
from service.settings import Settings

logger = logging.getLogger("service.worker")


class WorkerStores:
    def __init__(self, database: Database, max_models: int) -> None:
        self.database = database
        self.jobs = PostgresJobStore(database)
        self.models = PostgresModelStore(database, max_models)
        self.keep_model = keeper_of(self.models)  # as the API keeps a local job's model

    def write(self, write: Callable[..., Any], *args: Any) -> bool:
        """A write whose loss is tolerable (progress, "running")."""
        try:
            write(*args)
        except StorageError as exc:
            logger.error("job store write failed: %s", exc)
            return False
        return True

    def close(self) -> None:
        self.database.close()


def open_worker_stores(settings: Settings | None = None) -> WorkerStores:
    settings = settings or Settings()
    if settings.database_url is None:
        raise RuntimeError("EM_DATABASE_URL is not set: a distributed worker stores jobs in PostgreSQL")
    return WorkerStores(Database(settings.database_url, min_size=1, max_size=2).open(), settings.max_models)
