"""Through the HTTP API: with its models and dataset records in PostgreSQL, a server outage answers 503 with
Retry-After (never 500), and the same requests succeed again once the server is back."""

from __future__ import annotations

import dataclasses
import time

from fastapi.testclient import TestClient

from service.backends.postgres import PostgresDatasetMetadata, PostgresModelStore
from service.datasets.store import DatasetStore
from service.main import create_app
from service.models.store import GroupCommit
from service.settings import Settings
from tests.conftest import DO_BATZOGLOU
from tests.jobs.helpers import no_worker_free


def test_an_outage_is_a_503_and_requests_succeed_again_after_it(
    tmp_path, postgres_server, postgres_database, monkeypatch
):
    with TestClient(create_app(Settings(data_dir=tmp_path)), raise_server_exceptions=False) as client:
        # The stores EM_BACKEND=distributed will build, in place of the SQLite ones this app started with; and,
        # as with that backend's job manager, small fits solved here (the local workers keep their models in the
        # SQLite file they were started with).
        models = PostgresModelStore(postgres_database, max_per_owner=100)
        datasets = DatasetStore(tmp_path / "shared", PostgresDatasetMetadata(postgres_database))
        services = client.app.state.services
        monkeypatch.setattr(services.jobs, "run_small_fit", no_worker_free)
        client.app.state.services = dataclasses.replace(
            services, models=models, datasets=datasets, model_writes=GroupCommit(models)
        )
        model_id = client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU}).json()["model_id"]
        dataset_id = client.post("/v1/datasets", json={"points": [1.0, 2.0, 3.0]}).json()["id"]
        postgres_server.stop()
        try:
            for method, path, body in (
                ("GET", f"/v1/models/{model_id}", None),
                ("GET", "/v1/models", None),
                ("GET", f"/v1/datasets/{dataset_id}", None),
                ("POST", "/v1/datasets", {"points": [1.0, 2.0]}),
                ("POST", "/v1/fit/coins", {"sequences": DO_BATZOGLOU}),  # its model cannot be kept
            ):
                response = client.request(method, path, json=body)
                assert response.status_code == 503, (path, response.text)
                assert response.headers["Retry-After"] and "unavailable" in response.json()["detail"]
            assert [path.stem for path in datasets.directory.glob("*.npy")] == [dataset_id]  # no orphan upload
        finally:
            postgres_server.start()
        deadline = time.monotonic() + 20
        while client.get(f"/v1/models/{model_id}").status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get(f"/v1/models/{model_id}").status_code == 200
        assert client.get(f"/v1/datasets/{dataset_id}").status_code == 200
        assert client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU}).status_code == 200
        client.app.state.services = services
