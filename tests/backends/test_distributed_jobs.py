"""The distributed backend end to end: an app on PostgreSQL + Redis, fits run by `python -m service.worker`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from tests.conftest import DO_BATZOGLOU
from tests.distributed_cluster import Cluster, cluster
from tests.jobs.helpers import finished_job, parse_sse, wait_until


@pytest.fixture(scope="module")
def running(redis_server, postgres_server) -> Iterator[Cluster]:
    with cluster(redis_server, postgres_server, workers=2) as started:
        yield started


@pytest.fixture
def dclient(running: Cluster) -> Iterator[TestClient]:
    with TestClient(create_app(running.settings()), raise_server_exceptions=False) as test_client:
        yield test_client


def _strip(result):
    return {k: v for k, v in result.items() if k not in {"job_id", "model_id", "elapsed_ms"}}


def test_a_job_runs_on_a_worker_and_equals_the_sync_fit(dclient, running):
    body = {"sequences": DO_BATZOGLOU, "n_coins": 2, "n_init": 4, "seed": 11, "fit_weights": True}
    job = dclient.post("/v1/jobs/coins", json=body).json()
    done = wait_until(lambda: finished_job(dclient, job["id"]), timeout_s=60)
    assert done["status"] == "succeeded", (done, running.worker_log())
    assert _strip(done["result"]) == _strip(dclient.post("/v1/fit/coins", json=body).json())
    model = dclient.get(f"/v1/models/{done['result']['model_id']}")
    assert model.status_code == 200


def test_events_come_from_the_stream_then_from_the_store(dclient):
    body = {"sequences": DO_BATZOGLOU, "n_coins": 2, "n_init": 3, "seed": 5, "tol": 1e-10, "max_iter": 200}
    job = dclient.post("/v1/jobs/coins", json=body).json()
    with dclient.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        events = parse_sse(list(stream.iter_lines()))
    assert events[-1]["event"] == "succeeded"
    result = json.loads(events[-1]["data"])["result"]
    expected = [(i, k) for i, restart in enumerate(result["restarts"]) for k in range(1, restart["n_iter"] + 1)]
    iterations = [json.loads(e["data"]) for e in events if e["event"] == "iteration"]
    assert [(e["start"], e["iteration"]) for e in iterations] == expected
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    # Resuming past the end gives the final event alone.
    with dclient.stream("GET", f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": events[-1]["id"]}) as again:
        tail = parse_sse(list(again.iter_lines()))
    assert [e["event"] for e in tail] == ["succeeded"]


def test_a_large_sync_fit_runs_on_a_worker(dclient):
    rng_points = [[float(i % 7), float((i * 13) % 11)] for i in range(3000)]
    body = {"points": rng_points, "n_components": 3, "seed": 1}
    response = dclient.post("/v1/fit/gaussian", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["n_iter"] >= 1


def test_cancel_a_queued_or_running_job(dclient):
    body = {"points": [[float(i % 97), float((i * 31) % 89)] for i in range(20000)], "n_components": 8,
            "tol": 0, "max_iter": 10000, "seed": 2}  # fmt: skip
    job = dclient.post("/v1/jobs/gaussian", json=body).json()
    wait_until(lambda: dclient.get(f"/v1/jobs/{job['id']}").json()["status"] == "running", timeout_s=60)
    assert dclient.delete(f"/v1/jobs/{job['id']}").status_code == 202
    done = wait_until(lambda: finished_job(dclient, job["id"]), timeout_s=60)
    assert done["status"] == "cancelled"


def test_selection_candidates_run_as_parts(dclient):
    points = [[float(i % 5) + (0 if i % 2 else 10), float(i % 3)] for i in range(400)]
    response = dclient.post("/v1/fit/gaussian/select", json={"points": points, "n_components": [1, 2, 3], "seed": 0})
    assert response.status_code == 200, response.text


def test_bootstrap_follow_up_runs_on_the_workers(dclient):
    body = {"sequences": DO_BATZOGLOU, "init": {"biases": [0.6, 0.5]}, "bootstrap": {"replicates": 20, "seed": 1}}
    job = dclient.post("/v1/jobs/coins", json=body).json()
    done = wait_until(lambda: finished_job(dclient, job["id"]), timeout_s=120)
    assert done["status"] == "succeeded", done
    assert done["result"]["bootstrap"]["standard_errors"] is not None


def test_a_dataset_is_free_to_delete_once_the_fits_of_it_have_ended(dclient):
    from service.datasets.parse import npy_bytes

    points = [[float(i % 5) + (0 if i % 2 else 10), float(i % 3)] for i in range(400)]
    upload = dclient.post("/v1/datasets", content=npy_bytes(points), headers={"content-type": "application/x-npy"})
    dataset = upload.json()["id"]
    selected = dclient.post("/v1/fit/gaussian/select", json={"dataset": dataset, "n_components": [1, 2], "seed": 0})
    assert selected.status_code == 200, selected.text
    assert dclient.delete(f"/v1/datasets/{dataset}").status_code == 204
