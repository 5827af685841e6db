"""Datasets kept on disk: one ``.npy`` file each under ``<data_dir>/datasets``, their records in SQLite.

The file is what fits read (memory-mapped); the record says what it holds and whose it is. A file is moved
into place before its record is committed, and removed after its record is deleted, so a record never names
a missing file (a crash between the two leaves at most an orphan file, removed at the next start).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from service.jobs.models import Access, new_job_id

DatasetKind = Literal["points", "coins"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    id          TEXT PRIMARY KEY,
    owner       TEXT,
    kind        TEXT NOT NULL,
    n           INTEGER NOT NULL,
    d           INTEGER NOT NULL,
    dtype       TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS datasets_by_created ON datasets (created_at DESC, id DESC);
"""


@dataclass(frozen=True)
class DatasetRecord:
    id: str
    owner: str | None
    kind: DatasetKind
    n: int
    d: int
    dtype: str
    bytes: int  # of the upload as sent
    sha256: str  # of the upload as sent: a client can check what the server received
    created_at: float

    def document(self) -> dict[str, Any]:
        """The record as the API shows it."""
        created = datetime.fromtimestamp(self.created_at, UTC).isoformat().replace("+00:00", "Z")
        return {
            "id": self.id,
            "kind": self.kind,
            "n": self.n,
            "d": self.d,
            "dtype": self.dtype,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "created_at": created,
        }


class DatasetStore:
    def __init__(self, data_dir: Path) -> None:
        self.directory = data_dir / "datasets"
        self.incoming = self.directory / "incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.directory / "datasets.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._remove_orphans()

    def close(self) -> None:
        self._db.close()

    def new_upload(self) -> Path:
        """A fresh path for an upload being received (removed at start-up if the process dies meanwhile)."""
        return self.incoming / f"{new_job_id()}.part"

    def file(self, dataset_id: str) -> Path:
        return self.directory / f"{dataset_id}.npy"

    def add(self, record: DatasetRecord, npy_file: Path) -> None:
        os.replace(npy_file, self.file(record.id))
        self._db.execute(
            "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.id, record.owner, record.kind, record.n, record.d, record.dtype, record.bytes,
             record.sha256, record.created_at),
        )  # fmt: skip

    def get(self, dataset_id: str, access: Access) -> DatasetRecord | None:
        row = self._db.execute("SELECT * FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
        record = None if row is None else DatasetRecord(*row)
        return record if record is not None and access.may_see(record) else None

    def list(self, access: Access, limit: int, cursor: str | None) -> tuple[list[DatasetRecord], str | None]:
        """Newest first; ``cursor`` is the id of the last record of the previous page."""
        where: list[str] = []
        args: list[Any] = []
        if access.owner_filter is not None:
            where.append("owner = ?")
            args.append(access.owner_filter)
        if cursor:
            after = self._db.execute("SELECT created_at, id FROM datasets WHERE id = ?", (cursor,)).fetchone()
            if after is not None:
                where.append("(created_at, id) < (?, ?)")
                args.extend(after)
        sql = "SELECT * FROM datasets" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._db.execute(sql + " ORDER BY created_at DESC, id DESC LIMIT ?", (*args, limit + 1)).fetchall()
        records = [DatasetRecord(*row) for row in rows[:limit]]
        return records, (records[-1].id if len(rows) > limit else None)

    def delete(self, dataset_id: str) -> None:
        self._db.execute("DELETE FROM datasets WHERE id = ?", (dataset_id,))
        self.file(dataset_id).unlink(missing_ok=True)

    def _remove_orphans(self) -> None:
        """Uploads cut off by a crash, and files whose record was deleted just before one."""
        known = {row[0] for row in self._db.execute("SELECT id FROM datasets")}
        for path in self.incoming.glob("*.part"):
            path.unlink(missing_ok=True)
        for path in self.directory.glob("*.npy"):
            if path.stem not in known:
                path.unlink(missing_ok=True)


def now() -> float:
    return time.time()
