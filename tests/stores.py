"""Store fixtures over both backends: the same tests run against SQLite and against the real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.backends.postgres import Database
from tests.servers import PostgresServer

BACKENDS = ["sqlite", "postgres"]
TABLES = "jobs, models, datasets, store_probe"


def open_database(url: str) -> Database:
    """A Database on ``url`` with short waits: a test of an outage should not sit out the production timeouts."""
    return Database(url, max_size=4, timeout=1.0, reconnect_timeout=2.0, retry_interval_s=0.2).open()


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[Database]:
    """The session's ``em`` database, migrated, its tables emptied for this test (quicker than a new database)."""
    database = open_database(postgres_server.url)
    with database.connection("the test set-up") as connection:
        connection.execute(f"TRUNCATE {TABLES}")
    yield database
    database.close()
