"""One connection pool to the service's PostgreSQL database, and the one place psycopg's failures become the
service's storage errors.

A store never sees a psycopg exception for an unreachable or refusing server: it gets the same
:class:`~service.jobs.models.StorageError` (503 with Retry-After) the SQLite stores raise for an unwritable disk,
or :class:`~service.jobs.models.StorageFull` (507) for a full one. Anything else (a bug in a query, a constraint)
is left as it is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from service.backends.postgres.migrations import migrate
from service.jobs.models import ResultTooLarge, StorageError, StorageFull

logger = logging.getLogger("service.backends.postgres")

Connection = psycopg.Connection[tuple[Any, ...]]

# Failures that say the server (or the way to it) is gone, not that a statement was wrong.
_SERVER_GONE = (PoolTimeout, pg_errors.AdminShutdown, pg_errors.CrashShutdown, pg_errors.CannotConnectNow)


class Database:
    """A pool of autocommit connections to ``url``; :meth:`open` connects and migrates the schema.

    ``timeout``: how long an operation waits for a connection (from a busy pool, or while reconnecting) before it
    fails with a StorageError. ``reconnect_timeout`` bounds the pool's backoff between reconnection attempts
    (its default, five minutes, could leave a recovered server unused for minutes). After the server was found
    gone, operations fail at once for ``retry_interval_s`` instead of each waiting ``timeout``: a request is
    answered 503 promptly, and a caller on the event loop is not held meanwhile. A pool that had no connection
    to give for ``timeout`` counts as gone too, even with the server up: it is overloaded, and shedding requests
    for a moment is what the 503 is for.
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 5.0,
        connect_timeout_s: int = 5,
        reconnect_timeout: float = 10.0,
        retry_interval_s: float = 1.0,
    ) -> None:
        self.url = url
        self.retry_interval_s = retry_interval_s
        self.pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            # A connection the server dropped (a restart) is found out and replaced before an operation uses it.
            check=ConnectionPool.check_connection,
            kwargs={"autocommit": True, "connect_timeout": connect_timeout_s},
            timeout=timeout,
            reconnect_timeout=reconnect_timeout,
            name="em-postgres",
        )
        self.applied_migrations: list[int] = []  # what this process's open() applied (none: already up to date)
        self._gone_until = 0.0  # time.monotonic() before which the server is taken to be still gone
        self._gone_reason = ""
        self._lock = threading.Lock()

    def open(self) -> Database:
        """Connect (a StorageError if the server cannot be reached within the pool's timeout) and migrate."""
        try:
            self.pool.open(wait=True, timeout=self.pool.timeout)
        except PoolTimeout as exc:
            self.pool.close()
            raise StorageError(f"PostgreSQL at {_without_password(self.url)} cannot be reached ({exc})") from exc
        try:
            with self.connection("the database") as connection:
                self.applied_migrations = migrate(connection)
        except BaseException:
            self.pool.close()
            raise
        if self.applied_migrations:
            logger.info("applied schema migrations %s", self.applied_migrations)
        return self

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def connection(self, what: str) -> Iterator[Connection]:
        """A pooled connection for one operation on ``what`` (named in the error a failure raises)."""
        if time.monotonic() < self._gone_until:
            raise StorageError(f"{what} is unavailable ({self._gone_reason}); retry later")
        connection: Connection | None = None
        try:
            with self.pool.connection() as connection:
                yield connection
        except pg_errors.DiskFull as exc:
            raise StorageFull(str(exc).strip()) from exc
        except pg_errors.ProgramLimitExceeded as exc:  # a value over PostgreSQL's limits
            raise ResultTooLarge(str(exc).strip()) from exc
        except pg_errors.ReadOnlySqlTransaction as exc:  # a standby, or a database set read-only
            raise StorageError(f"{what} cannot be written ({str(exc).strip()})") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            lost = connection is not None and (connection.broken or connection.closed)
            if not (lost or isinstance(exc, _SERVER_GONE)):
                if isinstance(exc, psycopg.InterfaceError):
                    raise  # a misuse of the driver, not the server: a bug to see, not a 503
                raise StorageError(f"{what} failed ({str(exc).strip()})") from exc
            self._server_gone(str(exc).strip() or type(exc).__name__)
            raise StorageError(f"{what} is unavailable ({self._gone_reason}); retry later") from exc

    def _server_gone(self, reason: str) -> None:
        with self._lock:
            if time.monotonic() >= self._gone_until:
                logger.warning("PostgreSQL is unavailable: %s", reason)
            self._gone_until = time.monotonic() + self.retry_interval_s
            self._gone_reason = f"PostgreSQL: {reason}"


def _without_password(url: str) -> str:
    """``url`` fit for a log line or an error message."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    info.pop("password", None)
    return " ".join(f"{key}={value}" for key, value in info.items())
