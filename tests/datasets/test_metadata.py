"""Dataset records (SQLite beside the files, or PostgreSQL) and the files DatasetStore keeps beside them: the same
behaviour on both backends."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from service.backends.postgres import PostgresDatasetMetadata
from service.datasets.store import DatasetRecord, DatasetStore, SQLiteDatasetMetadata
from service.jobs.models import EVERYONE, Access
from service.jobs.store import InvalidCursor
from tests.stores import BACKENDS


@pytest.fixture(params=BACKENDS)
def open_store(request, tmp_path):
    """``open_store()``: a DatasetStore on this test's data directory, its records in the backend's metadata."""
    if request.param == "sqlite":
        return lambda: DatasetStore(tmp_path)
    database = request.getfixturevalue("postgres_database")
    return lambda: DatasetStore(tmp_path, PostgresDatasetMetadata(database))


def _record(dataset_id: str, owner: str | None = None, created_at: float = 1.0) -> DatasetRecord:
    return DatasetRecord(dataset_id, owner, "points", 3, 2, "float64", 176, "ab" * 32, created_at)


def _add(store: DatasetStore, record: DatasetRecord) -> None:
    upload = store.new_upload()
    with open(upload, "wb") as handle:
        np.save(handle, np.zeros((record.n, record.d)))
    store.add(record, upload)


def test_a_dataset_reads_back_with_its_file_and_only_for_its_owner(open_store):
    store = open_store()
    _add(store, _record("d1", owner="alice"))
    assert store.get("d1", Access(tenant="alice")) == _record("d1", owner="alice")
    assert store.get("d1", Access(tenant="bob")) is None and store.get("d1\x00", EVERYONE) is None
    assert np.load(store.file("d1")).shape == (3, 2)
    store.close()


def test_datasets_list_newest_first_per_owner_and_page_by_id(open_store):
    store = open_store()
    for i in range(5):
        _add(store, _record(f"d{i}", owner="alice" if i % 2 else "bob", created_at=float(i)))
    first, cursor = store.list(Access(tenant="bob"), 2, None)
    second, last = store.list(Access(tenant="bob"), 2, cursor)
    assert [r.id for r in first + second] == ["d4", "d2", "d0"] and last is None
    assert [r.id for r in store.list(EVERYONE, 10, None)[0]] == ["d4", "d3", "d2", "d1", "d0"]
    with pytest.raises(InvalidCursor):
        store.list(EVERYONE, 2, "nope\x00")
    store.close()


def test_expiry_counts_from_the_last_use_and_spares_datasets_in_use(open_store):
    store = open_store()
    now = time.time()
    for dataset_id in ("idle", "fitted", "busy"):
        _add(store, _record(dataset_id, created_at=now - 100))
    store.touch("fitted")
    assert store.expire(now - 50, in_use=lambda dataset_id: dataset_id == "busy") == 1
    assert store.get("idle", EVERYONE) is None and not store.file("idle").exists()
    assert store.get("fitted", EVERYONE) and store.get("busy", EVERYONE)
    store.close()


def test_a_file_whose_record_is_gone_is_removed_at_the_next_start(open_store):
    store = open_store()
    _add(store, _record("kept"))
    _add(store, _record("orphan"))
    store.metadata.delete("orphan")  # as if the process died between the record's deletion and the file's
    store.close()
    reopened = open_store()
    assert reopened.file("kept").exists() and not reopened.file("orphan").exists()
    assert reopened.metadata.ids() == {"kept"}
    reopened.close()


def test_on_shared_storage_only_settled_orphans_are_removed(tmp_path):
    # Another replica's upload in progress (a part file, a file whose record comes next) must survive a start.
    store = DatasetStore(tmp_path)
    fresh_part, old_part = store.new_upload(), store.new_upload()
    fresh_part.write_bytes(b"x")
    old_part.write_bytes(b"x")
    fresh_file, old_file = store.file("fresh"), store.file("old")
    fresh_file.write_bytes(b"x")
    old_file.write_bytes(b"x")
    an_hour_ago = time.time() - 3601
    for path in (old_part, old_file):
        os.utime(path, (an_hour_ago, an_hour_ago))
    store.close()
    DatasetStore(tmp_path, orphan_grace_s=3600).close()
    assert fresh_part.exists() and fresh_file.exists()
    assert not old_part.exists() and not old_file.exists()


def test_the_sqlite_metadata_is_the_default_beside_the_files(tmp_path):
    store = DatasetStore(tmp_path)
    assert isinstance(store.metadata, SQLiteDatasetMetadata)
    assert (tmp_path / "datasets" / "datasets.sqlite3").exists()
    store.close()
