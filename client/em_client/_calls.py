"""What each client method sends, shared by the synchronous and asynchronous clients.

``OPERATIONS`` names, for every method that calls an endpoint, the schema's operation it calls (method, path
template and body content type); tests/client/test_schema_drift.py holds this table and the clients' methods
against openapi/openapi.json. A :class:`Call` is one request, built by :func:`build` from that table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from em_client._arrays import json_default

T = TypeVar("T")

JSON = "application/json"
NPY = "application/x-npy"
ARROW = "application/vnd.apache.arrow.stream"
CSV = "text/csv"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # the template, as the schema writes it
    content_type: str | None = None  # how the body is sent (None: no body)


# The model families, each with a synchronous fit and a job endpoint.
KINDS = ("coins", "gaussian", "alleles", "abundances", "hmm")

# One row per client method that calls an endpoint. Methods not listed (wait, close) are built on these.
OPERATIONS: dict[str, Operation] = {
    **{f"fit_{kind}": Operation("POST", f"/v1/fit/{kind}", JSON) for kind in KINDS},
    "select_gaussian": Operation("POST", "/v1/fit/gaussian/select", JSON),
    **{f"submit_{kind}": Operation("POST", f"/v1/jobs/{kind}", JSON) for kind in KINDS},
    "submit_gaussian_select": Operation("POST", "/v1/jobs/gaussian/select", JSON),
    "list_jobs": Operation("GET", "/v1/jobs"),
    "get_job": Operation("GET", "/v1/jobs/{job_id}"),
    "cancel_job": Operation("DELETE", "/v1/jobs/{job_id}"),
    "follow": Operation("GET", "/v1/jobs/{job_id}/events"),
    "plot_job": Operation("GET", "/v1/jobs/{job_id}/plot"),
    "upload_dataset": Operation("POST", "/v1/datasets", JSON),
    "upload_array": Operation("POST", "/v1/datasets", NPY),
    "upload_arrow": Operation("POST", "/v1/datasets", ARROW),
    "upload_csv": Operation("POST", "/v1/datasets", CSV),
    "list_datasets": Operation("GET", "/v1/datasets"),
    "get_dataset": Operation("GET", "/v1/datasets/{dataset_id}"),
    "delete_dataset": Operation("DELETE", "/v1/datasets/{dataset_id}"),
    "list_models": Operation("GET", "/v1/models"),
    "import_model": Operation("POST", "/v1/models", JSON),
    "get_model": Operation("GET", "/v1/models/{model_id}"),
    "delete_model": Operation("DELETE", "/v1/models/{model_id}"),
    "predict": Operation("POST", "/v1/models/{model_id}/predict", JSON),
    "score": Operation("POST", "/v1/models/{model_id}/score", JSON),
    "sample": Operation("POST", "/v1/models/{model_id}/sample", JSON),
    "plot_model": Operation("GET", "/v1/models/{model_id}/plot"),
    "health": Operation("GET", "/healthz"),
    "ready": Operation("GET", "/readyz"),
    "metrics": Operation("GET", "/metrics"),
}


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer: ``result`` is the type to decode the JSON into (``NoneType``: no
    body; ``str``: text as is; ``bytes``: binary as is); ``answers`` are error statuses that are answers here
    (``/readyz``'s 503)."""

    method: str
    path: str
    result: type[T]
    params: dict[str, str | int] = field(default_factory=dict)
    content: bytes | None = None
    content_type: str | None = None
    answers: frozenset[int] = frozenset()


def build(
    name: str,
    result: type[T],
    *,
    path: Mapping[str, str] | None = None,
    body: Mapping[str, Any] | None = None,
    content: bytes | None = None,
    params: Mapping[str, str | int | None] | None = None,
    answers: frozenset[int] = frozenset(),
) -> Call[T]:
    """The request of the method ``name``: its operation's path filled from ``path``, ``body`` as JSON (or
    ``content`` as is), ``params`` without the ones left at None."""
    operation = OPERATIONS[name]
    url = operation.path.format(**{key: quote(value, safe="") for key, value in (path or {}).items()})
    if body is not None:
        content = encode_json(body)
    query = {key: value for key, value in (params or {}).items() if value is not None}
    return Call(operation.method, url, result, query, content, operation.content_type, answers)


def encode_json(body: Mapping[str, Any]) -> bytes:
    """The body as JSON. numpy arrays and numbers are taken as lists and numbers (NaN in an array as null: a
    missing coordinate, as in an NPY upload); a NaN or infinity elsewhere is refused here (JSON has none)."""
    try:
        return json.dumps(body, default=json_default, allow_nan=False, separators=(",", ":")).encode()
    except ValueError as exc:
        raise ValueError(f"the request cannot be sent as JSON: {exc}") from None


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header's delay in seconds (the service sends seconds; an HTTP date is not retried on)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
