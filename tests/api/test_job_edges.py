"""Edges of the job endpoints a client library meets: cancel right after submit, filters, resume ids, 422s."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.jobs.protocol import Finished
from service.main import create_app
from service.settings import Settings
from tests.conftest import DO_BATZOGLOU
from tests.jobs.helpers import finished_job, parse_sse, wait_until

RAGGED = [
    ("gaussian", {"init": {"covariances": [[[1, 0], [0]], [[1, 0], [0, 1]]]}}, "init.covariances"),
    ("gaussian", {"init": {"means": [[0, 0], [5]]}}, "init.means"),
]
POINTS = [[0, 0], [1, 1], [5, 5], [6, 6]]


@pytest.mark.parametrize("route", ["/v1/fit/gaussian", "/v1/jobs/gaussian"])
@pytest.mark.parametrize(("kind", "extra", "field"), RAGGED)
def test_ragged_init_arrays_are_a_422_naming_the_field(client, route, kind, extra, field):
    response = client.post(route, json={"points": POINTS, "n_components": 2, **extra})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"][:3] == ["body", *field.split(".")]
    assert "regular array" in detail["msg"]


def test_cancelling_right_after_submitting_never_fails(client):
    # The job may be queued, handed to a worker that has not started it, running, or finished: every
    # answer is one of the documented ones, and a job cancelled in time ends cancelled.
    body = {"sequences": DO_BATZOGLOU, "max_iter": 2000, "tol": 0}
    for _ in range(200):
        job = client.post("/v1/jobs/coins", json=body).json()
        response = client.delete(f"/v1/jobs/{job['id']}")
        assert response.status_code in (200, 202, 409), response.text
        final = wait_until(lambda job=job: finished_job(client, job["id"]), timeout_s=30)
        if response.status_code == 202:
            assert final["status"] == "cancelled"
        else:
            assert final["status"] == "succeeded"


def test_a_job_answered_202_ends_cancelled_though_its_worker_had_just_succeeded(tmp_path):
    # Found beside a busy make test: the worker finished between its last look at the cancel flag and the DELETE,
    # whose 202 then ended "succeeded". The race made certain: the worker's success is delivered right after the
    # cancel, on the event loop, before the worker's own answer can be.
    with TestClient(create_app(Settings(data_dir=tmp_path / "data"))) as client:
        points = np.random.default_rng(0).normal(size=(20_000, 2)).tolist()
        body = {"points": points, "n_components": 3, "max_iter": 10_000, "tol": 0}
        job = client.post("/v1/jobs/gaussian", json=body).json()
        wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running")
        manager = client.app.state.services.jobs

        async def cancel_as_the_worker_succeeds() -> bool:
            _, already = await manager.cancel(job["id"])
            manager._on_message(Finished(job["id"], "succeeded", result=b'{"model": "gaussian"}', model=b"{}"))
            return already

        assert client.portal.call(cancel_as_the_worker_succeeds) is False  # answered 202
        final = wait_until(lambda: finished_job(client, job["id"]))
        assert final["status"] == "cancelled" and final["result"] is None
        assert client.get(f"/v1/models/{job['id']}").status_code == 404  # nothing kept of a cancelled job


def test_jobs_are_listed_by_status_and_kind(client):
    coin = client.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU}).json()
    gaussian = client.post("/v1/jobs/gaussian", json={"points": POINTS, "n_components": 2, "seed": 0}).json()
    bad = client.post("/v1/jobs/coins", json={"sequences": ["HT", "HT"], "n_coins": 2, "init": {"biases": [0.5, 0.5]}})
    assert bad.status_code == 202
    for job in (coin, gaussian, bad.json()):
        wait_until(lambda job=job: finished_job(client, job["id"]))

    def ids(query):
        response = client.get(f"/v1/jobs?{query}")
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    assert ids("kind=coins") == {coin["id"], bad.json()["id"]}
    assert ids("kind=gaussian") == {gaussian["id"]}
    assert ids("status=succeeded&kind=gaussian") == {gaussian["id"]}
    assert ids("status=cancelled") == set()
    assert ids("status=succeeded&limit=1") <= {coin["id"], gaussian["id"], bad.json()["id"]}
    for query, name in (("status=done", "status"), ("kind=hmmm", "kind")):
        response = client.get(f"/v1/jobs?{query}")
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", name]


def test_a_listing_filter_pages_with_its_cursor(client):
    made = [client.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU}).json()["id"] for _ in range(3)]
    client.post("/v1/jobs/gaussian", json={"points": POINTS, "n_components": 2})
    first = client.get("/v1/jobs?kind=coins&limit=2").json()
    second = client.get(f"/v1/jobs?kind=coins&limit=2&cursor={first['next_cursor']}").json()
    assert [i["id"] for i in first["items"] + second["items"]] == made[::-1]
    assert second["next_cursor"] is None


def test_an_empty_cursor_is_the_first_page(client):
    client.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU})
    assert client.get("/v1/jobs?cursor=").status_code == 200
    assert len(client.get("/v1/jobs?cursor=").json()["items"]) == 1


@pytest.mark.parametrize("last_event_id", ["null", "", "undefined", "-1"])
def test_a_placeholder_last_event_id_replays_from_the_start(client, last_event_id):
    job = client.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU, "init": {"biases": [0.6, 0.5]}}).json()
    wait_until(lambda: finished_job(client, job["id"]))
    headers = {"Last-Event-ID": last_event_id}
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers=headers) as stream:
        assert stream.status_code == 200
        events = parse_sse(list(stream.iter_lines()))
    assert events[0]["id"] == "1" and events[-1]["event"] == "succeeded"
