"""The distributed backend's fit workers: ``python -m service.worker [--processes N]``, on any machine.

Each process is an RQ worker on ``EM_QUEUE_NAME`` at ``EM_REDIS_URL``; it forks a work horse per job
(:func:`~service.backends.queued.horse.run_queued`), so a fit that crashes or is killed takes only itself.
Several processes run as an RQ worker pool, which replaces one that dies. Settings are the API's (``EM_*``):
the workers need ``EM_REDIS_URL``, ``EM_DATABASE_URL`` and the shared ``EM_DATA_DIR``.
"""

from __future__ import annotations

import argparse
from typing import Any

from redis import Redis
from rq import Worker
from rq.worker_pool import WorkerPool

# Every family's fit code, imported here: RQ forks a work horse per job, which then inherits it instead of
# importing numpy, scipy and the families again for each job it unpickles.
import service.families.registry  # noqa: F401
from service.backends.queued.rescue import horse_died
from service.logs import configure_logging
from service.settings import Settings


class FitWorker(Worker):
    """An RQ worker that ends a job whose work horse died (``worker_died``) instead of leaving it running."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("work_horse_killed_handler", horse_died)
        super().__init__(*args, **kwargs)


def main(argv: list[str] | None = None) -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="python -m service.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=settings.workers, help="worker processes (EM_WORKERS)")
    parser.add_argument("--burst", action="store_true", help="stop once the queue is empty")
    args = parser.parse_args(argv)
    if settings.redis_url is None or settings.database_url is None:
        parser.error(
            "EM_REDIS_URL and EM_DATABASE_URL must be set: the workers take jobs from Redis, store in PostgreSQL"
        )
    configure_logging(settings.log_format, settings.log_level)
    connection = Redis.from_url(settings.redis_url)
    if args.processes == 1:
        FitWorker([settings.queue_name], connection=connection).work(burst=args.burst, with_scheduler=False)
    else:
        pool = WorkerPool([settings.queue_name], connection, num_workers=args.processes, worker_class=FitWorker)
        pool.start(burst=args.burst, logging_level=settings.log_level)


if __name__ == "__main__":
    main()
