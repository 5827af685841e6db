"""The HTTP edge: cheap refusals first, from the request head alone, before a byte of the body is read.

In order: headers over ``EM_MAX_HEADERS`` or ``EM_MAX_HEADER_BYTES`` get 431; a declared ``Content-Length``
over ``EM_MAX_BODY_BYTES`` gets 413; a /v1/* call without a valid key gets 401 (the caller's
:class:`~service.api.security.Principal` is left on the scope for routes). The body limit holds while the body
streams in too (a chunked body, or one longer than it said): the request stops at the limit with a 413, so no
more than the limit is ever held. Every refusal is JSON, ``{"detail": "..."}``, like the app's other errors.

A server cuts off what never reaches the app: with uvicorn's default httptools, run it with
``--http service.api.server_protocol:HeadLimitedHttpToolsProtocol`` so a multi-megabyte head is refused
while it arrives, not parsed first.
"""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.security import UNAUTHORIZED_DETAIL, KeyRing
from service.settings import Settings

PROTECTED_PREFIX = "/v1"


class BodyTooLarge(HTTPException):
    """Raised by ``receive`` once the body passes the limit. An HTTPException, so FastAPI's body reading lets it
    through and the app's handler answers it (a JSON 413); the edge answers it if nothing else did."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=body_limit_detail(limit))


def body_limit_detail(limit: int, declared: int | None = None) -> str:
    said = f" (Content-Length: {declared})" if declared is not None else ""
    return f"the request body{said} is over the limit of {_bytes(limit, 'EM_MAX_BODY_BYTES')}"


def _bytes(size: int, setting: str) -> str:
    """``268435456 bytes (256 MiB, EM_MAX_BODY_BYTES)``: the exact limit, readable, and where it is set."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size} bytes ({size / scale:.4g} {unit}, {setting})"
    return f"{size} bytes ({setting})"


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.keys = KeyRing(settings.api_keys, settings.admin_keys)
        self.max_body_bytes = settings.max_body_bytes
        self.max_header_bytes = settings.max_header_bytes
        self.max_headers = settings.max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if len(headers) > self.max_headers:
            detail = (
                f"the request has {len(headers)} headers, more than the limit of {self.max_headers} (EM_MAX_HEADERS)"
            )
            await _refuse(send, 431, detail, close=True)
            return
        header_bytes = sum(len(name) + len(value) + 4 for name, value in headers)  # "name: value\r\n"
        if header_bytes > self.max_header_bytes:
            detail = (
                f"the request headers are {header_bytes} bytes, "
                f"over the limit of {_bytes(self.max_header_bytes, 'EM_MAX_HEADER_BYTES')}"
            )
            await _refuse(send, 431, detail, close=True)
            return

        declared = _content_length(headers)
        if declared is not None and declared > self.max_body_bytes:
            await _refuse(send, 413, body_limit_detail(self.max_body_bytes, declared), close=True)
            return

        principal = self.keys.principal(headers)
        if principal is None and _is_protected(scope):
            # No Connection: close here: the server discards an unread body without holding it, and a client
            # that is still sending then reads a clean 401 rather than a reset connection.
            await _refuse(send, 401, UNAUTHORIZED_DETAIL, extra=[(b"www-authenticate", b"Bearer")])
            return
        if principal is not None:
            scope.setdefault("state", {})["principal"] = principal

        limit = self.max_body_bytes
        received = 0
        over = started = False

        async def receive_within_limit() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise BodyTooLarge(limit)
            return message

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if over:  # the rest of the body is not worth reading: close after this answer
                    message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        try:
            await self.app(scope, receive_within_limit, send_tracking)
        except BodyTooLarge as exc:
            if started:
                raise
            await _refuse(send, 413, str(exc.detail), close=True)


def _is_protected(scope: Scope) -> bool:
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed length before the app sees it
    return None


async def _refuse(
    send: Send, status: int, detail: str, *, close: bool = False, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = orjson.dumps({"detail": detail})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
