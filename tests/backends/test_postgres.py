"""The PostgreSQL backend against a real server: migrations (once, idempotent, safe for replicas starting
together), and an outage (a restart) seen as the service's storage error, never a psycopg exception, with
recovery by itself once the server is back."""

from __future__ import annotations

import itertools
import threading
import time

import psycopg
import pytest

from service.backends.postgres import Database, PostgresJobStore, PostgresModelStore
from service.backends.postgres.migrations import MIGRATIONS
from service.jobs.models import EVERYONE, JobRecord, StorageError
from service.models.store import ModelRecord
from tests.stores import open_database

ALL_VERSIONS = [step.version for step in MIGRATIONS]
_names = itertools.count()


@pytest.fixture
def empty_database_url(postgres_server):
    """A database of its own, with no schema yet, dropped after the test."""
    name = f"em_migrations_{next(_names)}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


def _migrations_recorded(url: str) -> list[tuple[int, int]]:
    with psycopg.connect(url) as connection:
        return connection.execute("SELECT version, count(*) FROM schema_migrations GROUP BY 1 ORDER BY 1").fetchall()


def test_migrations_run_on_open_and_a_second_open_applies_nothing(empty_database_url):
    first = Database(empty_database_url).open()
    first.close()
    second = Database(empty_database_url).open()
    second.close()
    assert first.applied_migrations == ALL_VERSIONS and second.applied_migrations == []
    assert _migrations_recorded(empty_database_url) == [(version, 1) for version in ALL_VERSIONS]


def test_replicas_starting_together_migrate_once(empty_database_url):
    databases = [Database(empty_database_url) for _ in range(3)]
    start, failures = threading.Barrier(len(databases)), []

    def open_one(database: Database) -> None:
        start.wait()
        try:
            database.open()
        except Exception as exc:  # any failure is the test's to report
            failures.append(exc)

    threads = [threading.Thread(target=open_one, args=(database,)) for database in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for database in databases:
        database.close()
    assert failures == []
    # One replica migrated; the others waited on the lock, then found nothing left to do.
    assert sorted(database.applied_migrations for database in databases) == [[], [], ALL_VERSIONS]
    assert _migrations_recorded(empty_database_url) == [(version, 1) for version in ALL_VERSIONS]


def test_an_unreachable_server_at_start_up_is_a_storage_error(postgres_server):
    with pytest.raises(StorageError, match="cannot be reached"):
        Database(postgres_server.url_of("em").replace(str(postgres_server.port), "1"), timeout=0.5).open()


def _eventually(operation, timeout_s: float = 20.0):
    """``operation()``'s value once it stops raising StorageError (the pool reconnecting), within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return operation()
        except StorageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_restart_is_a_storage_error_while_down_and_the_stores_recover_by_themselves(postgres_server):
    database = open_database(postgres_server.url)
    jobs, models = PostgresJobStore(database), PostgresModelStore(database, max_per_owner=10)
    jobs.insert(JobRecord(id="before", kind="coins", status="queued", created_at=1.0))
    models.put(ModelRecord("m-before", None, "coins", 1.0, None, b"{}"))
    postgres_server.stop()
    try:
        for operation in (
            lambda: jobs.get("before"),
            lambda: jobs.insert(JobRecord(id="during", kind="coins", status="queued", created_at=2.0)),
            jobs.probe,
            lambda: models.get("m-before", EVERYONE),
        ):
            with pytest.raises(StorageError, match="unavailable") as raised:
                operation()
            assert raised.type is StorageError  # the service's error, not psycopg's (a 503, not a 500)
        # Once found gone, the server is not waited for again at every call: the caller gets its 503 at once,
        # without asking the pool for a connection (which waits up to the pool's timeout for one).
        asked = []
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(database.pool, "connection", lambda *args, **kwargs: asked.append(args))
            with pytest.raises(StorageError, match="unavailable"):
                jobs.size_bytes()
        assert asked == []
    finally:
        postgres_server.start()
    assert _eventually(lambda: jobs.get("before")).id == "before"
    jobs.insert(JobRecord(id="after", kind="coins", status="queued", created_at=3.0))
    assert [r.id for r in jobs.list(10)[0]] == ["after", "before"]
    assert models.get("m-before", EVERYONE) is not None
    jobs.probe()
    database.close()


def test_a_restart_between_operations_is_not_seen_at_all(postgres_server):
    # The pool checks a connection before handing it out: one the restart cut is replaced, not used.
    database = open_database(postgres_server.url)
    jobs = PostgresJobStore(database)
    jobs.insert(JobRecord(id="kept", kind="coins", status="queued", created_at=1.0))
    postgres_server.restart()
    assert jobs.get("kept").id == "kept"
    database.close()
