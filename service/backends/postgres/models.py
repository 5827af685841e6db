"""Kept models in PostgreSQL: :class:`~service.models.store.ModelStore` for API replicas sharing one database."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Any

from service.backends.postgres.database import Connection, Database
from service.backends.postgres.paging import newest_first, storable
from service.jobs.models import Access
from service.models.store import TRIM_EVERY, ModelRecord

_COLUMNS = "id, owner, kind, created_at, job_id, body"  # a ModelRecord's fields, in order
_WHAT = "the model store"


class PostgresModelStore:
    """Models in the ``models`` table of ``database``; the same retention and per-owner cap as the SQLite store.

    Each process counts its own writes towards the next trim, so with several replicas an owner may exceed the
    cap by up to ``TRIM_EVERY`` per replica until the next trim or the hourly expiry."""

    def __init__(self, database: Database, max_per_owner: int) -> None:
        self.database = database
        self.max_per_owner = max_per_owner
        self._writes = 0

    def _connection(self) -> AbstractContextManager[Connection]:
        return self.database.connection(_WHAT)

    def close(self) -> None:
        """Nothing of its own to close: the pool is the :class:`Database`'s, shared with the other stores."""

    def put(self, record: ModelRecord) -> None:
        """Keep ``record`` (a StorageError if the store refuses it: the fit then fails rather than lose it)."""
        self.put_many([record])

    def put_many(self, records: list[ModelRecord]) -> None:
        """Keep ``records`` in one transaction: all or none (a commit costs more than the rows it writes)."""
        rows = [(r.id, r.owner, r.kind, r.created_at, r.job_id, r.body, r.created_at) for r in records]
        with self._connection() as connection, connection.transaction(), connection.cursor() as cursor:
            cursor.executemany(f"INSERT INTO models ({_COLUMNS}, used_at) VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)
        for record in records:
            self._writes += 1
            if self._writes % TRIM_EVERY == 0:
                self.trim(record.owner)

    def get(self, model_id: str, access: Access) -> ModelRecord | None:
        if not storable(model_id):
            return None
        with self._connection() as connection:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM models WHERE id = %s", (model_id,), binary=True
            ).fetchone()
        record = None if row is None else _record(row)
        return record if record is not None and access.may_see(record) else None

    def list(self, access: Access, limit: int, cursor: str | None) -> tuple[list[ModelRecord], str | None]:
        """Newest first; ``cursor`` is the id of the last model of the previous page."""
        with self._connection() as connection:
            rows, next_cursor = newest_first(connection, "models", _COLUMNS, access.owner_filter, limit, cursor)
        return [_record(row) for row in rows], next_cursor

    def touch(self, model_id: str) -> None:
        """Note a use (predict, score, sample): retention and the cap count from the last one."""
        if storable(model_id):
            with self._connection() as connection:
                connection.execute("UPDATE models SET used_at = %s WHERE id = %s", (time.time(), model_id))

    def delete(self, model_id: str) -> bool:
        if not storable(model_id):
            return False
        with self._connection() as connection:
            return connection.execute("DELETE FROM models WHERE id = %s", (model_id,)).rowcount > 0

    def trim(self, owner: str | None) -> int:
        """Forget ``owner``'s least recently used models past the cap."""
        # "owner IS NULL" and "owner = %s" apart: IS NOT DISTINCT FROM would not use the (owner, used_at) index.
        whose = "owner IS NULL" if owner is None else "owner = %s"
        params = (self.max_per_owner,) if owner is None else (owner, self.max_per_owner)
        with self._connection() as connection:
            cursor = connection.execute(
                f"DELETE FROM models WHERE id IN (SELECT id FROM models WHERE {whose} ORDER BY used_at DESC OFFSET %s)",
                params,
            )
            return cursor.rowcount

    def expire(self, before: float) -> int:
        """Forget the models neither made nor used since ``before``, and trim every owner to the cap."""
        with self._connection() as connection:
            expired = connection.execute("DELETE FROM models WHERE used_at < %s", (before,)).rowcount
            owners = [owner for (owner,) in connection.execute("SELECT DISTINCT owner FROM models").fetchall()]
        return expired + sum(self.trim(owner) for owner in owners)

    def count(self) -> int:
        with self._connection() as connection:
            row = connection.execute("SELECT count(*) FROM models").fetchone()
        return int(row[0]) if row is not None else 0


def _record(row: tuple[Any, ...]) -> ModelRecord:
    model_id, owner, kind, created_at, job_id, body = row
    return ModelRecord(model_id, owner, kind, created_at, job_id, bytes(body))
