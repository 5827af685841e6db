"""A route class for JSON bodies: a body sent as anything but JSON is a 415 that says what to send, and
JSON is parsed with orjson, several times faster than the standard library on large point clouds. Bodies
orjson refuses (NaN/Infinity literals, integers beyond 64 bits) fall back to the standard library, so the
validators can still name the offending value."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

_NOT_JSON = (
    "the body must be JSON, sent with 'Content-Type: application/json' (with curl: -H 'Content-Type: "
    "application/json' --data-binary @body.json, or --json)"
)


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


class _OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError as exc:  # a JSONDecodeError, so FastAPI answers 422 json_invalid
                    raise json.JSONDecodeError(f"the body is not UTF-8 text ({exc.reason})", "", exc.start) from None
                try:
                    self._json = json.loads(text)  # NaN, 1e999, huge ints parse here; real syntax errors raise
                except RecursionError:  # orjson stops at 1024 levels, the standard library at its stack
                    raise json.JSONDecodeError("the body nests arrays or objects too deeply", "", 0) from None
        return self._json


class OrjsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def parse_with_orjson(request: Request) -> Response:
            # FastAPI parses a body only when it is declared JSON; anything else would fail validation with a
            # message ("Input should be a valid dictionary") that does not say what is wrong.
            content_type = request.headers.get("content-type")
            if takes_body and not _is_json(content_type or ""):
                got = f"got {content_type[:100]!r}" if content_type else "got no Content-Type"
                return JSONResponse({"detail": f"{_NOT_JSON}; {got}"}, status_code=415)
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return parse_with_orjson
