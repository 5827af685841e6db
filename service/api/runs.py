"""Hand a fit to the job manager: the one path both the synchronous and the job endpoints take."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from fastapi.exceptions import RequestValidationError

from service.api.translate import render_coin_result, render_gaussian_result
from service.em.tasks import (
    CoinTask,
    GaussianTask,
    build_coin_model,
    build_gaussian_model,
    solve_coins,
    solve_gaussian,
)
from service.jobs.manager import JobManager
from service.jobs.models import FitFailed, JobRecord, WorkItem


def coin_work(task: CoinTask) -> WorkItem:
    return WorkItem(solve_coins, task, render_coin_result, _time_limit(task))


def gaussian_work(task: GaussianTask) -> WorkItem:
    return WorkItem(solve_gaussian, task, render_gaussian_result, _time_limit(task))


def _time_limit(task: CoinTask | GaussianTask) -> float:
    assert task.options.time_limit_s is not None
    return task.options.time_limit_s


# Below this many observations building a model takes microseconds: less than a hop to a thread.
_INLINE_CHECK_MAX = 10_000


async def check_fittable(task: CoinTask | GaussianTask) -> None:
    """Build the model (no fitting) so an unfittable request is a 422 now, not a failed job later."""
    build: Callable[[Any], Any] = build_coin_model if isinstance(task, CoinTask) else build_gaussian_model
    if task.size <= _INLINE_CHECK_MAX:
        build(task)
    else:
        await anyio.to_thread.run_sync(build, task)


async def submit(
    jobs: JobManager, kind: str, item: WorkItem, request: dict[str, Any], keep_events: bool = True
) -> JobRecord:
    await check_fittable(item.task)
    return await jobs.submit(kind, item, request, keep_events=keep_events)


async def run_to_completion(jobs: JobManager, kind: str, item: WorkItem, request: dict[str, Any]) -> bytes:
    """Submit, wait, and return the result JSON; a job that ends without one raises :class:`FitFailed`."""
    record = await submit(jobs, kind, item, request | {"mode": "sync"}, keep_events=False)
    record = await jobs.wait(record.id)
    if record.status == "succeeded" and record.result is not None:
        return record.result
    if record.error and record.error.get("type") == "invalid_request":
        loc = ["body", *(record.error.get("field") or "").split(".")] if record.error.get("field") else ["body"]
        raise RequestValidationError([{"loc": tuple(loc), "msg": record.error["message"], "type": "value_error.fit"}])
    raise FitFailed(record.error or {"type": "cancelled", "message": f"the fit was {record.status}"})
