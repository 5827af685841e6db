"""Per-request context: an id (accepted from or returned as X-Request-ID), a log line, and metrics.

A client that leaves while its response streams (an event-stream follower closing the tab) is a normal end,
not an error: what the streaming machinery raises about the closed stream then (anyio's BrokenResourceError,
from FastAPI's event-stream pump) is noted on the request's log line, not logged as an unhandled error.
"""

from __future__ import annotations

import logging
import random
import re
import time

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import request_id
from service.metrics import Metrics

logger = logging.getLogger("service.http")

# A caller's id is echoed only if it is short and plain, so it cannot forge log lines or headers.
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        # An id needs to be unique, not secret: the OS's entropy (uuid4) is a ~20 us system call on these machines.
        rid = incoming if _ACCEPTABLE_ID.match(incoming) else f"{random.getrandbits(128):032x}"
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500
        responding = client_gone = False

        async def receive_watching() -> Message:
            nonlocal client_gone
            message = await receive()
            if message["type"] == "http.disconnect":
                client_gone = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, responding, client_gone
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
                responding = True
            try:
                await send(message)
            except OSError:  # ASGI 2.4 servers say so on send
                client_gone = True
                raise

        extra: dict[str, object] = {}
        try:
            await self.app(scope, receive_watching, send_with_id)
        except BaseException as exc:
            if not (responding and client_gone and _closed_stream_only(exc)):
                raise
            extra["client_disconnected"] = True
        finally:
            seconds = time.perf_counter() - started
            route = _route_template(scope)
            self.metrics.observe_request(route, scope["method"], status, seconds)
            logger.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={"route": route, "status": status, "duration_ms": round(seconds * 1000, 3), **extra},
            )
            request_id.reset(token)


def _closed_stream_only(exc: BaseException) -> bool:
    """Whether ``exc`` is (a group of) nothing but errors about a stream closed under the sender."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_closed_stream_only(inner) for inner in exc.exceptions)
    return isinstance(exc, anyio.BrokenResourceError | anyio.ClosedResourceError)


def _route_template(scope: Scope) -> str:
    """The matched route's path template (bounded label values), not the raw path."""
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))
