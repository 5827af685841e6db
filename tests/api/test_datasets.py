"""Datasets over HTTP: each upload format stored and read back, malformed files named, tenants apart."""

from __future__ import annotations

import hashlib
import time

import httpx
import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from service.datasets.parse import npy_bytes
from service.datasets.store import DatasetStore
from service.jobs.models import EVERYONE
from service.main import create_app
from service.settings import Settings
from tests.conftest import DO_BATZOGLOU
from tests.jobs.helpers import wait_until
from tests.live_server import live_server

POINTS = np.random.default_rng(1).normal(size=(40, 2))
NPY, ARROW, CSV = "application/x-npy", "application/vnd.apache.arrow.stream", "text/csv"


def _arrow(points: np.ndarray) -> bytes:
    table = pa.table({f"x{j}": points[:, j] for j in range(points.shape[1])})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _csv(points: np.ndarray) -> bytes:
    return ("a,b\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in points)).encode()


@pytest.mark.parametrize(
    ("content_type", "body"),
    [(NPY, npy_bytes(POINTS)), (ARROW, _arrow(POINTS)), (CSV, _csv(POINTS))],
    ids=["npy", "arrow", "csv"],
)
def test_an_upload_is_stored_read_listed_and_deleted(client, content_type, body):
    response = client.post("/v1/datasets", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 201, response.text
    record = response.json()
    assert response.headers["Location"] == f"/v1/datasets/{record['id']}"
    assert record | {"id": None, "created_at": None} == {
        "id": None, "kind": "points", "n": 40, "d": 2, "dtype": "float64", "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(), "created_at": None,
    }  # fmt: skip
    assert client.get(f"/v1/datasets/{record['id']}").json() == record
    assert [item["id"] for item in client.get("/v1/datasets").json()["items"]] == [record["id"]]
    assert client.delete(f"/v1/datasets/{record['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{record['id']}").status_code == 404
    assert client.get("/v1/datasets").json() == {"items": [], "next_cursor": None}


def test_json_uploads_hold_points_or_coin_experiments(client):
    points = client.post("/v1/datasets", json={"points": POINTS[:, 0].tolist()}).json()
    assert (points["kind"], points["n"], points["d"]) == ("points", 40, 1)
    coins = client.post("/v1/datasets", json={"sequences": DO_BATZOGLOU}).json()
    assert (coins["kind"], coins["n"], coins["d"]) == ("coins", 5, 2)
    counts = client.post("/v1/datasets", json={"counts": [{"heads": 3, "tails": 1}]}).json()
    assert (counts["kind"], counts["n"]) == ("coins", 1)


def test_listing_pages_newest_first(client):
    ids = [client.post("/v1/datasets", json={"points": [float(i), 1.0]}).json()["id"] for i in range(5)]
    first = client.get("/v1/datasets?limit=3").json()
    second = client.get(f"/v1/datasets?limit=3&cursor={first['next_cursor']}").json()
    assert [d["id"] for d in first["items"] + second["items"]] == ids[::-1]
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    ("content_type", "body", "says"),
    [
        (NPY, npy_bytes(POINTS)[:-5], "truncated"),
        (NPY, npy_bytes(np.zeros((2, 2, 2))), "3 dimensions"),
        (NPY, npy_bytes(np.arange(3)), "dtype is int64"),
        (CSV, b"1,2\n3\n", "Expected 2 columns, got 1"),
        (ARROW, _arrow(POINTS)[:40], "not a readable Arrow IPC stream"),
        (NPY, b"", "the body is empty"),
        ("application/json", b'{"points": [1, 2', "not valid JSON"),
    ],
    ids=["npy-truncated", "npy-3d", "npy-int", "csv-ragged", "arrow-cut", "empty", "json-cut"],
)
def test_a_malformed_upload_is_a_422_naming_the_problem(client, content_type, body, says):
    response = client.post("/v1/datasets", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 422, response.text
    assert says in response.json()["detail"][0]["msg"]
    assert client.get("/v1/datasets").json()["items"] == []  # nothing half-stored


def test_json_upload_needs_exactly_one_kind_of_data(client):
    response = client.post("/v1/datasets", json={"points": [1.0, 2.0], "sequences": ["HT"]})
    assert response.status_code == 422
    assert "exactly one of points, sequences, counts" in response.json()["detail"][0]["msg"]
    response = client.post("/v1/datasets", json={"points": [[1.0, 2.0], [3.0]]})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "points"]


def test_other_content_types_are_a_415(client):
    response = client.post("/v1/datasets", content=b"1 2 3", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415 and "application/x-npy" in response.json()["detail"]


def test_caps_apply_to_uploads(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path, max_features=3))) as client:
        response = client.post("/v1/datasets", content=npy_bytes(np.zeros((4, 5))), headers={"Content-Type": NPY})
        assert response.status_code == 422 and "at most 3" in response.json()["detail"][0]["msg"]


def test_another_key_cannot_see_or_delete_a_dataset(tmp_path):
    settings = Settings(data_dir=tmp_path, api_keys=["key-a", "key-b"], admin_keys=["key-admin"])
    a, b, admin = ({"Authorization": f"Bearer {key}"} for key in ("key-a", "key-b", "key-admin"))
    with TestClient(create_app(settings)) as client:
        dataset = client.post("/v1/datasets", json={"points": [1.0, 2.0]}, headers=a).json()
        path = f"/v1/datasets/{dataset['id']}"
        assert client.get(path, headers=b).status_code == 404
        assert client.delete(path, headers=b).status_code == 404
        assert client.get("/v1/datasets", headers=b).json()["items"] == []
        assert client.get(path, headers=admin).status_code == 200
        assert client.post("/v1/datasets", json={"points": [1.0]}).status_code == 401
        assert client.get(path, headers=a).status_code == 200


def _upload(client, array, headers=None):
    response = client.post("/v1/datasets", content=npy_bytes(array), headers={"Content-Type": NPY, **(headers or {})})
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_fit_by_dataset_id_equals_the_fit_of_the_points_sent(client, dtype):
    points = POINTS.astype(dtype)
    dataset = _upload(client, points)
    options = {"n_components": 2, "seed": 3}
    by_id = client.post("/v1/fit/gaussian", json={"dataset": dataset, **options})
    sent = client.post("/v1/fit/gaussian", json={"points": points.astype(np.float64).tolist(), **options})
    assert by_id.status_code == sent.status_code == 200, by_id.text
    drop = {"job_id", "model_id", "elapsed_ms"}
    assert {k: v for k, v in by_id.json().items() if k not in drop} == {
        k: v for k, v in sent.json().items() if k not in drop
    }


def test_a_coin_dataset_fits_as_its_sequences(client):
    dataset = client.post("/v1/datasets", json={"sequences": DO_BATZOGLOU}).json()["id"]
    body = {"init": {"biases": [0.6, 0.5]}, "tol": 1e-8}
    by_id = client.post("/v1/fit/coins", json={"dataset": dataset, **body}).json()
    sent = client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU, **body}).json()
    assert by_id["params"] == sent["params"] and by_id["log_likelihood"] == sent["log_likelihood"]


def test_a_job_by_dataset_id_records_it_and_holds_the_dataset_until_it_ends(client):
    dataset = _upload(client, np.random.default_rng(2).normal(size=(20_000, 3)))
    body = {"dataset": dataset, "n_components": 4, "max_iter": 10_000, "tol": 0, "seed": 0}
    job = client.post("/v1/jobs/gaussian", json=body).json()
    assert job["request"]["dataset"] == dataset and job["request"]["n_points"] == 20_000
    refused = client.delete(f"/v1/datasets/{dataset}")
    assert refused.status_code == 409 and "uses this dataset" in refused.json()["detail"]
    assert client.delete(f"/v1/jobs/{job['id']}").status_code in (200, 202)
    wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled")
    assert client.delete(f"/v1/datasets/{dataset}").status_code == 204


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"dataset": "nope"}, "no dataset 'nope'"),
        ({"dataset": "x", "points": [1.0, 2.0]}, "exactly one of points or dataset"),
        ({}, "exactly one of points or dataset"),
    ],
    ids=["unknown", "both", "neither"],
)
def test_a_fit_naming_a_bad_dataset_is_a_422(client, body, says):
    response = client.post("/v1/fit/gaussian", json=body)
    assert response.status_code == 422, response.text
    assert says in response.json()["detail"][0]["msg"]


def test_a_dataset_of_the_wrong_kind_is_a_422(client):
    coins = client.post("/v1/datasets", json={"counts": [{"heads": 1, "tails": 2}]}).json()["id"]
    response = client.post("/v1/fit/gaussian", json={"dataset": coins})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "dataset"]
    assert "holds coins; a gaussian model needs points" in response.json()["detail"][0]["msg"]


def test_another_key_cannot_fit_a_dataset_it_does_not_own(tmp_path):
    settings = Settings(data_dir=tmp_path, api_keys=["key-a", "key-b"])
    a, b = ({"Authorization": f"Bearer {key}"} for key in ("key-a", "key-b"))
    with TestClient(create_app(settings)) as client:
        dataset = _upload(client, POINTS, a)
        assert client.post("/v1/fit/gaussian", json={"dataset": dataset}, headers=a).status_code == 200
        refused = client.post("/v1/fit/gaussian", json={"dataset": dataset}, headers=b)
        assert refused.status_code == 422 and f"no dataset {dataset!r}" in refused.json()["detail"][0]["msg"]


def test_upload_then_fit_by_id_over_a_real_server(tmp_path):
    body = npy_bytes(np.random.default_rng(4).normal(size=(5_000, 2)))
    with live_server({"EM_DATA_DIR": str(tmp_path / "data")}) as server:
        # Streamed in chunks, as a large upload arrives.
        chunks = (body[i : i + 4096] for i in range(0, len(body), 4096))
        uploaded = httpx.post(f"{server.url}/v1/datasets", content=chunks, headers={"Content-Type": NPY}, timeout=60)
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json()["sha256"] == hashlib.sha256(body).hexdigest()
        fit = httpx.post(
            f"{server.url}/v1/fit/gaussian", json={"dataset": uploaded.json()["id"], "seed": 0}, timeout=60
        )
        assert fit.status_code == 200, fit.text[:500]
        assert fit.json()["n_iter"] >= 1 and len(fit.json()["params"]["weights"]) == 2
    with live_server({"EM_DATA_DIR": str(tmp_path / "data")}) as restarted:  # kept across a restart
        assert httpx.get(f"{restarted.url}/v1/datasets/{uploaded.json()['id']}").json() == uploaded.json()


def test_a_job_on_a_dataset_reaches_its_worker_as_a_path_not_a_copy(client):
    import pickle

    from service.families.gaussian import make_task
    from service.schemas.gaussian import GaussianFitRequest

    dataset = _upload(client, np.random.default_rng(5).normal(size=(30_000, 4)))
    store = client.app.state.services.datasets
    request = GaussianFitRequest.model_validate({"dataset": dataset})
    file = store.file(dataset)
    request.attach_dataset(file)
    task = make_task(request, Settings(), 60.0)
    shipped = pickle.dumps(task)
    assert len(shipped) < 10_000  # the points are 960 KB
    arrived = pickle.loads(shipped)
    np.testing.assert_array_equal(arrived.X, task.X)
    assert arrived.X.shape == (30_000, 4)


def test_a_fit_by_dataset_id_on_a_worker_equals_the_fit_of_the_points_sent(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path, inline_fit_budget=0))) as client:
        points = np.random.default_rng(6).normal(size=(3_000, 3))
        dataset = _upload(client, points[:, 0].copy())  # 1-D, as a worker reopens it
        options = {"n_components": 3, "seed": 1, "return_labels": False}
        by_id = client.post("/v1/fit/gaussian", json={"dataset": dataset, **options}).json()
        sent = client.post("/v1/fit/gaussian", json={"points": points[:, 0].tolist(), **options}).json()
        assert by_id["params"] == sent["params"] and by_id["log_likelihood"] == sent["log_likelihood"]


def test_datasets_expire_after_their_retention_counted_from_their_last_fit(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path))) as client:
        idle = client.post("/v1/datasets", json={"points": [1.0, 2.0, 3.0]}).json()["id"]
        fitted = client.post("/v1/datasets", json={"points": [1.0, 2.0, 3.0]}).json()["id"]
    store = DatasetStore(tmp_path)
    old = time.time() - 10.0
    store.metadata._db.execute("UPDATE datasets SET created_at = ?", (old,))  # both uploaded 10 s ago
    store.touch(fitted)  # ... and one fitted just now
    assert store.expire(time.time() - 5.0, in_use=lambda dataset_id: False) == 1
    assert store.get(fitted, EVERYONE) is not None and store.get(idle, EVERYONE) is None
    assert not store.file(idle).exists()
    store.metadata._db.execute("UPDATE datasets SET created_at = ?, used_at = ?", (old, old))
    assert store.expire(time.time() - 5.0, in_use=lambda dataset_id: dataset_id == fitted) == 0  # a job fits it
    store.close()
    # On start-up the service expires what is past its retention.
    with TestClient(create_app(Settings(data_dir=tmp_path, dataset_retention_s=5.0))) as client:
        assert client.get(f"/v1/datasets/{fitted}").status_code == 404


def test_a_cursor_the_listing_did_not_give_is_a_422(client):
    client.post("/v1/datasets", json={"points": [1.0, 2.0]})
    response = client.get("/v1/datasets?cursor=garbage")
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "cursor"]
    assert client.get("/v1/datasets?cursor=").status_code == 200  # empty: the first page, as for jobs


def test_uploads_read_in_a_helper_process_answer_as_those_read_here(tmp_path):
    # Every JSON upload over EM_BODY_OFFLOAD_BYTES is read in a helper process (parsing holds the GIL).
    with TestClient(create_app(Settings(data_dir=tmp_path, body_offload_bytes=1))) as client:
        stored = client.post("/v1/datasets", json={"points": POINTS.tolist()})
        assert stored.status_code == 201 and (stored.json()["n"], stored.json()["d"]) == (40, 2)
        ragged = client.post("/v1/datasets", json={"points": [[1.0, 2.0], [3.0]]})
        assert ragged.status_code == 422 and ragged.json()["detail"][0]["loc"] == ["body", "points"]
        cut = client.post("/v1/datasets", content=b'{"points": [1, 2', headers={"Content-Type": "application/json"})
        assert cut.status_code == 422 and "not valid JSON" in cut.json()["detail"][0]["msg"]
        assert [d["id"] for d in client.get("/v1/datasets").json()["items"]] == [stored.json()["id"]]
    assert not list((tmp_path / "datasets" / "incoming").iterdir())  # nothing half-received is left


def test_the_swagger_upload_examples_are_stored(client):
    from service.api.datasets import CSV_EXAMPLE, UPLOAD_EXAMPLES

    kinds = {name: client.post("/v1/datasets", json=example["value"]).json()["kind"] for name, example in
             UPLOAD_EXAMPLES.items()}  # fmt: skip
    assert kinds == {"points": "points", "sequences": "coins"}
    csv = client.post("/v1/datasets", content=CSV_EXAMPLE.encode(), headers={"Content-Type": CSV})
    assert csv.status_code == 201 and (csv.json()["n"], csv.json()["d"]) == (4, 2)
