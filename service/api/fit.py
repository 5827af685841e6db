"""Synchronous fits, one route per model family: validated, run (inline or on a worker), answered at once."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service.api.datasets import attach_dataset
from service.api.deps import access_of, services
from service.api.family_routes import json_examples, with_family_signature
from service.api.routing import OrjsonRoute
from service.api.runs import fit_now
from service.api.security import principal_of
from service.api.views import RawJSONResponse
from service.families.base import Family
from service.families.registry import FAMILIES
from service.schemas.common import FitOptions, Message

router = APIRouter(prefix="/v1/fit", tags=["fit"], route_class=OrjsonRoute)

FIT_ERRORS: dict[int | str, dict[str, Any]] = {
    415: {"description": "the body is not sent as JSON (Content-Type: application/json)", "model": Message},
    503: {
        "description": "the job queue is full or the job store unwritable (see Retry-After), or the fit's worker "
        "failed",
        "model": Message,
    },
    507: {"description": "the job or model store's disk is full (see Retry-After)", "model": Message},
}


def _add_fit_route(family: Family[Any, Any, Any]) -> None:
    async def fit(body: FitOptions, request: Request) -> RawJSONResponse:
        await attach_dataset(family, body, request)
        access = access_of(principal_of(request))
        return RawJSONResponse(await fit_now(family, body, services(request), access))

    router.add_api_route(
        f"/{family.kind}",
        with_family_signature(fit, family),
        methods=["POST"],
        name=f"fit_{family.kind}",
        response_model=family.result,
        response_class=RawJSONResponse,
        responses={200: {"content": json_examples(dict(family.result_examples))}, **FIT_ERRORS},
        summary=f"Fit {family.title}",
    )


for _family in FAMILIES:
    _add_fit_route(_family)
