"""PostgreSQL stores for several API replicas sharing one database (``EM_BACKEND=distributed``).

Open one :class:`Database` per process (a connection pool; the schema is migrated on open), then the stores on it::

    database = Database(url).open()
    jobs, models = PostgresJobStore(database), PostgresModelStore(database, max_per_owner)
    datasets = DatasetStore(data_dir, PostgresDatasetMetadata(database))
    ...
    database.close()  # the stores' own close() leaves the shared pool alone

While PostgreSQL cannot be reached, every operation raises :class:`~service.jobs.models.StorageError` (the API's
503 with Retry-After), and the pool reconnects by itself once the server is back.
"""

from service.backends.postgres.database import Database
from service.backends.postgres.datasets import PostgresDatasetMetadata
from service.backends.postgres.jobs import PostgresJobStore
from service.backends.postgres.models import PostgresModelStore

__all__ = ["Database", "PostgresDatasetMetadata", "PostgresJobStore", "PostgresModelStore"]
