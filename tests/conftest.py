"""Shared fixtures: an app with test settings, a client on the ASGI transport, real Redis and PostgreSQL servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.distributed_cluster import Cluster, cluster
from tests.servers import PostgresServer, RedisServer, postgres_server, redis_server  # noqa: F401 - session fixtures: real servers, started on use
from tests.stores import postgres_database  # noqa: F401 - a clean PostgreSQL database for one test

DO_BATZOGLOU = ["HTTTHHTHTH", "HHHHTHHHHH", "HTHHHHHTHH", "HTHTTTHHTT", "THHHTHHHTH"]


# Every test that takes the app's settings (or the client) runs on both backends: the local default, and the
# distributed one on a shared cluster of real servers and workers (slow: the whole API suite again).
@pytest.fixture(params=["local", pytest.param("distributed", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def shared_cluster(redis_server: RedisServer, postgres_server: PostgresServer) -> Iterator[Cluster]:  # noqa: F811
    with cluster(redis_server, postgres_server, workers=2) as running:
        yield running


@pytest.fixture
def settings(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Settings:
    if backend == "local":
        return Settings(data_dir=tmp_path / "data")
    running: Cluster = request.getfixturevalue("shared_cluster")
    running.reset()
    return running.settings(data_dir=tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client
