"""The floor for the load test: FastAPI parsing the same JSON body and answering a constant, nothing more.

Served by the same uvicorn with the same flags as the service; what the service does beyond this (validation,
the fit, rendering) is what the ratio ours/floor measures.
"""

from __future__ import annotations

from typing import Any

from fastapi import Body, FastAPI
from fastapi.responses import Response

app = FastAPI()
_CONSTANT = b'{"model":"coins","params":{"biases":[0.7967,0.5197],"weights":[0.5,0.5]}}'


@app.get("/healthz")
async def read_health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/fit/coins")
async def fit_coins(body: dict[str, Any] = Body(...)) -> Response:
    return Response(_CONSTANT, media_type="application/json")
