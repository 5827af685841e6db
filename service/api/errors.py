"""Error handlers: every failure a client can cause becomes a clear 4xx; nothing leaks a traceback."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.em.errors import EMError
from service.families.limits import LimitExceeded
from service.jobs.models import FitFailed, JobAlreadyFinished, JobNotFound, QueueFull, StorageError, StorageFull
from service.jobs.store import InvalidCursor

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
    """The one mapping from the solver's refusals (and the server's caps) to a 422 naming the field."""
    assert isinstance(exc, EMError)
    loc = ["body", *(int(p) if p.isdigit() else p for p in exc.field.split("."))] if exc.field else ["body"]
    kind = "value_error.limit" if isinstance(exc, LimitExceeded) else "value_error.fit"
    return JSONResponse(status_code=422, content={"detail": [{"loc": loc, "msg": exc.message, "type": kind}]})


async def _job_not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(exc)})


async def _job_finished(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=409, content={"detail": str(exc)})


async def _queue_full(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QueueFull)
    return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": str(exc.retry_after_s)})


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    """The store refused a new job: 507 while the disk (or the store's cap) is full, 503 if it is unwritable."""
    assert isinstance(exc, StorageError)
    status = 507 if isinstance(exc, StorageFull) else 503
    return JSONResponse(status_code=status, content={"detail": str(exc)}, headers={"Retry-After": "30"})


async def _invalid_cursor(request: Request, exc: Exception) -> JSONResponse:
    detail = [{"loc": ["query", "cursor"], "msg": str(exc), "type": "value_error"}]
    return JSONResponse(status_code=422, content={"detail": detail})


async def _fit_failed(request: Request, exc: Exception) -> JSONResponse:
    """A synchronous fit whose job ended without a result: cancelled by someone (409) or the worker failed (503)."""
    assert isinstance(exc, FitFailed)
    status = 409 if exc.error.get("type") == "cancelled" else 503
    return JSONResponse(status_code=status, content={"detail": exc.error.get("message", "the fit failed")})


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(status_code=500, content={"detail": "internal server error"})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(EMError, _em_error)
    app.add_exception_handler(JobNotFound, _job_not_found)
    app.add_exception_handler(JobAlreadyFinished, _job_finished)
    app.add_exception_handler(QueueFull, _queue_full)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(InvalidCursor, _invalid_cursor)
    app.add_exception_handler(FitFailed, _fit_failed)
    app.add_exception_handler(Exception, _unexpected_error)
