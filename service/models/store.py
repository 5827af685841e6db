"""Kept models: every succeeded fit's parameters (and every imported set), behind :class:`ModelStore`; in SQLite
under ``<data_dir>/models`` on a single host (:class:`SQLiteModelStore`).

A model is small (parameters, not data) and written once, before the fit that made it is shown succeeded. It
lives until its owner deletes it, until it has been neither made nor used for the retention period, or until
its owner keeps more than the cap (the least recently used go first): a busy client fitting thousands of small
models a second must not grow the store without bound.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from service.jobs.checkpoints import LOG_LIMIT_BYTES, BackgroundCheckpoints
from service.jobs.models import Access
from service.jobs.store import execute, newest_first, storage_errors

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id          TEXT PRIMARY KEY,
    owner       TEXT,
    kind        TEXT NOT NULL,
    created_at  REAL NOT NULL,
    used_at     REAL NOT NULL,
    job_id      TEXT,
    body        BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS models_by_created ON models (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS models_by_owner_use ON models (owner, used_at);
"""
_COLUMNS = "id, owner, kind, created_at, job_id, body"  # a ModelRecord's fields, in order

# Trimming an owner to the cap is one indexed DELETE; doing it on every write would double a small fit's
# store cost, so it runs on every TRIM_EVERY-th write (an owner exceeds the cap by at most that many meanwhile).
TRIM_EVERY = 256


@dataclass(frozen=True)
class ModelRecord:
    id: str
    owner: str | None
    kind: str
    created_at: float
    job_id: str | None  # the job that fitted it (None for a synchronous fit or an import)
    body: bytes  # JSON: {"params", "n_features", "covariance_type"?, "log_likelihood"?}

    def content(self) -> dict[str, Any]:
        content: dict[str, Any] = orjson.loads(self.body)
        return content

    def document(self, with_params: bool = True) -> dict[str, Any]:
        """The model as the API shows it (a listing leaves out the parameters, which can be large)."""
        content = self.content()
        if not with_params:
            content.pop("params", None)
        created = datetime.fromtimestamp(self.created_at, UTC).isoformat().replace("+00:00", "Z")
        return {"id": self.id, "kind": self.kind, **content, "created_at": created, "job_id": self.job_id}


class ModelStore(Protocol):
    """Where kept models live. ``put_many`` is all or none; ``list`` pages newest first (``cursor``: the id of the
    previous page's last model); ``trim`` and ``expire`` enforce ``max_per_owner`` and retention."""

    max_per_owner: int

    def put(self, record: ModelRecord) -> None: ...
    def put_many(self, records: list[ModelRecord]) -> None: ...
    def get(self, model_id: str, access: Access) -> ModelRecord | None: ...
    def list(self, access: Access, limit: int, cursor: str | None) -> tuple[list[ModelRecord], str | None]: ...
    def touch(self, model_id: str) -> None: ...
    def delete(self, model_id: str) -> bool: ...
    def trim(self, owner: str | None) -> int: ...
    def expire(self, before: float) -> int: ...
    def count(self) -> int: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class SQLiteModelFile:
    """The model store as another process opens it to add models (a fit worker keeping a small fit's)."""

    data_dir: Path
    max_per_owner: int

    def open(self) -> SQLiteModelStore:
        return SQLiteModelStore(self.data_dir, self.max_per_owner, checkpoints=False)


class SQLiteModelStore:
    """The model store's SQLite file. Several processes may write it (the API process, and the fit workers that
    keep small fits' models): each write is a short transaction that takes SQLite's write lock when it begins,
    and waits for it (up to Python's default 5 s) while another process holds it."""

    def __init__(self, data_dir: Path, max_per_owner: int, *, checkpoints: bool = True) -> None:
        """``checkpoints``: this process checkpoints the log (the API process's store does); a worker's
        connection leaves them to it."""
        directory = data_dir / "models"
        directory.mkdir(parents=True, exist_ok=True)
        self.max_per_owner = max_per_owner
        self.file = SQLiteModelFile(data_dir, max_per_owner)
        path = directory / "models.sqlite3"
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        self._db.executescript(_SCHEMA)
        self._mutex = threading.Lock()  # written from the event loop and from the job manager's threads
        self._checkpoints: BackgroundCheckpoints | None = None
        if checkpoints:
            self._checkpoints = BackgroundCheckpoints(path, self._db, self._mutex)
        else:
            # As BackgroundCheckpoints sets the API process's connection: the checkpoints are its, and whichever
            # connection starts the log over cuts it back.
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.execute(f"PRAGMA journal_size_limit={LOG_LIMIT_BYTES}")
        self._writes = 0

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._mutex:
            return execute(self._db, sql, params, "the model store")

    def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.close()
        self._db.close()

    def put(self, record: ModelRecord) -> None:
        """Keep ``record`` (a StorageError if the store refuses it: the fit then fails rather than lose it)."""
        self.put_many([record])

    def put_many(self, records: list[ModelRecord]) -> None:
        """Keep ``records`` in one transaction: all or none (a commit costs more than the rows it writes)."""
        rows = [(r.id, r.owner, r.kind, r.created_at, r.job_id, r.body, r.created_at) for r in records]
        with self._mutex, storage_errors("the model store"):
            self._db.execute("BEGIN IMMEDIATE")  # the write lock now, or wait for it
            try:
                self._db.executemany(f"INSERT INTO models ({_COLUMNS}, used_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.rollback()
                raise
        for record in records:
            self._writes += 1
            if self._writes % TRIM_EVERY == 0:
                self.trim(record.owner)

    def get(self, model_id: str, access: Access) -> ModelRecord | None:
        row = self._execute(f"SELECT {_COLUMNS} FROM models WHERE id = ?", (model_id,)).fetchone()
        record = None if row is None else ModelRecord(*row)
        return record if record is not None and access.may_see(record) else None

    def list(self, access: Access, limit: int, cursor: str | None) -> tuple[list[ModelRecord], str | None]:
        """Newest first; ``cursor`` is the id of the last model of the previous page."""
        rows, next_cursor = newest_first(self._execute, "models", _COLUMNS, access.owner_filter, limit, cursor)
        return [ModelRecord(*row) for row in rows], next_cursor

    def touch(self, model_id: str) -> None:
        """Note a use (predict, score, sample): retention and the cap count from the last one."""
        self._execute("UPDATE models SET used_at = ? WHERE id = ?", (time.time(), model_id))

    def delete(self, model_id: str) -> bool:
        return self._execute("DELETE FROM models WHERE id = ?", (model_id,)).rowcount > 0

    def trim(self, owner: str | None) -> int:
        """Forget ``owner``'s least recently used models past the cap."""
        cursor = self._execute(
            "DELETE FROM models WHERE id IN (SELECT id FROM models WHERE owner IS ? "
            "ORDER BY used_at DESC LIMIT -1 OFFSET ?)",
            (owner, self.max_per_owner),
        )
        return cursor.rowcount

    def expire(self, before: float) -> int:
        """Forget the models neither made nor used since ``before``, and trim every owner to the cap."""
        expired = self._execute("DELETE FROM models WHERE used_at < ?", (before,)).rowcount
        owners = [owner for (owner,) in self._execute("SELECT DISTINCT owner FROM models").fetchall()]
        expired += sum(self.trim(owner) for owner in owners)
        self._execute("PRAGMA incremental_vacuum")
        return expired

    def count(self) -> int:
        return int(self._execute("SELECT count(*) FROM models").fetchone()[0])


class GroupCommit:
    """Puts made within one turn of the event loop, committed together at the next turn.

    A synchronous fit answers only once its model is stored; at hundreds of small fits a second, a commit each
    cost more than the fit's own arithmetic. Each ``put`` still waits for its own record's commit (and gets the
    StorageError if the batch is refused), so nothing is answered before it is stored.
    """

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._pending: list[tuple[ModelRecord, asyncio.Future[None]]] = []

    async def put(self, record: ModelRecord) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((record, done))
        await done

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            self.store.put_many([record for record, _ in batch])
        except Exception as exc:  # every waiter gets the store's refusal
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        for _, done in batch:
            if not done.done():
                done.set_result(None)
