"""Property-based fuzzing of a live server against the committed OpenAPI schema (Schemathesis).

Every operation gets generated requests, valid and invalid; no response may be a 5xx, and every
response must match the schema: status code documented, content type, body and headers.
The server runs with small caps so no generated fit can run long.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.live_server import live_server

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
schema = schemathesis.openapi.from_path(SCHEMA_PATH)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
SMALL_CAPS = {
    "EM_MAX_ITER_CAP": "50",
    "EM_N_INIT_CAP": "3",
    "EM_DEFAULT_TIME_LIMIT_S": "2",
    "EM_DEFAULT_JOB_TIME_LIMIT_S": "2",
    "EM_TIME_LIMIT_CAP_S": "5",
    "EM_MAX_POINTS": "2000",
    "EM_MAX_FEATURES": "20",
    "EM_MAX_COMPONENTS": "10",
    "EM_WORKERS": "2",
    "EM_LOG_LEVEL": "WARNING",
}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    with live_server({**SMALL_CAPS, "EM_DATA_DIR": str(tmp_path_factory.mktemp("fuzz"))}) as server:
        yield server.url  # type: ignore[misc]


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_every_operation_conforms_and_never_errors(case: schemathesis.Case, base_url: str) -> None:
    case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)
