"""Sending a :class:`~em_client._calls.Call` and reading its answer: retries, errors, decoding. The two send
loops (sync and async) are the only code written twice; everything they decide is shared."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import httpx

from em_client._calls import Call, T, retry_after_seconds
from em_client._decode import decode
from em_client.errors import ERRORS_BY_STATUS, APIError, ServiceUnavailable
from em_client.retry import RetryPolicy


def send(http: httpx.Client, call: Call[T], policy: RetryPolicy, strict: bool) -> T:
    attempt = 1
    while True:
        response = http.request(
            call.method, call.path, params=call.params, content=call.content, headers=_headers(call)
        )
        delay = _retry_delay(policy, attempt, response)
        if delay is None:
            return read(call, response, strict)
        response.close()
        time.sleep(delay)
        attempt += 1


async def asend(http: httpx.AsyncClient, call: Call[T], policy: RetryPolicy, strict: bool) -> T:
    attempt = 1
    while True:
        response = await http.request(
            call.method, call.path, params=call.params, content=call.content, headers=_headers(call)
        )
        delay = _retry_delay(policy, attempt, response)
        if delay is None:
            return read(call, response, strict)
        await response.aclose()
        await asyncio.sleep(delay)
        attempt += 1


def _headers(call: Call[Any]) -> dict[str, str]:
    return {"Content-Type": call.content_type} if call.content is not None and call.content_type else {}


def _retry_delay(policy: RetryPolicy, attempt: int, response: httpx.Response) -> float | None:
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    return policy.delay(attempt, response.status_code, retry_after)


def read(call: Call[T], response: httpx.Response, strict: bool) -> T:
    """The answer as ``call.result`` (``str``: the text as is; ``bytes``: the body as is, an image say; ``NoneType``:
    nothing), or the error raised."""
    if response.status_code >= 400 and response.status_code not in call.answers:
        raise error_for(response)
    if call.result is type(None):
        return None
    if call.result is str:
        return cast(T, response.text)
    if call.result is bytes:
        return cast(T, response.content)
    return decode(call.result, response.json(), strict=strict)


def error_for(response: httpx.Response) -> APIError:
    """The exception for an error answer (its body already read)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    request_id = response.headers.get("X-Request-ID")
    status = response.status_code
    kind = ERRORS_BY_STATUS.get(status, APIError)
    if issubclass(kind, ServiceUnavailable):
        return kind(status, body, request_id, retry_after_seconds(response.headers.get("Retry-After")))
    return kind(status, body, request_id)
