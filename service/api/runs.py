"""How a fit request runs: inline when its work is tiny, otherwise as a job on a worker process.

Both the synchronous and the job endpoints come through here, for every family: validate (cheaply, in
this process), then either solve and render on the spot or hand the task to the job manager.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache, partial
from typing import Any, NoReturn

import anyio

from service.api.deps import AppServices
from service.em.errors import EMError, InvalidParameterError
from service.families import bootstrap
from service.families.base import Family, FitTask
from service.families.limits import LimitExceeded, check_footprint, check_refit_footprint
from service.families.render import kept_model_json
from service.jobs.manager import JobManager
from service.jobs.models import Access, FitFailed, FollowUp, JobRecord, WorkItem, new_job_id
from service.jobs.protocol import KeepAs
from service.models.store import ModelRecord
from service.plots.fitted import bundle
from service.schemas.common import FitOptions
from service.settings import Settings

Render = Callable[[Any, str], bytes]  # (solution, job id) -> the result JSON

# Checks of a task this small take microseconds: less than a hop to a thread.
_INLINE_CHECK_MAX = 10_000
# What one EM iteration costs beyond its arithmetic (Python and numpy call overhead), in the same
# units as ``work_per_iteration``: a tiny fit's cost is mostly this.
_ITERATION_OVERHEAD = 1_000


def work_estimate(task: FitTask) -> int:
    """Arithmetic of the whole fit at its worst (every start runs to max_iter), in observation x component units."""
    options = task.options
    iterations = options.max_iter * options.n_init * (task.work_per_iteration + _ITERATION_OVERHEAD)
    # Work done once, after the iterations (standard errors), by tasks that have some.
    return iterations + int(getattr(task, "work_after_fit", 0))


async def prepare(
    family: Family[Any, Any, Any], body: FitOptions, settings: Settings, default_time_limit_s: float
) -> FitTask:
    """The task of a request, with the server's caps and the family's cheap checks applied (a 422 otherwise)."""
    task: FitTask = family.make_task(body, settings, default_time_limit_s)
    check_footprint(task.footprint, settings)
    if task.work_per_iteration <= _INLINE_CHECK_MAX:
        family.check(task)
    else:
        await anyio.to_thread.run_sync(family.check, task)
    return task


@cache
def model_json_of(keep: Callable[[Any], Any]) -> Callable[[Any], bytes]:
    """The kept model's JSON of a solution, by a family's ``keep``: one callable per family, made once (a small
    fit's message pickles the same callables each time only once: see protocol.SmallFit)."""
    return partial(kept_model_json, keep)


def work_item(
    family: Family[Any, Any, Any], task: FitTask, render: Render | None = None, pictures: bool = False
) -> WorkItem:
    """What a worker runs for ``task``: solve, render (the family's result, unless ``render`` is given), keep;
    with ``pictures`` (a stored job), also bundle what the job's pictures need."""
    assert task.options.time_limit_s is not None
    keep = model_json_of(family.keep)
    picture = partial(bundle, family.plot_data) if pictures and family.plot is not None else None
    return WorkItem(family.solve, task, render or family.render, task.options.time_limit_s, keep, picture)


async def fit_now(family: Family[Any, Any, Any], body: FitOptions, app: AppServices, access: Access) -> bytes:
    """A synchronous fit's result JSON.

    A fit whose whole work is below ``settings.inline_fit_budget`` (a Do & Batzoglou fit is microseconds
    of arithmetic) is solved here, on the event loop: a worker round trip, a pickled task and a stored job
    would cost it many times its own work. Anything larger runs as a job in a worker process, with crash
    isolation and a hard time limit. Neither is stored as a job (the response is a synchronous fit's only
    record); both keep their model before answering.
    """
    settings, jobs = app.settings, app.jobs
    if getattr(body, "bootstrap", None) is not None:
        raise InvalidParameterError(
            f"bootstrap runs as a job (its refits are spread over the workers): POST /v1/jobs/{family.kind}",
            "bootstrap",
        )
    task = await prepare(family, body, settings, settings.default_time_limit_s)
    if work_estimate(task) <= settings.inline_fit_budget:
        return await solve_inline(family, task, app, access)
    item = work_item(family, task)
    record = await jobs.submit(family.kind, item, family.summarise(body), owner=access.tenant, ephemeral=True)
    return result_of(await jobs.wait(record.id), "fit")


def result_of(record: JobRecord, what: str) -> bytes:
    """A synchronous request's answer from its ended (ephemeral) job: the result, or the job's error raised."""
    if record.status == "succeeded" and record.result is not None:
        return record.result
    raise_error(record.error or {"type": "cancelled", "message": f"the {what} was {record.status}"})


def raise_error(error: dict[str, str]) -> NoReturn:
    """A failed fit's error, raised as the API answers it: 422 for input the solver refused, else FitFailed."""
    if error.get("type") == "invalid_request":
        raise EMError(error["message"], error.get("field") or None)  # answered 422, as if raised here
    raise FitFailed(error)


async def solve_inline(
    family: Family[Any, Any, Any], task: FitTask, app: AppServices, access: Access, render: Render | None = None
) -> bytes:
    """Solve and render ``task`` (the family's result, unless ``render`` is given) on an idle worker's core, or
    here when none is free; its model is stored before this returns."""
    observer, fit_id = app.observer, new_job_id()
    finished = await app.jobs.run_small_fit(fit_id, work_item(family, task, render), KeepAs(access.tenant, family.kind))
    model: bytes | None = None  # still to be stored, when set
    if finished is None:
        try:
            solution = family.solve(task, None)
            result = (render or family.render)(solution, fit_id)
            model = kept_model_json(family.keep, solution)
        except EMError:
            observer.job_finished(family.kind, "failed")
            raise
        iterations = sum(restart.n_iter for restart in solution.outcome.restarts)
    elif finished.status == "succeeded" and finished.result is not None and (finished.stored or finished.model):
        result, iterations = finished.result, finished.iterations
        model = None if finished.stored else finished.model  # the worker stored it (see SmallFitModels)
    else:
        observer.job_finished(family.kind, "failed")
        if finished.refused is not None:  # the worker's store refused the model: 503/507, as here
            raise finished.refused
        raise_error(finished.error or {"type": "internal_error", "message": "the fit failed unexpectedly"})
    if model is not None:
        # A small write (parameters only), committed with the other fits' of this turn of the loop; a StorageError
        # here is answered 503/507, as a job's would be.
        await app.model_writes.put(ModelRecord(fit_id, access.tenant, family.kind, time.time(), None, model))
    observer.iterations_run(family.kind, iterations)
    observer.job_finished(family.kind, "succeeded")
    return result


async def start_job(
    family: Family[Any, Any, Any], body: FitOptions, settings: Settings, jobs: JobManager, access: Access
) -> JobRecord:
    """Queue a fit as a job (always on a worker: a job can be followed, cancelled and read back later)."""
    task = await prepare(family, body, settings, settings.default_job_time_limit_s)
    follow_up = _bootstrap(family, body, task, settings)
    item = work_item(family, task, pictures=True)
    return await jobs.submit(family.kind, item, family.summarise(body), owner=access.tenant, follow_up=follow_up)


def _bootstrap(family: Family[Any, Any, Any], body: FitOptions, task: FitTask, settings: Settings) -> FollowUp | None:
    """The job's bootstrap (its refits after the fit), if it asked for one."""
    asked = getattr(body, "bootstrap", None)
    if asked is None or family.resampling is None:
        return None
    if asked.replicates > settings.max_bootstrap_replicates:
        raise LimitExceeded(
            f"bootstrap.replicates is {asked.replicates}; this server allows at most "
            f"{settings.max_bootstrap_replicates} (EM_MAX_BOOTSTRAP_REPLICATES)",
            "bootstrap.replicates",
        )
    check_refit_footprint(task.footprint, settings)
    assert task.options.time_limit_s is not None
    return bootstrap.follow_up(
        family.kind, family.resampling, family.solve, task, replicates=asked.replicates, seed=asked.seed,
        level=asked.level, workers=settings.workers, time_limit_s=task.options.time_limit_s,
    )  # fmt: skip
