"""Where job records live: the :class:`JobStore` interface and its embedded SQLite implementation.

A record outlives the process that ran it. Another backend (e.g. a shared database for several API
replicas) only has to implement :class:`JobStore`.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from service.jobs.checkpoints import BackgroundCheckpoints
from service.jobs.models import JobRecord, JobStatus, ResultTooLarge, StorageError, StorageFull
from service.jobs.rows import COLUMNS as _COLUMNS
from service.jobs.rows import InvalidCursor, decode_cursor, dump, dump_replay, encode_cursor, record_of, row_of

__all__ = ["DataDirInUse", "InvalidCursor", "JobFilter", "JobStore", "SQLiteJobStore", "execute", "newest_first"]


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a listing shows (None: any)."""

    status: JobStatus | None = None
    kind: str | None = None
    owner: str | None = None  # only this tenant's jobs


class JobStore(Protocol):
    def insert(self, record: JobRecord) -> None: ...
    def get(self, job_id: str) -> JobRecord | None: ...
    def list(
        self, limit: int, cursor: str | None = None, where: JobFilter | None = None
    ) -> tuple[list[JobRecord], str | None]: ...
    def mark_running(self, job_id: str, started_at: float) -> None: ...
    def update_progress(self, job_id: str, progress: dict[str, Any]) -> None: ...
    def finish(self, record: JobRecord, picture: bytes | None = None) -> None: ...
    def picture(self, job_id: str) -> bytes | None:
        """What a succeeded job kept for its pictures (None: nothing, e.g. a job from before pictures)."""
        ...

    def fail_unfinished(self, message: str, now: float) -> int: ...
    def purge(self, finished_before: float) -> int: ...
    def size_bytes(self) -> int: ...
    def evict_oldest(self, max_bytes: int) -> int: ...
    def probe(self) -> None: ...
    def close(self) -> None: ...


def execute(db: sqlite3.Connection, sql: str, params: tuple[Any, ...], what: str) -> sqlite3.Cursor:
    """``db.execute``, with SQLite's refusals as the service's storage errors (see :func:`storage_errors`)."""
    with storage_errors(what):
        return db.execute(sql, params)


@contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """SQLite's refusals of a write to ``what``, raised as the service's storage errors; other errors as they are."""
    try:
        yield
    except sqlite3.Error as exc:
        mapped = _refusal(exc, what)
        if mapped is exc:
            raise
        raise mapped from exc


def _refusal(exc: sqlite3.Error, what: str) -> Exception:
    """SQLite's refusal of a write as the service's storage error: 507 when the disk is full, 503 when the file
    cannot be written, a result too large for a row; ``exc`` itself for anything else."""
    if isinstance(exc, sqlite3.DataError):  # a value over SQLite's limits
        return ResultTooLarge(str(exc))
    if isinstance(exc, sqlite3.OperationalError):
        primary = exc.sqlite_errorcode & 0xFF  # extended codes (SQLITE_IOERR_WRITE, ...) carry it
        if primary == sqlite3.SQLITE_FULL:
            return StorageFull(str(exc))
        if primary in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
            return StorageError(f"{what} cannot be written ({exc})")
        if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):  # another process held it past the wait
            return StorageError(f"{what} is busy ({exc}); retry later")
    return exc


def newest_first(
    execute: Callable[[str, tuple[Any, ...]], sqlite3.Cursor],
    table: str,
    columns: str,
    owner: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[tuple[Any, ...]], str | None]:
    """One page of ``table``'s rows (``columns``, the id first), newest first, of ``owner``'s (None: everyone's);
    ``cursor`` is the id of the last row of the previous page. A table with ``id``, ``owner`` and
    ``created_at`` columns and an index on ``(created_at DESC, id DESC)`` pages this way (datasets, models)."""
    where: list[str] = []
    args: list[Any] = []
    if owner is not None:
        where.append("owner = ?")
        args.append(owner)
    if cursor:
        after = execute(f"SELECT created_at, id FROM {table} WHERE id = ?", (cursor,)).fetchone()
        if after is None:
            raise InvalidCursor("cursor is not a next_cursor this listing gave (pass next_cursor back as given)")
        where.append("(created_at, id) < (?, ?)")
        args.extend(after)
    sql = f"SELECT {columns} FROM {table}" + (" WHERE " + " AND ".join(where) if where else "")
    rows = execute(sql + " ORDER BY created_at DESC, id DESC LIMIT ?", (*args, limit + 1)).fetchall()
    return rows[:limit], (rows[limit - 1][0] if len(rows) > limit else None)


class DataDirInUse(RuntimeError):
    pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL,
    request     TEXT NOT NULL,
    progress    TEXT,
    result      BLOB,
    error       TEXT,
    replay      TEXT,
    owner       TEXT,
    picture     BLOB
);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status);
"""

# Columns added after the first release, for stores created before them: (name, declaration).
_ADDED_COLUMNS = (("replay", "TEXT"), ("owner", "TEXT"), ("picture", "BLOB"))

# SQLite's own limit on one value (SQLITE_MAX_LENGTH); a larger result cannot be stored in a row.
_MAX_VALUE_BYTES = 1_000_000_000


class SQLiteJobStore:
    """One SQLite file (WAL) under the data directory, used by one service process at a time.

    The process takes an exclusive lock on ``<data_dir>/jobs.lock``: start-up marks jobs left
    running as failed, which would be wrong if another live process were running them.
    """

    def __init__(self, data_dir: Path, max_value_bytes: int = _MAX_VALUE_BYTES) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(data_dir / "jobs.lock", "w")  # noqa: SIM115 - held for the store's lifetime
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise DataDirInUse(
                f"{data_dir} is used by another running service process; give each its own EM_DATA_DIR"
            ) from None
        self.path = data_dir / "jobs.sqlite3"
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_value_bytes)
        self.max_value_bytes = max_value_bytes
        # Pages freed by retention and eviction go back to the file system (a new store only: the mode is
        # fixed when the first table is made).
        self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        self._db.executescript(_SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, declaration in _ADDED_COLUMNS:
            if name not in present:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")
        self._mutex = threading.Lock()
        self._checkpoints = BackgroundCheckpoints(self.path, self._db, self._mutex)  # submits commit on the loop

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._mutex:
            return execute(self._db, sql, params, "the job store")

    def insert(self, record: JobRecord) -> None:
        self._execute(f"INSERT INTO jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row_of(record))

    def get(self, job_id: str) -> JobRecord | None:
        row = self._execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else record_of(row)

    def list(
        self, limit: int, cursor: str | None = None, where: JobFilter | None = None
    ) -> tuple[list[JobRecord], str | None]:
        """Newest first; ``cursor`` continues after the last job of the previous page (keyset pagination)."""
        # Listing leaves the (possibly large) results and replays out: a caller fetches a job for its result.
        columns = _COLUMNS.replace("result", "NULL").replace("replay", "NULL")
        conditions: list[str] = []
        params: list[Any] = []
        if cursor is not None:
            conditions.append("(created_at, id) < (?, ?)")
            params.extend(decode_cursor(cursor))
        if where is not None and where.status is not None:
            conditions.append("status = ?")
            params.append(where.status)
        if where is not None and where.kind is not None:
            conditions.append("kind = ?")
            params.append(where.kind)
        if where is not None and where.owner is not None:
            conditions.append("owner = ?")
            params.append(where.owner)
        clause = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        rows = self._execute(
            f"SELECT {columns} FROM jobs {clause}ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit + 1)
        ).fetchall()
        records = [record_of(row) for row in rows[:limit]]
        next_cursor = encode_cursor(records[-1]) if len(rows) > limit else None
        return records, next_cursor

    def mark_running(self, job_id: str, started_at: float) -> None:
        self._execute(
            "UPDATE jobs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'",
            (started_at, job_id),
        )

    def update_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        self._execute("UPDATE jobs SET progress = ? WHERE id = ?", (json.dumps(progress), job_id))

    def finish(self, record: JobRecord, picture: bytes | None = None) -> None:
        """Commit a job's end (and what it keeps for pictures); when this returns, the result survives a crash
        of the process."""
        if record.result is not None and len(record.result) > self.max_value_bytes:
            raise ResultTooLarge(f"{len(record.result)} bytes, over the store's {self.max_value_bytes}")
        if picture is not None and len(picture) > self.max_value_bytes:
            picture = None  # the pictures then show the model alone; the result is what must be kept
        self._execute(
            "UPDATE jobs SET status = ?, started_at = ?, finished_at = ?, progress = ?, result = ?, error = ?, "
            "replay = ?, picture = ? WHERE id = ?",
            (
                record.status,
                record.started_at,
                record.finished_at,
                dump(record.progress),
                record.result,
                dump(record.error),
                dump_replay(record.replay),
                picture,
                record.id,
            ),
        )

    def picture(self, job_id: str) -> bytes | None:
        row = self._execute("SELECT picture FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else row[0]

    def fail_unfinished(self, message: str, now: float) -> int:
        """Jobs a previous process left queued or running are failed, never left running forever."""
        error = json.dumps({"type": "interrupted", "message": message})
        cursor = self._execute(
            "UPDATE jobs SET status = 'failed', finished_at = ?, error = ? WHERE status IN ('queued', 'running')",
            (now, error),
        )
        return cursor.rowcount

    def purge(self, finished_before: float) -> int:
        cursor = self._execute("DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?", (finished_before,))
        self._execute("PRAGMA incremental_vacuum")
        return cursor.rowcount

    def size_bytes(self) -> int:
        """Bytes of the store's live pages (what retention and the size cap act on)."""
        page_size = self._execute("PRAGMA page_size").fetchone()[0]
        pages = self._execute("PRAGMA page_count").fetchone()[0]
        free = self._execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * page_size)

    def evict_oldest(self, max_bytes: int) -> int:
        """Delete the oldest finished jobs until the store is at most ``max_bytes``; how many went."""
        evicted = 0
        while self.size_bytes() > max_bytes:
            cursor = self._execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at IS NOT NULL "
                "ORDER BY finished_at ASC LIMIT 16)"
            )
            if cursor.rowcount == 0:
                break  # only queued or running jobs left: they are never evicted
            evicted += cursor.rowcount
        if evicted:
            self._execute("PRAGMA incremental_vacuum")
        return evicted

    def probe(self) -> None:
        """Learn whether the store takes writes again (raises a StorageError if not): a new page, asked for and
        given back, then a tiny commit. The commit alone rewrites a page the store has, which a store at its size
        limit still allows, so a full store looked writable again at the next probe."""
        with self._mutex:
            try:
                execute(self._db, "BEGIN IMMEDIATE", (), "the job store")
                execute(self._db, "CREATE TABLE probe_space (x)", (), "the job store")  # a new root page
            finally:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
        version = self._execute("PRAGMA user_version").fetchone()[0]
        self._execute(f"PRAGMA user_version = {(int(version) + 1) % 2**31}")

    def close(self) -> None:
        self._checkpoints.close()
        with self._mutex:
            self._db.close()
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()
