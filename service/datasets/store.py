"""Datasets kept on disk: one ``.npy`` file each under ``<data_dir>/datasets``, their records in a
:class:`DatasetMetadata` (SQLite beside the files on a single host: :class:`SQLiteDatasetMetadata`).

The file is what fits read (memory-mapped); the record says what it holds and whose it is. A file is moved
into place before its record is committed, and removed after its record is deleted, so a record never names
a missing file (a crash between the two leaves at most an orphan file, removed at the next start).
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from service.jobs.models import Access, new_job_id
from service.jobs.store import newest_first

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
    created_at  REAL NOT NULL,
    used_at     REAL
);
CREATE INDEX IF NOT EXISTS datasets_by_created ON datasets (created_at DESC, id DESC);
"""
_COLUMNS = "id, owner, kind, n, d, dtype, bytes, sha256, created_at"  # a DatasetRecord's fields, in order


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


class DatasetMetadata(Protocol):
    """Where dataset records live, apart from the files they describe (which :class:`DatasetStore` keeps)."""

    def insert(self, record: DatasetRecord) -> None: ...
    def get(self, dataset_id: str) -> DatasetRecord | None: ...
    def list(self, owner: str | None, limit: int, cursor: str | None) -> tuple[list[DatasetRecord], str | None]:
        """Newest first, of ``owner``'s (None: everyone's); ``cursor`` is the id of the previous page's last one."""
        ...

    def touch(self, dataset_id: str) -> None:
        """Note a use now: retention counts from the last one."""
        ...

    def stale(self, before: float) -> builtins.list[str]:
        """The datasets neither uploaded nor used since ``before``."""
        ...

    def delete(self, dataset_id: str) -> None: ...
    def ids(self) -> set[str]: ...
    def close(self) -> None: ...


class SQLiteDatasetMetadata:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def insert(self, record: DatasetRecord) -> None:
        self._db.execute(
            f"INSERT INTO datasets ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.id, record.owner, record.kind, record.n, record.d, record.dtype, record.bytes,
             record.sha256, record.created_at),
        )  # fmt: skip

    def get(self, dataset_id: str) -> DatasetRecord | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
        return None if row is None else DatasetRecord(*row)

    def list(self, owner: str | None, limit: int, cursor: str | None) -> tuple[list[DatasetRecord], str | None]:
        rows, next_cursor = newest_first(self._db.execute, "datasets", _COLUMNS, owner, limit, cursor)
        return [DatasetRecord(*row) for row in rows], next_cursor

    def touch(self, dataset_id: str) -> None:
        self._db.execute("UPDATE datasets SET used_at = ? WHERE id = ?", (time.time(), dataset_id))

    def stale(self, before: float) -> builtins.list[str]:
        rows = self._db.execute(
            "SELECT id FROM datasets WHERE max(created_at, coalesce(used_at, 0)) < ?", (before,)
        ).fetchall()
        return [dataset_id for (dataset_id,) in rows]

    def delete(self, dataset_id: str) -> None:
        self._db.execute("DELETE FROM datasets WHERE id = ?", (dataset_id,))

    def ids(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT id FROM datasets")}


class DatasetStore:
    """The files under ``<data_dir>/datasets`` and their records in ``metadata`` (by default SQLite beside them)."""

    def __init__(self, data_dir: Path, metadata: DatasetMetadata | None = None, orphan_grace_s: float = 0.0) -> None:
        self.directory = data_dir / "datasets"
        self.incoming = self.directory / "incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.metadata = metadata or SQLiteDatasetMetadata(self.directory / "datasets.sqlite3")
        # On storage shared by several API replicas, a file without a record may be another replica's upload in
        # progress (its record comes just after the file): only files older than this are orphans.
        self.orphan_grace_s = orphan_grace_s
        self._remove_orphans()

    def close(self) -> None:
        self.metadata.close()

    def new_upload(self) -> Path:
        """A fresh path for an upload being received (removed at start-up if the process dies meanwhile)."""
        return self.incoming / f"{new_job_id()}.part"

    def file(self, dataset_id: str) -> Path:
        return self.directory / f"{dataset_id}.npy"

    def add(self, record: DatasetRecord, npy_file: Path) -> None:
        os.replace(npy_file, self.file(record.id))
        try:
            self.metadata.insert(record)
        except BaseException:
            # Refused (a database down, say): the file would be an orphan until the next start; remove it now.
            self.file(record.id).unlink(missing_ok=True)
            raise

    def get(self, dataset_id: str, access: Access) -> DatasetRecord | None:
        record = self.metadata.get(dataset_id)
        return record if record is not None and access.may_see(record) else None

    def list(self, access: Access, limit: int, cursor: str | None) -> tuple[list[DatasetRecord], str | None]:
        """Newest first; ``cursor`` is the id of the last record of the previous page."""
        return self.metadata.list(access.owner_filter, limit, cursor)

    def touch(self, dataset_id: str) -> None:
        """Note a fit of the dataset: retention counts from its last use."""
        self.metadata.touch(dataset_id)

    def expire(self, before: float, in_use: Callable[[str], bool]) -> int:
        """Delete the datasets neither uploaded nor fitted since ``before`` (unless a job fits one now)."""
        expired = [dataset_id for dataset_id in self.metadata.stale(before) if not in_use(dataset_id)]
        for dataset_id in expired:
            self.delete(dataset_id)
        return len(expired)

    def delete(self, dataset_id: str) -> None:
        self.metadata.delete(dataset_id)
        self.file(dataset_id).unlink(missing_ok=True)

    def _remove_orphans(self) -> None:
        """Uploads cut off by a crash, and files whose record was deleted just before one."""
        known = self.metadata.ids()
        settled = time.time() - self.orphan_grace_s
        for path in self.incoming.glob("*.part"):
            if _older_than(path, settled):
                path.unlink(missing_ok=True)
        for path in self.directory.glob("*.npy"):
            if path.stem not in known and _older_than(path, settled):
                path.unlink(missing_ok=True)


def _older_than(path: Path, moment: float) -> bool:
    try:
        return path.stat().st_mtime <= moment
    except FileNotFoundError:
        return False
