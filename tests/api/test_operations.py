"""Operations: API keys, request ids, Prometheus metrics, body limits, CORS, structured logs."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.conftest import DO_BATZOGLOU

DNB = {"sequences": DO_BATZOGLOU, "init": {"biases": [0.6, 0.5]}}


@pytest.fixture
def keyed_client(tmp_path):
    settings = Settings(data_dir=tmp_path, api_keys=["first-key", "second-key"])
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_api_keys_from_the_environment_are_comma_separated(monkeypatch, tmp_path):
    monkeypatch.setenv("EM_API_KEYS", "alpha, beta,")
    monkeypatch.setenv("EM_CORS_ORIGINS", "https://a.example,https://b.example")
    settings = Settings(data_dir=tmp_path)
    assert settings.api_keys == ["alpha", "beta"]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("POST", "/v1/fit/coins", DNB),
        ("POST", "/v1/jobs/coins", DNB),
        ("GET", "/v1/jobs", None),
        ("GET", "/v1/jobs/some-id", None),
        ("DELETE", "/v1/jobs/some-id", None),
    ],
)
def test_v1_needs_a_key_when_keys_are_configured(keyed_client, method, path, body):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": "Basic x"}):
        response = keyed_client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, headers
        assert "API key" in response.json()["detail"]
        assert response.headers["www-authenticate"] == "Bearer"


def test_either_header_with_any_configured_key_works(keyed_client):
    bearer = keyed_client.post("/v1/fit/coins", json=DNB, headers={"Authorization": "Bearer second-key"})
    assert bearer.status_code == 200
    header = keyed_client.post("/v1/fit/coins", json=DNB, headers={"X-API-Key": "first-key"})
    assert header.status_code == 200
    assert bearer.json()["params"] == header.json()["params"]
    assert keyed_client.get("/v1/jobs", headers={"X-API-Key": "first-key"}).status_code == 200


def test_health_metrics_and_docs_stay_open_with_keys(keyed_client):
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert keyed_client.get(path).status_code == 200, path


def test_without_keys_v1_is_open(client):
    assert client.post("/v1/fit/coins", json=DNB).status_code == 200


def test_security_schemes_are_documented(client):
    schema = client.get("/openapi.json").json()
    assert {"BearerKey", "ApiKeyHeader"} <= set(schema["components"]["securitySchemes"])
    operation = schema["paths"]["/v1/fit/coins"]["post"]
    assert {"BearerKey": []} in operation["security"] and "401" in operation["responses"]
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_request_id_is_returned_and_a_caller_id_is_echoed(client):
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    forged = client.get("/healthz", headers={"X-Request-ID": "bad id\nwith newline"}).headers["x-request-id"]
    assert forged != "bad id\nwith newline" and len(forged) == 32


def test_metrics_count_requests_fits_and_iterations(client):
    assert client.post("/v1/fit/coins", json=DNB).status_code == 200
    assert client.post("/v1/fit/gaussian", json={"points": [1, 2, "x"]}).status_code == 422
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'em_http_requests_total{method="POST",route="/v1/fit/coins",status="200"} 1.0' in text
    assert 'em_http_requests_total{method="POST",route="/v1/fit/gaussian",status="422"} 1.0' in text
    assert 'em_fits_total{model="coins",outcome="succeeded"} 1.0' in text
    assert "em_iterations_total" in text and "em_http_request_duration_seconds_bucket" in text
    for gauge in ("em_queue_depth 0.0", "em_busy_workers 0.0", "em_workers 2.0"):
        assert gauge in text


def test_a_body_over_the_limit_is_413(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path, max_body_bytes=1000))) as client:
        response = client.post("/v1/fit/gaussian", json={"points": list(range(1000))})
        assert response.status_code == 413
        assert client.post("/v1/fit/coins", json=DNB).status_code == 200


def test_cors_when_configured(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path, cors_origins=["https://app.example"]))) as client:
        preflight = client.options(
            "/v1/fit/coins",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        other = client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_request_logs_are_json_with_the_request_id(capfd, tmp_path):
    # The app is built after capfd starts, so its log handler writes into the captured stderr.
    with TestClient(create_app(Settings(data_dir=tmp_path))) as client:
        client.get("/healthz", headers={"X-Request-ID": "trace-me"})
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    entry = next(line for line in lines if line.get("request_id") == "trace-me")
    assert entry["logger"] == "service.http" and entry["status"] == 200 and entry["route"] == "/healthz"
    assert entry["level"] == "INFO" and "duration_ms" in entry and "time" in entry
    assert logging.getLogger("uvicorn.access").disabled
