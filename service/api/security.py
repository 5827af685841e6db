"""API keys and tenants. With ``EM_API_KEYS`` (or ``EM_ADMIN_KEYS``) set, /v1/* needs ``Authorization: Bearer
<key>`` or ``X-API-Key: <key>``; each key is a tenant.

The key is checked by the edge middleware (service/api/edge.py) from the headers alone, before a byte of the
body is read, and the caller's :class:`Principal` is left on the ASGI scope (``request.state.principal``).
What is here declares the two schemes in OpenAPI (Swagger UI's *Authorize*) and hands routes
the principal.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

# The two ways to present a key, as OpenAPI schemes (Swagger UI's *Authorize*).
SECURITY_SCHEMES = {
    "BearerKey": {"type": "http", "description": "an API key as a bearer token", "scheme": "bearer"},
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}
SECURITY: list[dict[str, list[str]]] = [{"BearerKey": []}, {"ApiKeyHeader": []}]

UNAUTHORIZED = {401: {"description": "API keys are configured and the request has no valid one"}}
UNAUTHORIZED_DETAIL = "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. ``tenant``: a stable id of the caller's key (never the key), or None when no keys are
    configured (an open service: everyone shares one space). ``admin``: the key is one of ``EM_ADMIN_KEYS``."""

    tenant: str | None
    admin: bool


# Without keys every caller is this one.
OPEN = Principal(tenant=None, admin=False)


def tenant_id(key: str) -> str:
    """The tenant a key stands for: the first 16 hex digits of its SHA-256 (stable, not reversible)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class KeyRing:
    """The configured keys, each with its principal. An admin key listed among the plain keys too is admin."""

    def __init__(self, api_keys: Iterable[str], admin_keys: Iterable[str] = ()) -> None:
        admins = set(admin_keys)
        keys = dict.fromkeys([*api_keys, *admins])  # ordered, no duplicates
        self._keys: list[tuple[bytes, Principal]] = [
            (key.encode(), Principal(tenant=tenant_id(key), admin=key in admins)) for key in keys
        ]

    @property
    def configured(self) -> bool:
        return bool(self._keys)

    def principal(self, headers: Sequence[tuple[bytes, bytes]]) -> Principal | None:
        """The caller's principal, from raw ASGI headers: OPEN without keys, None for a missing or wrong key."""
        if not self._keys:
            return OPEN
        presented = _presented_key(headers)
        if presented is None:
            return None
        # Compare with every key (no early exit): the time taken says nothing about which key was close.
        found = None
        for key, principal in self._keys:
            if secrets.compare_digest(presented, key):
                found = principal
        return found


def _presented_key(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """``Authorization: Bearer <key>`` if sent, else ``X-API-Key`` (the first of each, as Starlette reads them)."""
    authorization = api_key = None
    for name, value in headers:
        if name == b"authorization" and authorization is None:
            authorization = value
        elif name == b"x-api-key" and api_key is None:
            api_key = value
    if authorization is not None:
        scheme, _, credentials = authorization.partition(b" ")
        credentials = credentials.strip()
        if scheme.lower() == b"bearer" and credentials:
            return credentials
    return api_key


async def get_principal(request: Request) -> Principal:
    """The caller, as the edge middleware identified it (a 401 if it did not: fail closed)."""
    return principal_of(request)


def principal_of(request: Request) -> Principal:
    """``get_principal`` for a handler that needs the caller only sometimes (no per-request dependency)."""
    principal = request.scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):
        raise HTTPException(status_code=401, detail=UNAUTHORIZED_DETAIL, headers={"WWW-Authenticate": "Bearer"})
    return principal


def declare_security(routes: Iterable[BaseRoute]) -> None:
    """Declare the two schemes on each of these operations (OpenAPI only: the key itself is checked at the edge,
    before the body is read). Not a dependency: FastAPI would resolve one, and its two schemes, on every request,
    a tenth of a small fit's time in the service, only to repeat what the edge did."""
    for route in routes:
        if isinstance(route, APIRoute):
            route.openapi_extra = {**(route.openapi_extra or {}), "security": SECURITY}


def with_security_schemes(schema: dict[str, Any]) -> dict[str, Any]:
    schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    return schema
