"""Model selection: fit every K x covariance type of a Gaussian mixture, keep each model, name the best.

Candidates are ordinary Gaussian fits spread over the fit workers (a group job: see
:meth:`~service.jobs.manager.LocalJobManager.submit_group`); a selection small enough to be microseconds of
arithmetic in all is solved here instead, as small synchronous fits are.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated

import anyio
import orjson
from fastapi import APIRouter, Body, Depends, Request

from service.api.datasets import attach_dataset
from service.api.deps import AppServices, access_of, get_access, services
from service.api.family_routes import json_examples
from service.api.fit import FIT_ERRORS
from service.api.job_examples import queued_job_example
from service.api.routing import OrjsonRoute
from service.api.runs import result_of, solve_inline, work_estimate, work_item
from service.api.security import principal_of
from service.api.views import RawJSONResponse, job_json
from service.families import gaussian, gaussian_select
from service.families.limits import check_footprint
from service.families.registry import BY_KIND, Job
from service.jobs.models import Access, JobRecord, new_job_id
from service.schemas.selection import SELECT_EXAMPLES, GaussianSelectRequest, SelectionResult

fit_router = APIRouter(prefix="/v1/fit", tags=["fit"], route_class=OrjsonRoute)
job_router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=OrjsonRoute)

FAMILY = BY_KIND["gaussian"]
_CHECK_INLINE_MAX = 10_000  # points x candidates whose checks run here rather than in a thread

DESCRIPTION = """Fit a Gaussian mixture for every K in `n_components` and every covariance type in
`covariance_types` (the common options apply to each), keep every candidate's model, and name the best by
`criterion`: BIC (default), AIC or ICL, lower is better. Candidates run in parallel on the fit workers."""


@fit_router.post(
    "/gaussian/select",
    response_model=SelectionResult,
    response_class=RawJSONResponse,
    responses=FIT_ERRORS,
    summary="Select a Gaussian mixture's K and covariance type",
    description=DESCRIPTION,
)
async def select_now(
    body: Annotated[GaussianSelectRequest, Body(openapi_examples=SELECT_EXAMPLES)], request: Request
) -> RawJSONResponse:
    app = services(request)
    await attach_dataset(FAMILY, body, request)
    access = access_of(principal_of(request))
    tasks = await _prepare(body, app, app.settings.default_time_limit_s)
    if sum(work_estimate(task) for task in tasks) <= app.settings.inline_fit_budget:
        return RawJSONResponse(await _select_inline(body, tasks, app, access))
    record = _submit(body, tasks, app, access, ephemeral=True)
    return RawJSONResponse(result_of(await app.jobs.wait(record.id), "selection"))


@job_router.post(
    "/gaussian/select",
    status_code=202,
    response_model=Job,
    response_class=RawJSONResponse,
    responses={202: {"content": json_examples(queued_job_example(FAMILY))}, **FIT_ERRORS},
    summary="Start a job that selects a Gaussian mixture's K and covariance type",
    description=DESCRIPTION + "\n\nIts event stream sends one `candidate` event (the candidate's line of the "
    "result) as each candidate finishes, then the final event.",
)
async def start_selection(
    body: Annotated[GaussianSelectRequest, Body(openapi_examples=SELECT_EXAMPLES)],
    request: Request,
    access: Annotated[Access, Depends(get_access)],
) -> RawJSONResponse:
    app = services(request)
    await attach_dataset(FAMILY, body, request)
    tasks = await _prepare(body, app, app.settings.default_job_time_limit_s)
    record = _submit(body, tasks, app, access, ephemeral=False)
    return RawJSONResponse(job_json(record), status_code=202, headers={"Location": f"/v1/jobs/{record.id}"})


async def _prepare(
    body: GaussianSelectRequest, app: AppServices, default_time_limit_s: float
) -> list[gaussian.GaussianTask]:
    """The candidates' tasks, within the server's caps, after the cheap checks (a 422 otherwise)."""
    tasks = gaussian_select.candidate_tasks(body, app.settings, default_time_limit_s)
    for task in tasks:
        check_footprint(task.footprint, app.settings)
    if tasks[0].X.shape[0] * len(tasks) <= _CHECK_INLINE_MAX:
        gaussian_select.check(tasks)
    else:
        await anyio.to_thread.run_sync(gaussian_select.check, tasks)
    return tasks


def _submit(
    body: GaussianSelectRequest, tasks: list[gaussian.GaussianTask], app: AppServices, access: Access, ephemeral: bool
) -> JobRecord:
    items = [work_item(FAMILY, task, gaussian_select.render_candidate) for task in tasks]
    return app.jobs.submit_group(
        gaussian_select.KIND, FAMILY.kind, items, gaussian_select.summarise(body),
        partial(_combine, body.criterion), part_event="candidate", owner=access.tenant, ephemeral=ephemeral,
    )  # fmt: skip


def _combine(criterion: str, job_id: str, candidates: list[bytes], elapsed_s: float) -> bytes:
    return gaussian_select.result([orjson.loads(c) for c in candidates], criterion, job_id, elapsed_s)


async def _select_inline(
    body: GaussianSelectRequest, tasks: list[gaussian.GaussianTask], app: AppServices, access: Access
) -> bytes:
    """A tiny selection, solved here: each candidate is a fit solved inline, keeping its model as on a worker."""
    started, candidates = time.monotonic(), []
    for task in tasks:
        line = await solve_inline(FAMILY, task, app, access, gaussian_select.render_candidate)
        candidates.append(orjson.loads(line))
    app.observer.job_finished(gaussian_select.KIND, "succeeded")
    return gaussian_select.result(candidates, body.criterion, new_job_id(), time.monotonic() - started)
