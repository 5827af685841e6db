"""What the client raises. Every error the service answers is an :class:`APIError` carrying its status code and
body; network failures stay httpx's own exceptions (``httpx.TransportError``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class EMError(Exception):
    """Base of every error this client raises."""


class UnexpectedResponse(EMError):
    """The service answered something this client cannot read (not the JSON the schema promises)."""


class APIError(EMError):
    """The service answered with an error status.

    ``status_code`` and ``body`` (the parsed JSON, or the text when it is not JSON) are the response's;
    ``detail`` is the body's ``detail`` (a message, or for a 422 a list of problems); ``request_id`` is the
    response's ``X-Request-ID``, which the service's logs carry too.
    """

    def __init__(self, status_code: int, body: Any, request_id: str | None = None) -> None:
        self.status_code = status_code
        self.body = body
        self.request_id = request_id
        self.detail: Any = body.get("detail") if isinstance(body, dict) else body
        super().__init__(f"{status_code}: {self._describe()}")

    def _describe(self) -> str:
        return str(self.detail)


@dataclass(frozen=True)
class Problem:
    """One thing a 422 found wrong: where (``loc``, e.g. ``("body", "points")``), what (``msg``) and its ``type``."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    @property
    def field(self) -> str:
        """The field as a dotted path without the leading ``body``/``query``, e.g. ``init.means``."""
        parts = self.loc[1:] if self.loc and self.loc[0] in ("body", "query", "path", "header") else self.loc
        return ".".join(str(part) for part in parts)


class RequestRejected(APIError):
    """422: the request is invalid. ``problems`` lists what is wrong, each naming its field."""

    def __init__(self, status_code: int, body: Any, request_id: str | None = None) -> None:
        detail = body.get("detail") if isinstance(body, dict) else None
        self.problems = [
            Problem(tuple(item.get("loc", ())), str(item.get("msg", "")), str(item.get("type", "")))
            for item in (detail if isinstance(detail, list) else [])
            if isinstance(item, dict)
        ]
        super().__init__(status_code, body, request_id)

    @property
    def fields(self) -> list[str]:
        """The fields the problems name (``points``, ``init.means``, ...), in order."""
        return [problem.field for problem in self.problems]

    def _describe(self) -> str:
        if not self.problems:
            return str(self.detail)
        return "; ".join(f"{problem.field or 'body'}: {problem.msg}" for problem in self.problems)


class Unauthorized(APIError):
    """401: API keys are configured and the request had no valid one."""


class NotFound(APIError):
    """404: no such job, dataset or model (or it expired, or belongs to another key)."""


class Conflict(APIError):
    """409: the resource is in the wrong state (a finished job cancelled, a dataset in use deleted)."""


class PayloadTooLarge(APIError):
    """413: the body is over the server's limit."""


class UnsupportedMediaType(APIError):
    """415: the body's content type is not one the endpoint takes."""


class ServiceUnavailable(APIError):
    """503 (or 429), after the client's retries: the queue is full or the store unwritable (nothing was done), or a
    synchronous fit's worker failed. ``retry_after`` is the server's last Retry-After in seconds, if it sent one."""

    def __init__(
        self, status_code: int, body: Any, request_id: str | None = None, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(status_code, body, request_id)


class InsufficientStorage(ServiceUnavailable):
    """507: the server's disk is full; nothing was kept."""


ERRORS_BY_STATUS: dict[int, type[APIError]] = {
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: RequestRejected,
    429: ServiceUnavailable,
    503: ServiceUnavailable,
    507: InsufficientStorage,
}
