"""Scale-out: jobs/s of the distributed backend (Redis + PostgreSQL + RQ workers) against the local one, and what
each job and each iteration event costs Redis and PostgreSQL (the numbers behind README "Scaling out").

Starts a throw-away Redis (no persistence) and PostgreSQL (fsync off, as tests/servers.py makes them) on loopback,
one API replica (real uvicorn, ``EM_BACKEND=distributed``), and RQ worker pools (``python -m service.worker
--processes N``) of each size in turn. For each size N, the local backend (``EM_WORKERS=N``, its own uvicorn)
runs the same batches just before, so the shared machine's slow spells fall on both. A batch: every job
submitted (8 concurrent clients), then each one read until it ends; wall time from the first submit to the last
end. Batches: small coin jobs (Do & Batzoglou, ``n_init`` 5) and medium Gaussian jobs (2-D points, K=3,
``n_init`` 2). Before the timed batches each server runs a few warm-up jobs.

Counted on the distributed side, per batch: Redis commands (``INFO stats`` total_commands_processed, and ``INFO
commandstats``, which also counts the commands Lua scripts run), iteration events (each job's stream sequence),
PostgreSQL write transactions (transaction ids handed out: only a writing transaction takes one), new
connections (``pg_stat_database.sessions``), rows inserted/updated/deleted and WAL bytes. The idle background
(RQ worker heartbeats, the replica's reaper) is measured apart, per second.

The defaults keep the whole run near five minutes on 2 shared cores (the distributed coin jobs run near one a
second per worker process); the batches are small, so single figures are noisy.

    .venv/bin/python benchmarks/scale_out.py [--coins 60] [--gaussians 16] [--points 5000] [--workers 1,2,3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import orjson
import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import stamp, write_section
from tests.distributed_cluster import Cluster
from tests.live_server import REPO, live_server
from tests.servers import PostgresServer, RedisServer

SEQUENCES = ["HTTTHHTHTH", "HHHHTHHHHH", "HTHHHHHTHH", "HTHTTTHHTT", "THHHTHHHTH"]
CONCURRENCY = 8
FINAL = {"succeeded", "failed", "cancelled"}


def coin_bodies(count: int) -> list[bytes]:
    return [orjson.dumps({"sequences": SEQUENCES, "n_coins": 2, "n_init": 5, "seed": i}) for i in range(count)]


def gaussian_bodies(count: int, points: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 5.0]])
    cloud = (centres[rng.integers(3, size=points)] + rng.normal(size=(points, 2))).round(4).tolist()
    return [
        orjson.dumps({"points": cloud, "n_components": 3, "n_init": 2, "seed": i, "return_labels": False})
        for i in range(count)
    ]


@dataclass
class Batch:
    seconds: float
    job_ids: list[str]
    failed: int

    @property
    def per_second(self) -> float:
        return len(self.job_ids) / self.seconds


async def _run_batch(url: str, path: str, bodies: list[bytes]) -> Batch:
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def submit(body: bytes) -> str:
            async with gate:
                response = await http.post(path, content=body, headers=headers)
            if response.status_code != 202:
                raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:300]}")
            return str(response.json()["id"])

        began = time.perf_counter()
        job_ids = await asyncio.gather(*(submit(body) for body in bodies))
        failed = 0
        for job_id in job_ids:  # in submission order: roughly the order they end, so few reads are wasted
            while True:
                status = (await http.get(f"/v1/jobs/{job_id}")).json()["status"]
                if status in FINAL:
                    failed += status != "succeeded"
                    break
                await asyncio.sleep(0.02)
        return Batch(time.perf_counter() - began, list(job_ids), failed)


def run_batch(url: str, path: str, bodies: list[bytes]) -> Batch:
    return asyncio.run(_run_batch(url, path, bodies))


# --- counters ---


def redis_counts(client: redis.Redis) -> tuple[int, dict[str, int]]:
    total = int(client.info("stats")["total_commands_processed"])
    commands = {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in client.info("commandstats").items()}
    return total, commands


@dataclass
class PgCounts:
    xid: int
    wal: int
    sessions: int
    inserted: int
    updated: int
    deleted: int


def _pg_read(admin_url: str, database: str) -> PgCounts:
    with psycopg.connect(admin_url, autocommit=True) as connection:  # the postgres database: not counted below
        xid, wal = connection.execute(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"
        ).fetchone()  # type: ignore[misc]
        row = connection.execute(
            "SELECT sessions, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database WHERE datname = %s",
            (database,),
        ).fetchone()
    assert row is not None
    return PgCounts(int(xid), int(wal), *(int(value) for value in row))


def pg_counts(admin_url: str, database: str) -> PgCounts:
    """Transaction ids and WAL now; row and session statistics once they have settled (backends report them
    at most once a second, an idle one within seconds): two equal readings a second apart, or 15 s."""
    first = _pg_read(admin_url, database)
    previous = first
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = _pg_read(admin_url, database)
        if (now.sessions, now.inserted, now.updated, now.deleted) == (
            previous.sessions,
            previous.inserted,
            previous.updated,
            previous.deleted,
        ):
            break
        previous = now
    return PgCounts(first.xid, first.wal, previous.sessions, previous.inserted, previous.updated, previous.deleted)


@dataclass
class Costs:
    """What one distributed batch cost Redis and PostgreSQL."""

    jobs: int
    events: int  # stream entries: iteration events and each job's final event
    redis_total: int
    redis_commands: dict[str, int]
    pg_xacts: int
    pg_sessions: int
    pg_rows: tuple[int, int, int]  # inserted, updated, deleted
    wal_bytes: int


def event_count(client: redis.Redis, job_ids: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.get(f"em:{{{job_id}}}:seq")
    return sum(int(value or 0) for value in pipe.execute())


# --- servers ---


@contextmanager
def worker_pool(cluster: Cluster, api_url: str, processes: int, module: str) -> Iterator[None]:
    """``python -m <module> --processes N`` with the cluster's environment, as Cluster.start_worker starts it."""
    with tempfile.TemporaryFile() as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", module, "--processes", str(processes)],
            cwd=REPO,
            env={**os.environ, **cluster.env},
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,  # its own process group: stopped with its horses
        )
        try:
            deadline = time.monotonic() + 60
            while (ready := httpx.get(f"{api_url}/readyz", timeout=5).json()).get("workers") != processes:
                if worker.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(
                        f"worker pool of {processes} not ready: {ready}; exit {worker.poll()}; "
                        f"{log.read()[-3000:].decode()}"
                    )
                time.sleep(0.2)
            yield
        finally:
            if worker.poll() is None:
                # the pool's parent alone: it stops its workers, which deregister (a SIGTERM to the whole group
                # left some registered, counted by /readyz until their registration expires)
                worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
            # the pool's workers deregister as they stop; wait until the replica no longer counts them
            deadline = time.monotonic() + 30
            while httpx.get(f"{api_url}/readyz", timeout=5).json().get("workers", 0) and time.monotonic() < deadline:
                time.sleep(0.2)


@dataclass
class Results:
    local: dict[tuple[str, int], list[Batch]] = field(default_factory=dict)
    distributed: dict[tuple[str, int], list[Batch]] = field(default_factory=dict)
    costs: dict[tuple[str, int], list[Costs]] = field(default_factory=dict)
    idle: dict[int, tuple[float, float]] = field(default_factory=dict)  # Redis commands/s, PG write xacts/s


KINDS = ("coins", "gaussian")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coins", type=int, default=60, help="coin jobs per batch")
    parser.add_argument("--gaussians", type=int, default=16, help="Gaussian jobs per batch")
    parser.add_argument("--points", type=int, default=5000, help="points of each Gaussian job")
    parser.add_argument("--workers", default="1,2,3", help="worker processes to measure, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="times each configuration runs (alternating)")
    parser.add_argument("--idle-s", type=float, default=4.0, help="seconds of idle background measured per size")
    args = parser.parse_args()
    sizes = [int(n) for n in args.workers.split(",")]
    bodies = {"coins": coin_bodies(args.coins), "gaussian": gaussian_bodies(args.gaussians, args.points)}
    paths = {"coins": "/v1/jobs/coins", "gaussian": "/v1/jobs/gaussian"}
    warmup = {"coins": coin_bodies(6), "gaussian": gaussian_bodies(2, args.points)}
    results = Results()
    began = time.monotonic()

    # Each server in its own directory straight under /tmp: as root, PostgreSQL runs as the postgres user, who
    # must be able to reach its directory (a private parent directory would keep it out).
    with (
        tempfile.TemporaryDirectory(prefix="em-scale-") as scratch,
        tempfile.TemporaryDirectory(prefix="em-scale-redis-") as redis_dir,
        tempfile.TemporaryDirectory(prefix="em-scale-pg-", ignore_cleanup_errors=True) as pg_dir,
    ):
        root = Path(scratch)
        (root / "shared").mkdir()
        redis_server, pg_server = RedisServer(Path(redis_dir)), PostgresServer(Path(pg_dir))
        redis_server.start()
        try:
            pg_server.init()
            cluster = Cluster(redis_server, pg_server, root / "shared")
            database = cluster.database_url.rsplit("/", 1)[1]
            admin_url = pg_server.url_of("postgres")
            queue_limit = str(10 * max(args.coins, args.gaussians))
            distributed_env = {**cluster.env, "EM_QUEUE_SIZE": queue_limit, "EM_REAPER_INTERVAL_S": "2"}
            client = redis.Redis.from_url(redis_server.url)
            try:
                with live_server(distributed_env) as api:
                    for round_number in range(args.rounds):
                        for processes in sizes:
                            print(f"round {round_number + 1}, {processes} worker(s): local", flush=True)
                            local_env = {
                                "EM_DATA_DIR": str(root / f"local-{round_number}-{processes}"),
                                "EM_WORKERS": str(processes),
                                "EM_QUEUE_SIZE": queue_limit,
                                "EM_LOG_LEVEL": "WARNING",
                            }
                            with live_server(local_env) as local:
                                for kind in KINDS:
                                    run_batch(local.url, paths[kind], warmup[kind])
                                for kind in KINDS:
                                    batch = run_batch(local.url, paths[kind], bodies[kind])
                                    results.local.setdefault((kind, processes), []).append(batch)
                                    print(f"  local {kind}: {batch.per_second:.2f} jobs/s", flush=True)
                            print(f"round {round_number + 1}, {processes} worker(s): distributed", flush=True)
                            with worker_pool(cluster, api.url, processes, "service.worker"):
                                for kind in KINDS:
                                    run_batch(api.url, paths[kind], warmup[kind])
                                if round_number == 0:
                                    redis_before, _ = redis_counts(client)
                                    pg_before = _pg_read(admin_url, database)
                                    time.sleep(args.idle_s)
                                    redis_after, _ = redis_counts(client)
                                    pg_after = _pg_read(admin_url, database)
                                    results.idle[processes] = (
                                        (redis_after - redis_before) / args.idle_s,
                                        (pg_after.xid - pg_before.xid) / args.idle_s,
                                    )
                                for kind in KINDS:
                                    pg_before = pg_counts(admin_url, database)
                                    redis_before, commands_before = redis_counts(client)
                                    batch = run_batch(api.url, paths[kind], bodies[kind])
                                    redis_after, commands_after = redis_counts(client)
                                    pg_after = pg_counts(admin_url, database)
                                    events = event_count(client, batch.job_ids)
                                    costs = Costs(
                                        jobs=len(batch.job_ids),
                                        events=events,
                                        redis_total=redis_after - redis_before,
                                        redis_commands={
                                            name: calls - commands_before.get(name, 0)
                                            for name, calls in commands_after.items()
                                            if calls - commands_before.get(name, 0)
                                        },
                                        pg_xacts=pg_after.xid - pg_before.xid,
                                        pg_sessions=pg_after.sessions - pg_before.sessions,
                                        pg_rows=(
                                            pg_after.inserted - pg_before.inserted,
                                            pg_after.updated - pg_before.updated,
                                            pg_after.deleted - pg_before.deleted,
                                        ),
                                        wal_bytes=pg_after.wal - pg_before.wal,
                                    )
                                    results.distributed.setdefault((kind, processes), []).append(batch)
                                    results.costs.setdefault((kind, processes), []).append(costs)
                                    print(
                                        f"  distributed {kind}: {batch.per_second:.2f} jobs/s; "
                                        f"{costs.redis_total / costs.jobs:.1f} Redis commands/job, "
                                        f"{costs.events / costs.jobs:.1f} events/job, "
                                        f"{costs.pg_xacts / costs.jobs:.2f} PG write xacts/job",
                                        flush=True,
                                    )
            finally:
                client.close()
                cluster.stop()
        finally:
            pg_server.stop()
            redis_server.stop()

    report = render(args, sizes, results, time.monotonic() - began)
    print(report)
    write_section("scale-out", report)


def _median(batches: list[Batch]) -> float:
    return statistics.median(batch.per_second for batch in batches)


def render(args: argparse.Namespace, sizes: list[int], results: Results, elapsed_s: float) -> str:
    names = {
        "coins": f"coins (D&B, n_init 5), {args.coins} jobs",
        "gaussian": f"Gaussian ({args.points}x2, K=3, n_init 2), {args.gaussians} jobs",
    }
    lines = [
        "## Scale-out: distributed backend (Redis + PostgreSQL + RQ workers) against local, 1-3 worker processes",
        "",
        stamp(" ".join(["benchmarks/scale_out.py", *sys.argv[1:]])),
        f"One API replica (uvicorn) and the worker pool on the same {os.cpu_count()} shared cores as Redis, "
        "PostgreSQL (fsync off) and the client; the local backend at the same `EM_WORKERS` ran just before each "
        f"pool. Jobs/s: all jobs submitted (8 concurrent clients), wall time until the last ended; "
        f"{args.rounds} round(s) (the median when more). Whole run: {elapsed_s:.0f} s.",
        "",
        "| batch | workers | local jobs/s | distributed jobs/s | distributed/local | failed (local, distributed) |",
        "|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        for processes in sizes:
            local, distributed = results.local[(kind, processes)], results.distributed[(kind, processes)]
            failed = [str(sum(b.failed for b in batches)) for batches in (local, distributed)]
            lines.append(
                f"| {names[kind]} | {processes} | {_median(local):.2f} | {_median(distributed):.2f} "
                f"| {_median(distributed) / _median(local):.2f} | {', '.join(failed)} |"
            )
    lines += [
        "",
        "Per job, on the distributed side (each cell: the batch's total over its jobs). Events: stream entries, "
        "the iteration events and each job's final one. Redis commands: `total_commands_processed`, which on "
        "Redis 7 counts the commands a script runs as well as the script call; the idle background is the rate "
        "measured below times the batch's wall time. PG write transactions: transaction ids handed out (only a "
        "writing transaction takes one), the replica's readiness probe (a write every 2 s) included.",
        "",
        "| batch | workers | events/job | Redis commands/job | of them idle background | script calls "
        "(EVALSHA)/job | XADD per event | PG write transactions/job | PG new sessions/job | rows ins/upd/del "
        "per job | WAL KB/job |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        for processes in sizes:
            costs = results.costs[(kind, processes)][0]
            jobs = costs.jobs
            background = results.idle[processes][0] * results.distributed[(kind, processes)][0].seconds
            rows = "/".join(f"{value / jobs:.2f}" for value in costs.pg_rows)
            lines.append(
                f"| {kind} | {processes} | {costs.events / jobs:.1f} | {costs.redis_total / jobs:.1f} "
                f"| {background / jobs:.1f} | {costs.redis_commands.get('evalsha', 0) / jobs:.1f} "
                f"| {costs.redis_commands.get('xadd', 0) / costs.events:.2f} "
                f"| {costs.pg_xacts / jobs:.2f} | {costs.pg_sessions / jobs:.2f} | {rows} "
                f"| {costs.wal_bytes / jobs / 1024:.1f} |"
            )
    lines += ["", "Redis commands by name, per job (largest first; the 1-worker batches):", ""]
    for kind in KINDS:
        costs = results.costs[(kind, sizes[0])][0]
        top = sorted(costs.redis_commands.items(), key=lambda item: -item[1])[:14]
        lines.append(f"- {kind}: " + ", ".join(f"`{name}` {calls / costs.jobs:.1f}" for name, calls in top))
    lines += [
        "",
        "Idle background (no job running; RQ worker heartbeats and dequeue waits, the replica's reaper every 2 s): "
        + "; ".join(
            f"{processes} worker(s): {redis_rate:.1f} Redis commands/s, {pg_rate:.2f} PG write transactions/s"
            for processes, (redis_rate, pg_rate) in sorted(results.idle.items())
        )
        + ".",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
