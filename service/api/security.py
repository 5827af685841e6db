"""Optional API keys: with ``EM_API_KEYS`` set, /v1/* needs ``Authorization: Bearer <key>`` or ``X-API-Key``."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.api.deps import get_settings
from service.settings import Settings

bearer = HTTPBearer(auto_error=False, scheme_name="BearerKey", description="an API key as a bearer token")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKeyHeader")

UNAUTHORIZED = {401: {"description": "API keys are configured and the request has no valid one"}}


def require_api_key(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    header_key: Annotated[str | None, Depends(api_key_header)],
) -> None:
    """Open when no keys are configured; otherwise one of the keys, compared in constant time."""
    if not settings.api_keys:
        return
    presented = credentials.credentials if credentials is not None else header_key
    if presented is not None:
        candidate = presented.encode()
        # Compare with every key (no early exit): the time taken says nothing about which key was close.
        matches = [secrets.compare_digest(candidate, key.encode()) for key in settings.api_keys]
        if any(matches):
            return
    raise HTTPException(
        status_code=401,
        detail="missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
        headers={"WWW-Authenticate": "Bearer"},
    )
