"""Operations: API keys and tenants, request ids, Prometheus metrics, body limits, Allow, CORS, structured logs,
and large bodies parsed off the event loop."""

from __future__ import annotations

import json
import logging
from typing import Annotated

import anyio
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

import service.api.routing as routing
from service.api.edge import EdgeMiddleware
from service.api.middleware import RequestContextMiddleware
from service.api.security import OPEN, KeyRing, Principal, get_principal, tenant_id
from service.main import create_app
from service.metrics import Metrics
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
    monkeypatch.setenv("EM_ADMIN_KEYS", " root ,")
    monkeypatch.setenv("EM_CORS_ORIGINS", "https://a.example,https://b.example")
    settings = Settings(data_dir=tmp_path)
    assert settings.api_keys == ["alpha", "beta"]
    assert settings.admin_keys == ["root"]
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


def test_a_body_over_the_limit_is_a_json_413_naming_the_limit(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path, max_body_bytes=1000))) as client:
        # Declared by Content-Length: refused before it is read.
        response = client.post("/v1/fit/gaussian", json={"points": list(range(1000))})
        assert response.status_code == 413 and response.headers["content-type"] == "application/json"
        assert response.json()["detail"].startswith("the request body (Content-Length: ")
        assert "limit of 1000 bytes (EM_MAX_BODY_BYTES)" in response.json()["detail"]

        # Chunked, no Content-Length: refused once the bytes streamed in pass the limit.
        def chunks(total: int):
            yield b'{"points": [0'
            for _ in range(total // 100):
                yield b", 1" * 33

        streamed = client.post("/v1/fit/gaussian", content=chunks(5000), headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and streamed.headers["connection"] == "close"
        assert streamed.json() == {"detail": "the request body is over the limit of 1000 bytes (EM_MAX_BODY_BYTES)"}
        small = client.post("/v1/fit/coins", content=iter([json.dumps(DNB).encode()]), headers=JSON)
        assert small.status_code == 200
        assert client.post("/v1/fit/coins", json=DNB).status_code == 200


def test_header_count_and_size_limits_are_431(tmp_path):
    settings = Settings(data_dir=tmp_path, max_headers=20, max_header_bytes=2048)
    with TestClient(create_app(settings)) as client:
        many = client.get("/healthz", headers={f"x-filler-{i}": "1" for i in range(30)})
        assert many.status_code == 431 and "more than the limit of 20 (EM_MAX_HEADERS)" in many.json()["detail"]
        large = client.get("/healthz", headers={"x-big": "a" * 4000})
        assert large.status_code == 431 and "limit of 2048 bytes (2 KiB, EM_MAX_HEADER_BYTES)" in large.json()["detail"]
        assert client.get("/healthz", headers={"x-fine": "a" * 1000}).status_code == 200


def test_options_and_405_name_every_method_of_the_path(client):
    options = client.options("/v1/jobs/some-id")
    assert options.status_code == 204 and options.headers["allow"] == "GET, DELETE, OPTIONS"
    wrong = client.put("/v1/jobs/some-id")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, DELETE, OPTIONS"
    assert wrong.json() == {"detail": "Method Not Allowed"}
    # /v1/jobs/coins is both a job kind (POST) and a job id (GET, DELETE).
    assert client.options("/v1/jobs/coins").headers["allow"] == "GET, POST, DELETE, OPTIONS"
    assert client.get("/v1/fit/coins").headers["allow"] == "POST, OPTIONS"
    assert client.options("/nowhere").status_code == 404


JSON = {"content-type": "application/json"}


def _whoami_app(settings: Settings) -> FastAPI:
    """The edge in front of a route that reports who called."""
    app = FastAPI()
    app.add_middleware(EdgeMiddleware, settings=settings)

    @app.get("/v1/whoami")
    @app.get("/open/whoami")
    def whoami(principal: Annotated[Principal, Depends(get_principal)]) -> dict[str, object]:
        return {"tenant": principal.tenant, "admin": principal.admin}

    return app


def test_each_key_is_a_tenant_and_admin_keys_are_admins(tmp_path):
    settings = Settings(data_dir=tmp_path, api_keys=["key-a", "key-b"], admin_keys=["key-root"])
    with TestClient(_whoami_app(settings)) as client:
        a = client.get("/v1/whoami", headers={"Authorization": "Bearer key-a"}).json()
        b = client.get("/v1/whoami", headers={"X-API-Key": "key-b"}).json()
        root = client.get("/v1/whoami", headers={"X-API-Key": "key-root"}).json()
        assert a == {"tenant": tenant_id("key-a"), "admin": False}
        assert b == {"tenant": tenant_id("key-b"), "admin": False}
        assert a["tenant"] != b["tenant"] and root["admin"] is True
        # Stable, short, and not the key.
        assert client.get("/v1/whoami", headers={"X-API-Key": "key-a"}).json() == a
        assert len(a["tenant"]) == 16 and "key-a" not in a["tenant"]
        assert client.get("/v1/whoami", headers={"X-API-Key": "key-c"}).status_code == 401
        # Outside /v1 no key is needed, so none is identified: a route that asks for one gets a 401.
        assert client.get("/open/whoami").status_code == 401
        assert client.get("/open/whoami", headers={"X-API-Key": "key-b"}).json() == b
    with TestClient(_whoami_app(Settings(data_dir=tmp_path))) as client:
        assert client.get("/v1/whoami").json() == {"tenant": None, "admin": False}


def test_key_ring():
    ring = KeyRing(["a", "b"], ["root", "a"])
    assert ring.principal([(b"x-api-key", b"a")]) == Principal(tenant_id("a"), admin=True)  # admin wins
    assert ring.principal([(b"authorization", b"Bearer  b ")]) == Principal(tenant_id("b"), admin=False)
    assert ring.principal([(b"authorization", b"Basic b"), (b"x-api-key", b"b")]) == Principal(tenant_id("b"), False)
    assert ring.principal([(b"authorization", b"Bearer wrong"), (b"x-api-key", b"b")]) is None
    assert ring.principal([]) is None and ring.principal([(b"x-api-key", b"")]) is None
    assert KeyRing([]).principal([]) is OPEN and not KeyRing([]).configured


def test_large_bodies_are_parsed_and_validated_in_a_helper_process(tmp_path, monkeypatch):
    outcomes: list[str] = []
    run_sync = anyio.to_process.run_sync

    async def spy(*args, **kwargs):
        outcome = await run_sync(*args, **kwargs)
        outcomes.append(outcome[0])
        return outcome

    monkeypatch.setattr(routing.anyio.to_process, "run_sync", spy)
    points = [[0, 0], [1, 1], [5, 5], [6, 6]]
    valid = {"points": points, "n_components": 2, "seed": 1}
    invalid = {"points": [[0, 0], [1]], "n_components": 0, "trace": "everything"}
    broken = b'{"points": [[0, 0], [1, 1'

    def answers(client: TestClient) -> list[tuple[int, object]]:
        responses = [
            client.post("/v1/fit/gaussian", json=valid),
            client.post("/v1/fit/gaussian", json=invalid),
            client.post("/v1/fit/gaussian", content=broken, headers=JSON),
            client.post("/v1/fit/coins", json={"counts": [{"heads": 1, "tails": 2}] * 20_000, "seed": 0}),
        ]
        volatile = ("job_id", "model_id", "elapsed_ms")
        return [(r.status_code, {k: v for k, v in r.json().items() if k not in volatile}) for r in responses]

    with TestClient(create_app(Settings(data_dir=tmp_path / "here", body_offload_bytes=0))) as client:
        here = answers(client)
    assert outcomes == []
    with TestClient(create_app(Settings(data_dir=tmp_path / "helper", body_offload_bytes=1))) as client:
        elsewhere = answers(client)
    # The same answers, byte for byte; a request made of many small objects is parsed here after all.
    assert outcomes == ["valid", "invalid", "json_invalid", "parse_here"]
    assert elsewhere == here and [status for status, _ in here] == [200, 422, 422, 200]


async def _disconnecting_app(scope, receive, send):
    """Starts a response, reads what the client did, then fails the way an event stream's pump does when the
    client has left."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await receive()
    raise ExceptionGroup("pump", [anyio.BrokenResourceError()])


def test_a_client_leaving_mid_stream_is_not_an_error_but_real_errors_still_are(caplog):
    async def call(app, messages):
        async def receive():
            return messages.pop(0)

        async def send(message):
            pass

        scope = {"type": "http", "method": "GET", "path": "/events", "headers": []}
        await RequestContextMiddleware(app, Metrics())(scope, receive, send)

    with caplog.at_level(logging.INFO, logger="service.http"):
        anyio.run(call, _disconnecting_app, [{"type": "http.disconnect"}])
    assert caplog.records[-1].client_disconnected is True and caplog.records[-1].status == 200
    # The same error while the client is still there is a real one.
    with pytest.raises(ExceptionGroup):
        anyio.run(call, _disconnecting_app, [{"type": "http.request", "body": b""}])

    async def other_error(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()
        raise ExceptionGroup("pump", [anyio.BrokenResourceError(), ValueError("a bug")])

    with pytest.raises(ExceptionGroup):
        anyio.run(call, other_error, [{"type": "http.disconnect"}])


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


def test_fastapi_opentelemetry_is_off_unless_asked_for(tmp_path):
    # Off, no request pays for FastAPI's check of the OpenTelemetry providers (~8 µs each); on, FastAPI traces.
    assert not create_app(Settings(data_dir=tmp_path))._native_telemetry.enabled()
    telemetry = create_app(Settings(data_dir=tmp_path, opentelemetry=True))._telemetry
    assert all(telemetry[part] for part in ("tracing", "metrics", "logs", "operation_spans"))
