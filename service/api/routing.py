"""A route class that parses JSON bodies with orjson: several times faster than the standard library on
large point clouds. Bodies orjson refuses (NaN/Infinity literals, integers beyond 64 bits) fall back to
the standard library, so the validators can still name the offending value."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute


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

        async def parse_with_orjson(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return parse_with_orjson
