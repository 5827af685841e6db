"""Error handlers: every failure a client can cause becomes a clear 4xx; nothing leaks a traceback."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.em.errors import EMError

logger = logging.getLogger("service.errors")


def _clean(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's error shape without ``input``/``ctx``: echoing input back could hold NaN (unserialisable)."""
    cleaned = []
    for error in errors:
        msg = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error")
            msg = f"the body is not valid JSON: {reason}" if reason else "the body is not valid JSON"
        cleaned.append({"loc": list(error.get("loc", ())), "msg": msg, "type": str(error.get("type", "value_error"))})
    return cleaned


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(status_code=422, content={"detail": _clean(exc.errors())})


async def _em_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EMError)
    loc = ["body", *(int(p) if p.isdigit() else p for p in exc.field.split("."))] if exc.field else ["body"]
    return JSONResponse(
        status_code=422, content={"detail": [{"loc": loc, "msg": exc.message, "type": "value_error.fit"}]}
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(status_code=500, content={"detail": "internal server error"})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(EMError, _em_error)
    app.add_exception_handler(Exception, _unexpected_error)
