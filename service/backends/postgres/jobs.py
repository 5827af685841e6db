"""Job records in PostgreSQL: :class:`~service.jobs.store.JobStore` for API replicas sharing one database."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import Any

from service.backends.postgres.database import Connection, Database
from service.backends.postgres.paging import storable
from service.jobs import rows as job_rows
from service.jobs.models import JobRecord, ResultTooLarge
from service.jobs.rows import COLUMNS, InvalidCursor
from service.jobs.store import JobFilter

# Under PostgreSQL's 1 GB limit on one value, with room for the rest of the statement.
_MAX_VALUE_BYTES = 1_000_000_000

# What a row holds, as stored (compressed values count compressed), plus the tuple header. The table's size on
# disk (pg_total_relation_size) does not shrink when rows are deleted, only once vacuum hands the space back:
# eviction, which deletes until the size is under the cap, has to measure what the live rows hold.
_ROW_BYTES = "24 + " + " + ".join(
    f"coalesce(pg_column_size({column}), 0)" for column in (*COLUMNS.split(", "), "picture")
)

_PLACEHOLDERS = ", ".join(["%s"] * len(COLUMNS.split(", ")))
_WHAT = "the job store"


class PostgresJobStore:
    """Jobs in the ``jobs`` table of ``database`` (its schema made by the database's migrations).

    Unlike the SQLite store, several processes may use it at once; :meth:`fail_unfinished` fails every queued or
    running job in the table, so only a deployment where one process owns all jobs may call it at start-up.
    """

    def __init__(self, database: Database, max_value_bytes: int = _MAX_VALUE_BYTES) -> None:
        self.database = database
        self.max_value_bytes = max_value_bytes

    def _connection(self) -> AbstractContextManager[Connection]:
        return self.database.connection(_WHAT)

    def insert(self, record: JobRecord) -> None:
        with self._connection() as connection:
            connection.execute(
                f"INSERT INTO jobs ({COLUMNS}) VALUES ({', '.join(['%s'] * 12)})", job_rows.row_of(record)
            )

    def get(self, job_id: str) -> JobRecord | None:
        if not storable(job_id):
            return None
        with self._connection() as connection:
            # binary: the result comes back as its bytes, not as hex text twice its size
            row = connection.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = %s", (job_id,), binary=True).fetchone()
        return None if row is None else job_rows.record_of(row)

    def list(
        self, limit: int, cursor: str | None = None, where: JobFilter | None = None
    ) -> tuple[list[JobRecord], str | None]:
        """Newest first; ``cursor`` continues after the last job of the previous page (keyset pagination)."""
        columns = COLUMNS.replace("result", "NULL::bytea").replace("replay", "NULL::text")  # as SQLite's: left out
        conditions: list[str] = []
        params: list[Any] = []
        if cursor is not None:
            created_at, job_id = job_rows.decode_cursor(cursor)
            if not storable(job_id):
                raise InvalidCursor(job_rows.FOREIGN_CURSOR)
            conditions.append("(created_at, id) < (%s, %s)")
            params.extend((created_at, job_id))
        for column, value in _filters(where):
            if not storable(value):
                return [], None  # no job has such a kind or owner
            conditions.append(f"{column} = %s")
            params.append(value)
        clause = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        with self._connection() as connection:
            rows = connection.execute(
                f"SELECT {columns} FROM jobs {clause}ORDER BY created_at DESC, id DESC LIMIT %s", (*params, limit + 1)
            ).fetchall()
        records = [job_rows.record_of(row) for row in rows[:limit]]
        return records, (job_rows.encode_cursor(records[-1]) if len(rows) > limit else None)

    def mark_running(self, job_id: str, started_at: float) -> None:
        with self._connection() as connection:
            connection.execute(
                "UPDATE jobs SET status = 'running', started_at = %s WHERE id = %s AND status = 'queued'",
                (started_at, job_id),
            )

    def update_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        with self._connection() as connection:
            connection.execute("UPDATE jobs SET progress = %s WHERE id = %s", (json.dumps(progress), job_id))

    def finish(self, record: JobRecord, picture: bytes | None = None) -> None:
        """Commit a job's end (and what it keeps for pictures); when this returns, the result is committed."""
        if record.result is not None and len(record.result) > self.max_value_bytes:
            raise ResultTooLarge(f"{len(record.result)} bytes, over the store's {self.max_value_bytes}")
        if picture is not None and len(picture) > self.max_value_bytes:
            picture = None  # the pictures then show the model alone; the result is what must be kept
        with self._connection() as connection:
            connection.execute(
                "UPDATE jobs SET status = %s, started_at = %s, finished_at = %s, progress = %s, result = %s, "
                "error = %s, replay = %s, picture = %s WHERE id = %s",
                (
                    record.status,
                    record.started_at,
                    record.finished_at,
                    job_rows.dump(record.progress),
                    record.result,
                    job_rows.dump(record.error),
                    job_rows.dump_replay(record.replay),
                    picture,
                    record.id,
                ),
            )

    def picture(self, job_id: str) -> bytes | None:
        if not storable(job_id):
            return None
        with self._connection() as connection:
            row = connection.execute("SELECT picture FROM jobs WHERE id = %s", (job_id,), binary=True).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def fail_unfinished(self, message: str, now: float) -> int:
        """Jobs left queued or running are failed, never left running forever (see the class's note)."""
        error = json.dumps({"type": "interrupted", "message": message})
        with self._connection() as connection:
            cursor = connection.execute(
                "UPDATE jobs SET status = 'failed', finished_at = %s, error = %s WHERE status IN ('queued', 'running')",
                (now, error),
            )
            return cursor.rowcount

    def purge(self, finished_before: float) -> int:
        # Autovacuum makes the deleted rows' space reusable; nothing to compact by hand as SQLite's file is.
        with self._connection() as connection:
            cursor = connection.execute(
                "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < %s", (finished_before,)
            )
            return cursor.rowcount

    def size_bytes(self) -> int:
        """Bytes the job rows hold (what retention and the size cap act on)."""
        with self._connection() as connection:
            row = connection.execute(f"SELECT coalesce(sum({_ROW_BYTES}), 0) FROM jobs").fetchone()
        return int(row[0]) if row is not None else 0

    def evict_oldest(self, max_bytes: int) -> int:
        """Delete the oldest finished jobs until the store is at most ``max_bytes``; how many went.

        One statement: a finished job goes when what is left, counting it, is over the cap (queued and running jobs
        are never evicted)."""
        with self._connection() as connection:
            cursor = connection.execute(
                f"""
                WITH sized AS (SELECT id, finished_at, {_ROW_BYTES} AS bytes FROM jobs),
                total AS (SELECT coalesce(sum(bytes), 0) AS bytes FROM sized),
                oldest AS (
                    SELECT id, sum(bytes) OVER (ORDER BY finished_at, id) - bytes AS freed_before
                    FROM sized WHERE finished_at IS NOT NULL
                )
                DELETE FROM jobs WHERE id IN (
                    SELECT oldest.id FROM oldest, total WHERE total.bytes - oldest.freed_before > %s
                )
                """,
                (max_bytes,),
            )
            return cursor.rowcount

    def probe(self) -> None:
        """A tiny write, to learn whether the store takes writes again (raises a StorageError if not)."""
        with self._connection() as connection:
            connection.execute(
                "INSERT INTO store_probe (id, probed_at) VALUES (1, now()) "
                "ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at"
            )

    def close(self) -> None:
        """Nothing of its own to close: the pool is the :class:`Database`'s, shared with the other stores."""


def _filters(where: JobFilter | None) -> list[tuple[str, str]]:
    if where is None:
        return []
    pairs = (("status", where.status), ("kind", where.kind), ("owner", where.owner))
    return [(column, value) for column, value in pairs if value is not None]
