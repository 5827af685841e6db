"""SQLite's WAL checkpoints, moved off the thread that commits.

In WAL mode a commit appends to the log, and by default the commit that crosses 1,000 logged pages also copies
them back into the database file and syncs it: at hundreds of small fits a second, one commit in a hundred held
the event loop for milliseconds (up to 15 ms measured), 40% of the model store's time. With the automatic
checkpoint off, a thread of our own checkpoints every second on its own connection, and SQLite releases the GIL
while it copies and syncs. Durability is unchanged (a committed transaction is in the log; a checkpoint only
moves it).

A checkpoint that never blocks a writer (PASSIVE) copies the log up to where it stood when it began. SQLite
starts the log over, at the next commit, only once a checkpoint has copied all of it; under commits that never
pause none ever does, and the log grows with everything written (950 MB after a minute of small fits). So each
round is two checkpoints: the first copies the bulk while commits go on; the second (FULL) holds SQLite's write
lock, which every process writing the file takes (the model store's is written by the fit workers too), while
it copies the few commits made meanwhile and syncs the database file, so the log is caught up and the next
commit starts it over. Writers wait for that second one at most, once a round; it waits for them (and for
readers of an older snapshot) at most ``WAIT_FOR_WRITERS_S``, and otherwise tries again next round (this
process's own writers wait on ``writer_lock`` meanwhile, rather than in SQLite's busy loop). A writer that
never paused between commits could keep it waiting; the stores' writers pause (a turn of the event loop, a
worker's next fits). A log that did grow (a reader holding an old snapshot through several rounds) is cut back
to ``LOG_LIMIT_BYTES`` when it starts over.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 1.0
LOG_LIMIT_BYTES = 16 * 1024 * 1024
WAIT_FOR_WRITERS_S = 0.05


class BackgroundCheckpoints:
    """Checkpoint the WAL of the database at ``path`` every ``every_s`` seconds from a daemon thread, and stop
    ``writer`` (a connection in WAL mode) from doing it in its own commits. ``writer_lock`` is the lock the
    writer's transactions hold (see the module's note). :meth:`close` before closing ``writer``: SQLite's last
    connection to close checkpoints whatever is left."""

    def __init__(
        self,
        path: Path,
        writer: sqlite3.Connection,
        writer_lock: threading.Lock,
        every_s: float = CHECKPOINT_EVERY_S,
    ) -> None:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute(f"PRAGMA journal_size_limit={LOG_LIMIT_BYTES}")
        self.path = path
        self.every_s = every_s
        self.checkpoints = 0  # completed rounds, for tests and curiosity
        self._writer_lock = writer_lock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"checkpoints {path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, timeout=WAIT_FOR_WRITERS_S, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA synchronous=NORMAL")  # as the writers: the log synced before, the file after
        try:
            while not self._stop.wait(self.every_s):
                self.checkpoint(db)
        finally:
            db.close()

    def checkpoint(self, db: sqlite3.Connection) -> None:
        try:
            _copy_back(db, "PASSIVE")
            # Always: what the first one reports is the log as it stood when it began, not the commits made since.
            with self._writer_lock:
                _copy_back(db, "FULL")
            self.checkpoints += 1
        except sqlite3.Error as exc:  # a full or failing disk: the writers see it too, and answer 503/507
            logger.warning("checkpoint of %s failed: %s", self.path.name, exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _copy_back(db: sqlite3.Connection, mode: str) -> None:
    db.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
