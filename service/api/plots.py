"""Pictures: ``GET /v1/jobs/{id}/plot`` and ``GET /v1/models/{id}/plot`` (PNG, SVG, or an animated GIF).

A picture is drawn in a fit worker process (matplotlib, Agg), never on the event loop: the route checks what can
be drawn, hands the worker everything it needs (the result, what the job kept for pictures, or the kept model's
parameters) as an ephemeral job, and answers with the bytes. Jobs and models are their tenant's: another's id is
a 404, as everywhere.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from service.api.deps import get_access, services
from service.api.routing import OrjsonRoute
from service.api.runs import result_of
from service.families.registry import BY_KIND
from service.jobs.models import Access, JobNotFound, JobRecord, WorkItem
from service.plots.encode import MEDIA_TYPES
from service.plots.render import SELECTION_KIND, PictureTask, as_is, make_picture
from service.schemas.common import Message, Problems

router = APIRouter(tags=["pictures"], route_class=OrjsonRoute)

View = Literal["fit", "trace", "animation"]
Format = Literal["png", "svg"]

MAX_SIDE, MAX_ANIMATION_SIDE = 2400, 1000  # pixels; an animation is many frames, so smaller
DEFAULT_SIZE, DEFAULT_ANIMATION_SIZE = (800, 600), (640, 480)
PICTURE_TIME_LIMIT_S = 60.0

_BINARY = {"schema": {"type": "string", "format": "binary"}}
PICTURE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the picture: PNG (default) or SVG (`format=svg`, or `Accept: image/svg+xml`); `view=animation` "
        "is an animated GIF",
        "content": {"image/png": _BINARY, "image/svg+xml": _BINARY, "image/gif": _BINARY},
    },
    404: {"description": "no such job or model (or it expired)", "model": Message},
    409: {"description": "the job has not succeeded (queued, running, failed or cancelled)", "model": Message},
    422: {
        "description": "a size out of range, or a view this fit cannot show (the message says why)",
        "model": Problems,
    },
    503: {"description": "every worker is busy and the queue is full (see Retry-After)", "model": Message},
}

DESCRIPTION = """What the picture shows follows the model: a 1-D Gaussian mixture is a histogram of the points under
each component's density and the mixture's; 2-D points (a random 20,000 past that) with 1 and 2 sigma ellipses; d > 2
the same on the mixture's first two principal axes; coins are each coin's bias over the experiments' head
fractions split by responsibility; alleles and abundances are bars; an HMM is its first sequence coloured by
Viterbi state with the transition matrix and emissions; a model selection is the criterion against K per
covariance type.

`view=trace` draws the log-likelihood per iteration of every start (jobs); `view=animation` an animated GIF of the
parameters converging, from a job fitted with `trace: "params"`. The title gives the stop reason and the
log-likelihood; notes under the axes say when points are subsampled or no data is kept."""


def _dimension(name: str) -> Any:
    return Query(ge=100, le=MAX_SIDE, description=f"{name} in pixels (100 to {MAX_SIDE}; an animation's to "
                 f"{MAX_ANIMATION_SIDE}); default {DEFAULT_SIZE[0 if name == 'width' else 1]} "
                 f"({DEFAULT_ANIMATION_SIZE[0 if name == 'width' else 1]} for an animation)")  # fmt: skip


ViewQuery = Annotated[View, Query(description="`fit` (default), `trace` or `animation` (a GIF)")]
FormatQuery = Annotated[
    Format | None, Query(description="`png` or `svg`; when absent, chosen by `Accept` (PNG unless SVG is preferred)")
]
WidthQuery = Annotated[int | None, _dimension("width")]
HeightQuery = Annotated[int | None, _dimension("height")]
AcceptHeader = Annotated[str | None, Header(include_in_schema=False)]


@router.get(
    "/v1/jobs/{job_id}/plot",
    response_class=Response,
    responses=PICTURE_RESPONSES,
    summary="Draw a job's fit",
    description=DESCRIPTION,
)
async def plot_job(
    job_id: str,
    request: Request,
    access: Annotated[Access, Depends(get_access)],
    view: ViewQuery = "fit",
    format: FormatQuery = None,
    width: WidthQuery = None,
    height: HeightQuery = None,
    accept: AcceptHeader = None,
) -> Response:
    record = await services(request).jobs.get(job_id, access)
    task = await _job_picture(request, record, access, view, _shape(view, format, accept, width, height), "job")
    return await _draw(request, task, access)


@router.get(
    "/v1/models/{model_id}/plot",
    response_class=Response,
    responses=PICTURE_RESPONSES,
    summary="Draw a kept model",
    description=DESCRIPTION + "\n\nA model kept by a job is drawn as the job is (with its data and trace, while the "
    "job is kept); an imported model, or a synchronous fit's, has parameters alone: its picture shows the model "
    "and says so, and has no trace or animation.",
)
async def plot_model(
    model_id: str,
    request: Request,
    access: Annotated[Access, Depends(get_access)],
    view: ViewQuery = "fit",
    format: FormatQuery = None,
    width: WidthQuery = None,
    height: HeightQuery = None,
    accept: AcceptHeader = None,
) -> Response:
    app = services(request)
    model = await anyio.to_thread.run_sync(app.models.get, model_id, access)
    if model is None:
        raise HTTPException(404, f"no model {model_id!r}")
    shape = _shape(view, format, accept, width, height)
    if model.job_id is not None:
        try:
            job = await app.jobs.get(model.job_id, access)
        except JobNotFound:
            job = None
        if job is not None and job.status == "succeeded":
            return await _draw(request, await _job_picture(request, job, access, view, shape, "kept model"), access)
    if view != "fit":
        _refuse(
            "view",
            f"kept model {model_id!r} has no trace: it was imported, fitted synchronously (whose response carries its "
            "trace), or its job has expired; only view=fit applies (fit as a job to draw the trace)",
        )
    source = f"kept model {model_id}"
    return await _draw(request, PictureTask(model.kind, view, *shape, source=source, model=model.body), access)


# --- helpers ---


def _shape(
    view: View, format: Format | None, accept: str | None, width: int | None, height: int | None
) -> tuple[Literal["png", "svg", "gif"], int, int]:
    """The encoding and size of the picture asked for (a 422 naming the parameter otherwise)."""
    if view == "animation":
        if format is not None:
            _refuse("format", "an animation is always an animated GIF: leave format out")
        for name, value in (("width", width), ("height", height)):
            if value is not None and value > MAX_ANIMATION_SIDE:
                _refuse(name, f"an animation's {name} is at most {MAX_ANIMATION_SIDE} pixels; got {value}")
        return "gif", width or DEFAULT_ANIMATION_SIZE[0], height or DEFAULT_ANIMATION_SIZE[1]
    return format or preferred_format(accept), width or DEFAULT_SIZE[0], height or DEFAULT_SIZE[1]


def preferred_format(accept: str | None) -> Format:
    """SVG when ``Accept`` rates image/svg+xml above image/png (wildcards count for PNG); PNG otherwise."""
    quality = {"png": 0.0, "svg": 0.0}
    for part in (accept or "").split(","):
        media, *params = (piece.strip().lower() for piece in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media == "image/svg+xml":
            quality["svg"] = max(quality["svg"], q)
        elif media in ("image/png", "image/*", "*/*"):
            quality["png"] = max(quality["png"], q)
    return "svg" if quality["svg"] > quality["png"] else "png"


async def _job_picture(
    request: Request,
    record: JobRecord,
    access: Access,
    view: View,
    shape: tuple[Literal["png", "svg", "gif"], int, int],
    what: str,
) -> PictureTask:
    """The picture task of a job (``what``: how the title names it), once the view applies to it."""
    if record.status != "succeeded" or record.result is None:
        when = "once it has succeeded" if not record.finished else "only of a succeeded job"
        raise HTTPException(409, f"job {record.id!r} is {record.status}: there is a picture {when}")
    source = f"{what} {record.id}"
    if record.kind == SELECTION_KIND:
        if view != "fit":
            _refuse("view", "a model selection has one picture (the criterion against K): use view=fit, or plot a "
                    "candidate's model (its model_id) for its fit")  # fmt: skip
        return PictureTask(record.kind, view, *shape, source=source, result=record.result)
    if view == "animation" and record.request.get("trace") != "params":
        _refuse("view", f"view=animation needs a fit with trace: \"params\"; job {record.id!r} was fitted with "
                f"trace: {record.request.get('trace')!r} (submit it again with trace \"params\")")  # fmt: skip
    app = services(request)
    bundle = await app.jobs.picture(record.id)
    model = None
    if bundle is None:  # a job from before pictures were kept: its kept model, without data
        kept = await anyio.to_thread.run_sync(app.models.get, record.id, access)
        if kept is None and view != "trace":
            raise HTTPException(409, f"job {record.id!r} kept nothing to draw (it predates pictures, and its model "
                                "has been deleted)")  # fmt: skip
        model = None if kept is None else kept.body
    return PictureTask(record.kind, view, *shape, source=source, result=record.result, bundle=bundle, model=model)


async def _draw(request: Request, task: PictureTask, access: Access) -> Response:
    """Draw ``task`` on a fit worker (queued as an ephemeral job, as a large synchronous fit is) and answer it."""
    if task.kind != SELECTION_KIND and BY_KIND[task.kind].plot is None:
        raise HTTPException(409, f"the {task.kind} family has no picture yet")
    jobs = services(request).jobs
    item = WorkItem(make_picture, task, as_is, PICTURE_TIME_LIMIT_S, fit=False)
    summary = {"view": task.view, "format": task.format, "of": task.source}
    record = await jobs.submit("picture", item, summary, owner=access.tenant, ephemeral=True)
    picture = result_of(await jobs.wait(record.id), "picture")
    return Response(picture, media_type=MEDIA_TYPES[task.format])


def _refuse(parameter: str, message: str) -> None:
    raise RequestValidationError([{"loc": ("query", parameter), "msg": message, "type": "value_error"}])
