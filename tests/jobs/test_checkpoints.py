"""WAL checkpoints run on their own thread: the committing connection never runs one, the log is still copied
back into the database, and nothing committed is lost across a close and reopen."""

from __future__ import annotations

import sqlite3
import time

from service.jobs.checkpoints import BackgroundCheckpoints
from service.models.store import ModelRecord, SQLiteModelStore


def test_the_writer_never_checkpoints_and_the_thread_copies_the_log_back(tmp_path):
    path = tmp_path / "t.sqlite3"
    writer = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x BLOB)")
    checkpoints = BackgroundCheckpoints(path, writer, every_s=0.02)
    try:
        assert writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        for _ in range(300):  # ~1,200 pages of log: past SQLite's automatic checkpoint, were it on
            writer.execute("INSERT INTO t VALUES (?)", (b"x" * 16_000,))
        done_before = checkpoints.checkpoints
        deadline = time.monotonic() + 30
        while checkpoints.checkpoints < done_before + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # The rows are in the database file itself now (~4.8 MB), not only in the log: the thread copied them.
        assert path.stat().st_size > 4_000_000
    finally:
        checkpoints.close()
        writer.close()
    assert not checkpoints._thread.is_alive()


def test_models_committed_between_checkpoints_survive_a_reopen(tmp_path):
    store = SQLiteModelStore(tmp_path, max_per_owner=10_000)
    records = [ModelRecord(f"m{i}", "tenant", "coins", time.time(), None, b'{"params": {}}') for i in range(500)]
    for start in range(0, 500, 7):
        store.put_many(records[start : start + 7])
    store.close()
    reopened = SQLiteModelStore(tmp_path, max_per_owner=10_000)
    try:
        assert reopened.count() == 500
    finally:
        reopened.close()
