"""SQLite's WAL checkpoints, moved off the thread that commits.

In WAL mode a commit appends to the log, and by default the commit that crosses 1,000 logged pages also copies
them back into the database file and syncs it: at hundreds of small fits a second, one commit in a hundred held
the event loop for milliseconds (up to 15 ms measured), 40% of the model store's time. With the automatic
checkpoint off, a thread of our own runs a PASSIVE checkpoint every second on its own connection: it never
blocks a writer, and SQLite releases the GIL while it copies and syncs. Durability is unchanged (a committed
transaction is in the log; a checkpoint only moves it).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 1.0


class BackgroundCheckpoints:
    """Checkpoint the WAL of the database at ``path`` every ``every_s`` seconds from a daemon thread, and stop
    ``writer`` (a connection in WAL mode) from doing it in its own commits. :meth:`close` before closing
    ``writer``: SQLite's last connection to close checkpoints whatever is left."""

    def __init__(self, path: Path, writer: sqlite3.Connection, every_s: float = CHECKPOINT_EVERY_S) -> None:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        self.path = path
        self.every_s = every_s
        self.checkpoints = 0  # completed, for tests and curiosity
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"checkpoints {path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            while not self._stop.wait(self.every_s):
                self.checkpoint(db)
        finally:
            db.close()

    def checkpoint(self, db: sqlite3.Connection) -> None:
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.checkpoints += 1
        except sqlite3.Error as exc:  # a full or failing disk: the writers see it too, and answer 503/507
            logger.warning("checkpoint of %s failed: %s", self.path.name, exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
