"""How requests reach the route handlers.

A route class for JSON bodies: a body sent as anything but JSON is a 415 that says what to send, and JSON is
parsed with orjson, several times faster than the standard library on large point clouds. Bodies orjson
refuses (NaN/Infinity literals, integers beyond 64 bits) fall back to the standard library, so the validators
can still name the offending value.

A large body (``EM_BODY_OFFLOAD_BYTES``, 1 MiB) is parsed *and validated* in a helper process. Parsing and
validating hold the GIL from start to end (orjson builds Python objects; numpy converts the nested lists):
on a thread they would stall the event loop just the same, ~3.5 s for a 100 MB point cloud. The helper
hands back the validated request, which for a point cloud is a numpy array: cheap to send.

And a middleware that makes ``Allow`` tell the truth: a path's methods are spread over several routes
(``GET`` and ``DELETE /v1/jobs/{id}``), but a 405 names only those of the first route that matched the path.
``OPTIONS`` on a path answers 204 with all of them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Literal

import anyio
import anyio.to_process
import orjson
from anyio.lowlevel import RunVar
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("service.http")

_NOT_JSON = (
    "the body must be JSON, sent with 'Content-Type: application/json' (with curl: -H 'Content-Type: "
    "application/json' --data-binary @body.json, or --json)"
)


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def loads(body: bytes | bytearray) -> Any:
    """The body's JSON: orjson, or the standard library for what orjson refuses; a JSONDecodeError otherwise."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:  # a JSONDecodeError, so FastAPI answers 422 json_invalid
            raise json.JSONDecodeError(f"the body is not UTF-8 text ({exc.reason})", "", exc.start) from None
        try:
            return json.loads(text)  # NaN, 1e999, huge ints parse here; real syntax errors raise
        except RecursionError:  # orjson stops at 1024 levels, the standard library at its stack
            raise json.JSONDecodeError("the body nests arrays or objects too deeply", "", 0) from None


class _OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


# --- Large bodies: parsed and validated in a helper process -------------------------------------------------

# A validated request holding more small objects than this (models, dicts, lists) in one list costs more to
# send back than to build here: the helper then only says "valid" and this process parses it itself.
_MANY_OBJECTS = 10_000

Outcome = (
    tuple[Literal["valid"], BaseModel]
    | tuple[Literal["invalid"], list[dict[str, Any]]]
    | tuple[Literal["json_invalid"], str, int]
    | tuple[Literal["parse_here"], None]
)


def parse_and_validate(body: bytes | bytearray, model: type[BaseModel]) -> Outcome:
    """In the helper process: the body as FastAPI would see it, parsed and validated (errors without input)."""
    try:
        data = loads(body)
    except json.JSONDecodeError as exc:
        return ("json_invalid", exc.msg, exc.pos)
    try:
        value = model.model_validate(data, from_attributes=True)  # what FastAPI's body field does
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        return ("invalid", [{"type": e["type"], "loc": e["loc"], "msg": e["msg"]} for e in errors])
    if _many_objects(value):
        return ("parse_here", None)
    return ("valid", value)


def _many_objects(value: BaseModel) -> bool:
    for item in value.__dict__.values():
        if (
            isinstance(item, list | tuple)
            and len(item) > _MANY_OBJECTS
            and isinstance(item[0], BaseModel | dict | list)
        ):
            return True
    return False


def loop_limiter(name: str, capacity: int) -> Callable[[], anyio.CapacityLimiter]:
    """A getter of a capacity limiter made once per event loop (a limiter belongs to the loop it is used on)."""
    variable: RunVar[anyio.CapacityLimiter] = RunVar(name)

    def get() -> anyio.CapacityLimiter:
        try:
            return variable.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(capacity)
            variable.set(limiter)
            return limiter

    return get


# One body at a time: parsing is CPU-bound and the event loop and the fit workers need the cores too.
parse_limiter = loop_limiter("parse_limiter", 1)


async def _parse_elsewhere(request: _OrjsonRequest, body: bytes | bytearray, model: type[BaseModel]) -> None:
    """Leave the validated body on the request (FastAPI's own validation then accepts it as it is), or raise
    the 422 FastAPI would have raised. If the helper cannot be used, the request is parsed here as before."""
    try:
        outcome = await anyio.to_process.run_sync(
            parse_and_validate, body, model, cancellable=True, limiter=parse_limiter()
        )
    except anyio.get_cancelled_exc_class():
        raise
    except Exception:
        logger.warning("parsing a %d-byte body in a helper process failed; parsing it here", len(body), exc_info=True)
        return
    if outcome[0] == "valid":
        request._json = outcome[1]
    elif outcome[0] == "invalid":
        errors = [{**error, "loc": ("body", *error["loc"])} for error in outcome[1]]
        raise RequestValidationError(errors)
    elif outcome[0] == "json_invalid":
        _, message, position = outcome
        error = {
            "type": "json_invalid",
            "loc": ("body", position),
            "msg": "JSON decode error",
            "ctx": {"error": message},
        }
        raise RequestValidationError([error])


async def _read_body(request: _OrjsonRequest) -> bytes | bytearray:
    """``request.body()``, gathered into one growing buffer: Starlette joins the chunks at the end, one copy
    of the whole body into fresh memory, which for 250 MB holds the event loop for a quarter of a second.
    Growing a bytearray costs a little per chunk instead (large buffers grow by remapping, not copying)."""
    if not hasattr(request, "_body"):
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
        # A bytearray where bytes are expected: everything that reads a body (orjson, json, pickle, FastAPI's
        # emptiness check) takes either, and converting would be the very copy avoided here.
        request._body = buffer  # type: ignore[assignment]
    body: bytes | bytearray = request._body
    return body


class OrjsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None
        annotation = getattr(self.body_field.field_info, "annotation", None) if self.body_field else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None

        async def parse_with_orjson(request: Request) -> Response:
            # FastAPI parses a body only when it is declared JSON; anything else would fail validation with a
            # message ("Input should be a valid dictionary") that does not say what is wrong.
            content_type = request.headers.get("content-type")
            if takes_body and not _is_json(content_type or ""):
                got = f"got {content_type[:100]!r}" if content_type else "got no Content-Type"
                return JSONResponse({"detail": f"{_NOT_JSON}; {got}"}, status_code=415)
            json_request = _OrjsonRequest(request.scope, request.receive)
            if model is not None:
                settings = getattr(request.app.state, "settings", None)
                threshold = settings.body_offload_bytes if settings is not None else 0
                if threshold:
                    try:
                        body = await _read_body(json_request)
                    except ClientDisconnect:  # what FastAPI answers when it reads the body itself
                        raise HTTPException(status_code=400, detail="There was an error parsing the body") from None
                    if len(body) >= threshold:
                        await _parse_elsewhere(json_request, body, model)
            return await handler(json_request)

        return parse_with_orjson


# --- Allow: every method of a path ---------------------------------------------------------------------------

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> list[str]:
    """The methods some route serves at this scope's path, in a fixed order (OPTIONS included if any)."""
    routes = list(routes)
    allowed = [method for method in (*_METHODS, "OPTIONS") if _served(routes, scope, method)]
    if allowed and "OPTIONS" not in allowed:
        allowed.append("OPTIONS")  # answered by AllowedMethodsMiddleware
    return allowed


def _served(routes: list[BaseRoute], scope: Scope, method: str) -> bool:
    probe = {
        "type": "http",
        "method": method,
        "path": scope["path"],
        "root_path": scope.get("root_path", ""),
        "headers": scope.get("headers", []),
        "query_string": b"",
    }
    return any(route.matches(dict(probe))[0] == Match.FULL for route in routes)


class AllowedMethodsMiddleware:
    """``OPTIONS`` on a path that no route serves for OPTIONS: 204 with ``Allow``; a 405's ``Allow``: every
    method of the path. ``routes`` is read per request (routers added after the middleware count)."""

    def __init__(self, app: ASGIApp, routes: Callable[[], Iterable[BaseRoute]]) -> None:
        self.app, self.routes = app, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and not _served(list(self.routes()), scope, "OPTIONS"):
            allowed = allowed_methods(self.routes(), scope)
            if allowed:
                headers = [(b"allow", ", ".join(allowed).encode()), (b"content-length", b"0")]
                await send({"type": "http.response.start", "status": 204, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                return

        async def send_with_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                allowed = allowed_methods(self.routes(), scope)
                if allowed:
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                    message["headers"] = [*headers, (b"allow", ", ".join(allowed).encode())]
            await send(message)

        await self.app(scope, receive, send_with_allow)
