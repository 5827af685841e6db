"""Real Redis and PostgreSQL servers for tests, started from the Debian packages' binaries on loopback ports.

No mocks: the distributed backend's tests talk to the real servers, restart them mid-test (fault tests) and stop
them at the end of the session. Each server lives in its own temporary directory and never touches the system
services (nothing here uses systemd or the packages' default clusters).

PostgreSQL refuses to run as root: when the tests run as root, ``initdb`` and ``pg_ctl`` run as the ``postgres``
OS user (``runuser``), in a directory that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_server import free_port

INSTALL_HINT = "install the Debian packages: apt-get install -y -qq redis-server postgresql"
STARTUP_TIMEOUT_S = 30.0


class MissingServer(RuntimeError):
    pass


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class RedisServer:
    """``redis-server`` on a free loopback port. Without ``persistent``, nothing is written to disk (no RDB
    snapshots, no append-only file): a restart empties it, as a crashed cache would be."""

    def __init__(self, directory: Path, persistent: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise MissingServer(f"redis-server is not installed; {INSTALL_HINT}")
        self.binary, self.directory, self.persistent = binary, directory, persistent
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--save", ""]
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        with open(self.directory / "redis.log", "ab") as log:
            self._process = subprocess.Popen(
                [*args, "--daemonize", "no", "--logfile", "", *persistence], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._answers_ping():
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}:\n{self.log_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer within {STARTUP_TIMEOUT_S} s:\n{self.log_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()  # SIGTERM: redis saves (when persistent) and exits
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian puts them under /usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        return Path(on_path).resolve().parent
    raise MissingServer(f"PostgreSQL's server binaries (initdb, pg_ctl) are not installed; {INSTALL_HINT}")


class PostgresServer:
    """A throw-away PostgreSQL cluster: trust authentication, listening on 127.0.0.1 only (its unix socket in its
    own directory), with a database ``em``. fsync is off: a crash of the machine may lose it, which a test cluster
    does not mind; ``stop()`` is a clean (fast) shutdown, so restarts lose nothing."""

    database = "em"

    def __init__(self, directory: Path) -> None:
        self.bin_dir = postgres_bin_dir()
        self.directory = directory
        self.data_dir = directory / "data"
        self.log_file = directory / "postgres.log"
        self.port = free_port()
        self.url = self.url_of(self.database)
        # PostgreSQL will not run as root; as root, every server command runs as the postgres OS user.
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise MissingServer("running as root needs runuser (util-linux) to start PostgreSQL as postgres")
            try:
                shutil.chown(directory, user="postgres", group="postgres")
            except LookupError as exc:
                raise MissingServer(f"no postgres OS user to run PostgreSQL as; {INSTALL_HINT}") from exc
            self._as_user = [runuser, "-u", "postgres", "--"]

    def url_of(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self._as_user, str(self.bin_dir / tool), *args], capture_output=True, text=True, cwd=self.directory
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        self.start()
        self.create_database(self.database)

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.directory} -F -c max_connections=200"
        log = str(self.log_file)
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", log, "-o", options, "-w", "-t", "30", "start")

    def stop(self) -> None:
        """A fast shutdown: open sessions are ended (their clients see the connection close)."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return _port_open(self.port)

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url_of(name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg  # a test dependency; imported here so the Redis fixture does not need it

        with psycopg.connect(self.url_of(database), autocommit=True) as connection:
            connection.execute(sql.encode())

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


@contextlib.contextmanager
def server_directory(prefix: str) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A Redis server for the whole session (tests that need a clean one flush it)."""
    with server_directory("em-redis-") as directory:
        try:
            server = RedisServer(directory)
        except MissingServer as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            server.start()
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the whole session, with an empty database ``em`` (``postgres_server.url``)."""
    with server_directory("em-postgres-") as directory:
        try:
            server = PostgresServer(directory)
        except MissingServer as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            server.init()
            yield server
        finally:
            server.stop()
