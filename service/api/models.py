"""Kept models: read, list, import and delete them, and use one on new data (predict, score, sample).

Every succeeded fit keeps its model under the fit's id; ``POST /v1/models`` keeps parameters from elsewhere,
checked as a fit's ``init`` is. A model is loaded (and validated) per request: parameters are small, and store
calls run in a thread (the store may be a database server). Work on many observations runs in a thread (numpy
releases the GIL), never on the event loop.
"""

from __future__ import annotations

import random
import time
from functools import partial
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response

from service.api.datasets import dataset_file
from service.api.deps import get_access, services
from service.api.routing import OrjsonRoute, loop_limiter
from service.api.views import RawJSONResponse
from service.datasets.parse import map_points
from service.families.base import Family
from service.families.limits import LimitExceeded, check_size
from service.families.registry import BY_KIND, ModelImport
from service.families.render import dumps
from service.jobs.models import Access, new_job_id
from service.models import use
from service.models.store import ModelRecord
from service.schemas.common import Message
from service.schemas.models import (
    KeptModel,
    ModelPage,
    Prediction,
    PredictRequest,
    Sample,
    SampleRequest,
    Score,
    ScoreRequest,
)
from service.settings import Settings

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=OrjsonRoute)

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such model (or it expired)", "model": Message}}
NOT_JSON: dict[int | str, dict[str, Any]] = {
    415: {"description": "the body is not sent as JSON (Content-Type: application/json)", "model": Message}
}
USE_ERRORS = {**NOT_FOUND, **NOT_JSON}

# Observations x components below which a request is answered on the event loop (a thread hop costs more).
_INLINE_CELLS = 20_000
_LARGE_MODEL_BYTES = 64 * 1024  # stored models larger than this are loaded in a thread

IMPORT_EXAMPLES: dict[str, dict[str, Any]] = {
    "gaussian_2d": {
        "summary": "two 2-D normal groups (full covariances)",
        "value": {
            "kind": "gaussian",
            "covariance_type": "full",
            "params": {
                "weights": [0.4, 0.6],
                "means": [[0.0, 0.0], [5.0, 5.0]],
                "covariances": [[[1.0, 0.3], [0.3, 1.0]], [[0.5, 0.0], [0.0, 2.0]]],
            },
        },
    },
    "coins": {
        "summary": "Do & Batzoglou's two coins, as the paper's EM leaves them",
        "value": {"kind": "coins", "params": {"biases": [0.7968, 0.5196], "weights": [0.5, 0.5]}},
    },
}
PREDICT_EXAMPLES: dict[str, dict[str, Any]] = {
    "points": {
        "summary": "three 2-D points (for a 2-D gaussian model)",
        "value": {"points": [[0.1, -0.2], [4.8, 5.3], [2.5, 2.5]], "return_responsibilities": True},
    },
    "sequences": {
        "summary": "two experiments (for a coins model)",
        "value": {"sequences": ["HHHHTHHHHH", "HTHTTTHHTT"], "return_responsibilities": True},
    },
}
SAMPLE_EXAMPLES: dict[str, dict[str, Any]] = {
    "five": {"summary": "five observations, reproducibly", "value": {"n": 5, "seed": 7}},
}


async def _existing(request: Request, model_id: str, access: Access) -> ModelRecord:
    # Store calls run in a thread: the store may be a database server (EM_BACKEND=distributed).
    record = await anyio.to_thread.run_sync(services(request).models.get, model_id, access)
    if record is None:
        raise HTTPException(404, f"no model {model_id!r}")
    return record


@router.get("", response_model=ModelPage, summary="List kept models")
async def list_models(
    request: Request,
    access: Annotated[Access, Depends(get_access)],
    limit: Annotated[int, Query(ge=1, le=200, description="models per page")] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> RawJSONResponse:
    """Your models, newest first, without their parameters (read one for those)."""
    records, next_cursor = await anyio.to_thread.run_sync(services(request).models.list, access, limit, cursor or None)
    page = {"items": [r.document(with_params=False) for r in records], "next_cursor": next_cursor}
    return RawJSONResponse(orjson.dumps(page))


@router.get("/{model_id}", response_model=KeptModel, responses=NOT_FOUND, summary="Read a kept model")
async def read_model(model_id: str, request: Request, access: Annotated[Access, Depends(get_access)]) -> Any:
    return RawJSONResponse(orjson.dumps((await _existing(request, model_id, access)).document()))


@router.post(
    "",
    status_code=201,
    response_model=KeptModel,
    responses={
        422: {"description": "the parameters are unusable (the message says which)"},
        **NOT_JSON,
        503: {"description": "the model store is unwritable (see Retry-After)", "model": Message},
        507: {"description": "the model store's disk is full (see Retry-After)", "model": Message},
    },
    summary="Import a model's parameters",
)
async def import_model(
    body: Annotated[ModelImport, Body(openapi_examples=IMPORT_EXAMPLES)],
    request: Request,
    response: Response,
    access: Annotated[Access, Depends(get_access)],
) -> RawJSONResponse:
    """Keep parameters fitted elsewhere (as a fit's result shows them), to predict, score and sample with.

    Checked as a fit's `init` is: weights >= 0 summing to 1, covariances symmetric positive definite, biases
    in [0, 1]."""
    family, settings = BY_KIND[body.kind], services(request).settings
    components, dimensions = family.use.import_size(body)
    check_size(
        settings, field="params", n_observations=1, n_features=dimensions, n_components=components,
        max_components=getattr(settings, family.use.components_cap),
    )  # fmt: skip
    # Checking covariances factorises each (d^3 work): a large model is checked off the event loop.
    heavy = components * dimensions**2 > _INLINE_CELLS
    check = partial(family.use.content_of_import, body)
    content = await anyio.to_thread.run_sync(check, limiter=_limiter()) if heavy else check()
    record = ModelRecord(new_job_id(), access.tenant, family.kind, time.time(), None, dumps(content))
    await anyio.to_thread.run_sync(services(request).models.put, record)
    return RawJSONResponse(
        orjson.dumps(record.document()), status_code=201, headers={"Location": f"/v1/models/{record.id}"}
    )


@router.delete("/{model_id}", status_code=204, responses=NOT_FOUND, summary="Forget a kept model")
async def delete_model(model_id: str, request: Request, access: Annotated[Access, Depends(get_access)]) -> None:
    await _existing(request, model_id, access)
    await anyio.to_thread.run_sync(services(request).models.delete, model_id)


@router.post("/{model_id}/predict", response_model=Prediction, responses=USE_ERRORS, summary="Predict components")
async def predict(
    model_id: str,
    body: Annotated[PredictRequest, Body(openapi_examples=PREDICT_EXAMPLES)],
    request: Request,
    access: Annotated[Access, Depends(get_access)],
) -> RawJSONResponse:
    """The most probable component of each observation (scikit-learn's `predict`), and with
    `return_responsibilities` the probability of each (`predict_proba`)."""
    family, model, observations = await _inputs(request, model_id, body, access)
    n, K = family.use.count(observations), _components(model)
    _check_result_size(services(request).settings, n * (1 + (K if body.return_responsibilities else 0)))
    return await _answer(n * K, use.predictions, family.use, model, observations, body.return_responsibilities)


@router.post("/{model_id}/score", response_model=Score, responses=USE_ERRORS, summary="Score observations")
async def score(
    model_id: str,
    body: Annotated[ScoreRequest, Body(openapi_examples=PREDICT_EXAMPLES)],
    request: Request,
    access: Annotated[Access, Depends(get_access)],
) -> RawJSONResponse:
    """The log-likelihood of each observation under the model (scikit-learn's `score_samples`), and their sum
    and mean."""
    family, model, observations = await _inputs(request, model_id, body, access)
    n = family.use.count(observations)
    _check_result_size(services(request).settings, n)
    return await _answer(n * _components(model), use.scores, family.use, model, observations)


@router.post("/{model_id}/sample", response_model=Sample, responses=USE_ERRORS, summary="Draw a sample")
async def sample(
    model_id: str,
    body: Annotated[SampleRequest, Body(openapi_examples=SAMPLE_EXAMPLES)],
    request: Request,
    access: Annotated[Access, Depends(get_access)],
) -> RawJSONResponse:
    """`n` observations drawn from the model, with the component each came from; the same seed gives the same
    sample (the seed used is returned)."""
    settings = services(request).settings
    family, model = await _loaded(request, model_id, access)
    if body.n > settings.max_points:
        raise LimitExceeded(f"n is {body.n}; this server allows at most {settings.max_points}", "n")
    numbers = family.use.sample_size(model, body)
    if numbers > settings.max_cells:
        raise LimitExceeded(
            f"the sample would hold {numbers} values; this server allows at most {settings.max_cells}", "n"
        )
    _check_result_size(settings, numbers)
    seed = body.seed if body.seed is not None else random.getrandbits(63)
    return await _answer(numbers, use.sample, family.use, model, body, seed)


# --- helpers ---


async def _loaded(request: Request, model_id: str, access: Access) -> tuple[Family[Any, Any, Any], Any]:
    """The model, ready to use (a large one is parsed and factorised off the event loop)."""
    record = await _existing(request, model_id, access)
    family = BY_KIND[record.kind]
    load = partial(_load, family, record)
    model = (
        await anyio.to_thread.run_sync(load, limiter=_limiter()) if len(record.body) > _LARGE_MODEL_BYTES else load()
    )
    await anyio.to_thread.run_sync(services(request).models.touch, model_id)
    return family, model


def _load(family: Family[Any, Any, Any], record: ModelRecord) -> Any:
    return family.use.load(record.content())


async def _inputs(
    request: Request, model_id: str, body: ScoreRequest, access: Access
) -> tuple[Family[Any, Any, Any], Any, Any]:
    """The model and the observations it is asked about, within the server's caps (a 422 otherwise)."""
    family, model = await _loaded(request, model_id, access)
    dataset = None
    if body.dataset is not None:
        dataset = map_points(await anyio.to_thread.run_sync(dataset_file, family, body.dataset, request))
    observations = family.use.observations(body, model, dataset)
    n = family.use.count(observations)
    field = body.observation_field
    n_features = getattr(model, "n_features", 1)  # the observations have the model's (checked above)
    settings = services(request).settings
    check_size(
        settings, field=field, n_observations=n, n_features=n_features, n_components=_components(model),
        max_components=getattr(settings, family.use.components_cap),
    )  # fmt: skip
    return family, model, observations


def _components(model: Any) -> int:
    """What each observation's answer has a number for: a mixture's components, or what the model says."""
    return int(model.n_components) if hasattr(model, "n_components") else len(model.weights)


def _check_result_size(settings: Settings, numbers: int) -> None:
    megabytes = numbers * 20 / 2**20  # ~20 characters of JSON a number
    if megabytes > settings.max_result_mb:
        raise LimitExceeded(
            f"the answer would be about {megabytes:.0f} MB; this server answers at most {settings.max_result_mb} MB "
            "(send fewer observations, or leave return_responsibilities false)",
            "points",
        )


# Large requests compute in threads, at most two at a time: numpy's work is parallel across requests, and the
# memory a request holds is bounded by the caps above.
_limiter = loop_limiter("model_use_limiter", 2)


async def _answer(cells: int, compute: Any, *args: Any) -> RawJSONResponse:
    def run() -> bytes:
        return dumps(compute(*args))

    if cells <= _INLINE_CELLS:
        return RawJSONResponse(run())
    return RawJSONResponse(await anyio.to_thread.run_sync(run, limiter=_limiter()))
