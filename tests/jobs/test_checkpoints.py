"""WAL checkpoints run on their own thread: the committing connection never runs one, the log is still copied
back into the database, and nothing committed is lost across a close and reopen."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import threading
import time

from service.jobs.checkpoints import LOG_LIMIT_BYTES, BackgroundCheckpoints
from service.models.store import ModelRecord, SQLiteModelStore


def test_the_writer_never_checkpoints_and_the_thread_copies_the_log_back(tmp_path):
    path = tmp_path / "t.sqlite3"
    writer = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x BLOB)")
    checkpoints = BackgroundCheckpoints(path, writer, threading.Lock(), every_s=0.02)
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


def test_the_log_stays_bounded_while_commits_never_pause(tmp_path):
    # A PASSIVE checkpoint copies the log up to where it stood when it began; under commits that never pause
    # it never catches up, so SQLite never starts the log over and it grows with everything ever written
    # (950 MB after a minute of small fits). The log must start over once a checkpoint has caught up.
    path = tmp_path / "t.sqlite3"
    writer = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA synchronous=NORMAL")
    writer.execute("CREATE TABLE t (x BLOB)")
    lock = threading.Lock()
    checkpoints = BackgroundCheckpoints(path, writer, writer_lock=lock, every_s=0.05)
    wal = path.with_name(path.name + "-wal")
    largest_log = written = 0
    try:
        while written < 80_000_000 or checkpoints.checkpoints < 10:
            with lock:  # as the stores' commits do
                writer.execute("BEGIN")
                writer.execute("INSERT INTO t VALUES (?)", (b"x" * 32_000,))
                writer.execute("COMMIT")
            written += 32_000
            largest_log = max(largest_log, wal.stat().st_size)
            time.sleep(0.0002)  # the event loop's other work between two commits
    finally:
        checkpoints.close()
        writer.close()
    # Cut back to LOG_LIMIT_BYTES when it starts over; a round's commits (0.05 s here) on top of that at most.
    assert largest_log < LOG_LIMIT_BYTES + 16_000_000, f"the log grew to {largest_log / 1e6:.0f} MB"


_OTHER_PROCESS_WRITER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA synchronous=NORMAL")
db.execute("PRAGMA wal_autocheckpoint=0")  # as a fit worker's model store: checkpoints are the API process's
stop_at = time.monotonic() + float(sys.argv[2])
while time.monotonic() < stop_at:  # the table stays small; the log would not
    db.execute("BEGIN IMMEDIATE")
    row = db.execute("INSERT INTO t VALUES (?)", (b"x" * 32_000,)).lastrowid
    db.execute("DELETE FROM t WHERE rowid < ?", (row - 8,))
    db.execute("COMMIT")
    time.sleep(0.0003)  # a fit worker solves its next batch of small fits between two commits
"""


def test_the_log_stays_bounded_while_another_process_commits(tmp_path):
    # The fit workers write the model store too, outside this process's writer lock: the second checkpoint of a
    # round must hold SQLite's own write lock for the log to be caught up (and start over), or it grows as above.
    path = tmp_path / "t.sqlite3"
    writer = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x BLOB)")
    checkpoints = BackgroundCheckpoints(path, writer, writer_lock=threading.Lock(), every_s=0.05)
    wal = path.with_name(path.name + "-wal")
    largest_log = 0
    other = subprocess.Popen([sys.executable, "-c", _OTHER_PROCESS_WRITER, str(path), "2.0"])
    try:
        while other.poll() is None:
            with contextlib.suppress(FileNotFoundError):
                largest_log = max(largest_log, wal.stat().st_size)
            time.sleep(0.001)
    finally:
        other.kill()
        checkpoints.close()
        writer.close()
    assert other.returncode == 0
    assert checkpoints.checkpoints >= 3
    assert largest_log < LOG_LIMIT_BYTES + 16_000_000, f"the log grew to {largest_log / 1e6:.0f} MB"
