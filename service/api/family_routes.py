"""Route handlers made per model family: a family's request schema and examples become a typed endpoint.

FastAPI reads a handler's parameters from its signature; a handler written once for every family gets the
family's own request type through ``__signature__``, so Swagger UI shows each family's schema and examples.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Body, Depends

from service.api.deps import get_access, get_jobs, get_observer, get_settings
from service.families.base import Family
from service.jobs.manager import JobManager, JobObserver
from service.jobs.models import Access
from service.settings import Settings


def with_family_signature(
    handler: Callable[..., Coroutine[Any, Any, Any]],
    family: Family[Any, Any, Any],
    *,
    observer: bool = False,
    access: bool = False,
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``handler(body, settings, jobs[, observer][, access])`` with ``body`` typed as the family's request."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [
        inspect.Parameter(
            "body",
            keyword,
            annotation=Annotated[family.request, Body(openapi_examples=dict(family.examples))],  # type: ignore[arg-type]
        ),
        inspect.Parameter("settings", keyword, annotation=Annotated[Settings, Depends(get_settings)]),
        inspect.Parameter("jobs", keyword, annotation=Annotated[JobManager, Depends(get_jobs)]),
    ]
    if observer:
        parameters.append(
            inspect.Parameter("observer", keyword, annotation=Annotated[JobObserver, Depends(get_observer)])
        )
    if access:
        parameters.append(inspect.Parameter("access", keyword, annotation=Annotated[Access, Depends(get_access)]))
    handler.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    handler.__doc__ = family.description
    return handler


def json_examples(examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An OpenAPI ``content`` entry showing these examples (Swagger UI's example drop-down)."""
    return {"application/json": {"examples": examples}} if examples else {}
