"""A distributed deployment for tests: real Redis and PostgreSQL (tests/servers.py), real worker processes
(``python -m service.worker``), and apps configured with ``EM_BACKEND=distributed`` against them.

Each cluster gets its own database and queue name, so clusters of different tests never share jobs.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.backends.postgres import Database
from service.backends.queued.channel import key
from service.settings import Settings
from tests.servers import PostgresServer, RedisServer

REPO = Path(__file__).resolve().parents[1]


class Cluster:
    def __init__(self, redis_server: RedisServer, postgres_server: PostgresServer, data_dir: Path) -> None:
        self.redis, self.postgres = redis_server, postgres_server
        name = "em_" + secrets.token_hex(4)
        self.database_url = postgres_server.create_database(name)
        Database(self.database_url).open().close()  # migrated once, so a reset has tables to empty
        self.queue_name = name
        self.data_dir = data_dir
        self.workers: list[subprocess.Popen[bytes]] = []
        self._logs: list[Path] = []

    @property
    def env(self) -> dict[str, str]:
        return {
            "EM_BACKEND": "distributed",
            "EM_DATABASE_URL": self.database_url,
            "EM_REDIS_URL": self.redis.url,
            "EM_QUEUE_NAME": self.queue_name,
            "EM_DATA_DIR": str(self.data_dir),
            "EM_LOG_LEVEL": "WARNING",
            "EM_REAPER_INTERVAL_S": "0.5",
        }

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "backend": "distributed",
            "database_url": self.database_url,
            "redis_url": self.redis.url,
            "queue_name": self.queue_name,
            "data_dir": self.data_dir,
            "reaper_interval_s": 0.5,
        }
        return Settings(**{**values, **overrides})  # type: ignore[arg-type]

    def start_worker(self, processes: int = 1, **env: str) -> subprocess.Popen[bytes]:
        """``python -m service.worker`` with this cluster's settings (and ``env``'s: EM_* names)."""
        log = Path(tempfile.mkstemp(prefix="em-worker-", suffix=".log")[1])
        self._logs.append(log)
        worker = subprocess.Popen(
            [sys.executable, "-m", "service.worker", "--processes", str(processes)],
            cwd=REPO,
            env={**os.environ, **self.env, **env},
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
            start_new_session=True,  # its own process group: a test can kill the worker and its horses at once
        )
        self.workers.append(worker)
        return worker

    def reset(self) -> None:
        """Between tests: no job, model or dataset left, nothing queued; a job still running is cancelled."""
        import psycopg
        import redis
        from rq import Queue

        with psycopg.connect(self.database_url, autocommit=True) as connection:
            connection.execute("TRUNCATE jobs, models, datasets, store_probe")
        client = redis.Redis.from_url(self.redis.url)
        try:
            Queue(self.queue_name, connection=client).empty()
            for job_key in client.scan_iter(match="em:*:beat"):
                job_id = job_key.decode().split("{")[1].split("}")[0]
                client.set(key(job_id, "cancel"), b"1", ex=600)
        finally:
            client.close()

    def worker_log(self) -> str:
        return "\n".join(log.read_text(errors="replace")[-4000:] for log in self._logs)

    def stop(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.terminate()  # the pool's parent stops its workers (a signal to the group left registrations)
        deadline = time.monotonic() + 10
        for worker in self.workers:
            try:
                worker.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        for log in self._logs:
            log.unlink(missing_ok=True)


@contextmanager
def cluster(redis_server: RedisServer, postgres_server: PostgresServer, workers: int = 2) -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="em-shared-") as shared:
        running = Cluster(redis_server, postgres_server, Path(shared))
        try:
            if workers:
                running.start_worker(workers)
            yield running
        finally:
            running.stop()


def forget_live_events(settings: Settings, job_id: str) -> None:
    """On the distributed backend, drop what Redis holds of a job (as its expiry would); locally, nothing."""
    if settings.backend != "distributed" or settings.redis_url is None:
        return
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.delete(*client.keys(f"em:{{{job_id}}}:*"))
    finally:
        client.close()
