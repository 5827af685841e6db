"""Dataset records in PostgreSQL: :class:`~service.datasets.store.DatasetMetadata` for API replicas sharing one
database (the files themselves stay where :class:`~service.datasets.store.DatasetStore` keeps them)."""

from __future__ import annotations

import builtins
import time
from contextlib import AbstractContextManager

from service.backends.postgres.database import Connection, Database
from service.backends.postgres.paging import newest_first, storable
from service.datasets.store import DatasetRecord

_COLUMNS = "id, owner, kind, n, d, dtype, bytes, sha256, created_at"  # a DatasetRecord's fields, in order
_WHAT = "the dataset store"


class PostgresDatasetMetadata:
    def __init__(self, database: Database) -> None:
        self.database = database

    def _connection(self) -> AbstractContextManager[Connection]:
        return self.database.connection(_WHAT)

    def close(self) -> None:
        """Nothing of its own to close: the pool is the :class:`Database`'s, shared with the other stores."""

    def insert(self, record: DatasetRecord) -> None:
        with self._connection() as connection:
            connection.execute(
                f"INSERT INTO datasets ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (record.id, record.owner, record.kind, record.n, record.d, record.dtype, record.bytes,
                 record.sha256, record.created_at),
            )  # fmt: skip

    def get(self, dataset_id: str) -> DatasetRecord | None:
        if not storable(dataset_id):
            return None
        with self._connection() as connection:
            row = connection.execute(f"SELECT {_COLUMNS} FROM datasets WHERE id = %s", (dataset_id,)).fetchone()
        return None if row is None else DatasetRecord(*row)

    def list(self, owner: str | None, limit: int, cursor: str | None) -> tuple[list[DatasetRecord], str | None]:
        """Newest first, of ``owner``'s (None: everyone's); ``cursor`` is the id of the previous page's last one."""
        with self._connection() as connection:
            rows, next_cursor = newest_first(connection, "datasets", _COLUMNS, owner, limit, cursor)
        return [DatasetRecord(*row) for row in rows], next_cursor

    def touch(self, dataset_id: str) -> None:
        if storable(dataset_id):
            with self._connection() as connection:
                connection.execute("UPDATE datasets SET used_at = %s WHERE id = %s", (time.time(), dataset_id))

    def stale(self, before: float) -> builtins.list[str]:
        with self._connection() as connection:
            rows = connection.execute(
                "SELECT id FROM datasets WHERE greatest(created_at, coalesce(used_at, 0)) < %s", (before,)
            ).fetchall()
        return [dataset_id for (dataset_id,) in rows]

    def delete(self, dataset_id: str) -> None:
        if storable(dataset_id):
            with self._connection() as connection:
                connection.execute("DELETE FROM datasets WHERE id = %s", (dataset_id,))

    def ids(self) -> set[str]:
        with self._connection() as connection:
            return {dataset_id for (dataset_id,) in connection.execute("SELECT id FROM datasets")}
