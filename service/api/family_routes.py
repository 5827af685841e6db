"""Route handlers made per model family: a family's request schema and examples become a typed endpoint.

FastAPI reads a handler's parameters from its signature; a handler written once for every family gets the
family's own request type through ``__signature__``, so Swagger UI shows each family's schema and examples.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Body, Depends, Request

from service.api.deps import get_access
from service.families.base import Family
from service.jobs.models import Access


def with_family_signature(
    handler: Callable[..., Coroutine[Any, Any, Any]],
    family: Family[Any, Any, Any],
    *,
    access: bool = False,
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``handler(body, request[, access])`` with ``body`` typed as the family's request (the app's services
    are read from ``request``: see :class:`service.api.deps.AppServices`)."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [
        inspect.Parameter(
            "body",
            keyword,
            annotation=Annotated[family.request, Body(openapi_examples=dict(family.examples))],  # type: ignore[arg-type]
        ),
        inspect.Parameter("request", keyword, annotation=Request),
    ]
    if access:
        parameters.append(inspect.Parameter("access", keyword, annotation=Annotated[Access, Depends(get_access)]))
    handler.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    handler.__doc__ = family.description
    return handler


def json_examples(examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An OpenAPI ``content`` entry showing these examples (Swagger UI's example drop-down)."""
    return {"application/json": {"examples": examples}} if examples else {}
