"""The job endpoints over the ASGI transport: lifecycle, SSE, cancellation, back-pressure, listing."""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.conftest import DO_BATZOGLOU
from tests.distributed_cluster import forget_live_events
from tests.jobs.helpers import finished_job, long_gaussian_body, parse_sse, wait_until

TIMINGS = {"job_id", "model_id", "elapsed_ms"}


def _strip(result):
    return {k: v for k, v in result.items() if k not in TIMINGS}


def test_job_lifecycle_and_result_equals_the_sync_fit(client):
    body = {"sequences": DO_BATZOGLOU, "n_coins": 2, "n_init": 4, "seed": 11, "fit_weights": True}
    response = client.post("/v1/jobs/coins", json=body)
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["kind"] == "coins" and job["status"] in ("queued", "running") and job["result"] is None
    assert job["request"]["n_experiments"] == 5 and job["request"]["n_init"] == 4
    done = wait_until(lambda: finished_job(client, job["id"]))
    assert done["status"] == "succeeded" and done["error"] is None
    assert done["started_at"] <= done["finished_at"]
    assert done["result"]["job_id"] == job["id"]
    sync = client.post("/v1/fit/coins", json=body).json()
    assert _strip(done["result"]) == _strip(sync)


def test_gaussian_job_matches_sync(client):
    body = {"points": [[0, 0], [0.2, 0.1], [0.1, 0.3], [5, 5], [5.2, 4.9], [4.8, 5.1]], "seed": 3, "n_init": 2}
    job = client.post("/v1/jobs/gaussian", json=body).json()
    done = wait_until(lambda: finished_job(client, job["id"]))
    assert _strip(done["result"]) == _strip(client.post("/v1/fit/gaussian", json=body).json())


def test_events_stream_every_iteration_in_order_then_the_final_event(client):
    body = {"sequences": DO_BATZOGLOU, "n_coins": 2, "n_init": 3, "seed": 5, "tol": 1e-10, "max_iter": 200}
    job = client.post("/v1/jobs/coins", json=body).json()
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(list(stream.iter_lines()))
    iterations = [json.loads(e["data"]) for e in events if e["event"] == "iteration"]
    final = events[-1]
    assert final["event"] == "succeeded" and sum(e["event"] == "succeeded" for e in events) == 1
    result = json.loads(final["data"])["result"]
    # Every start's iterations, start by start, each numbered 1..n_iter.
    expected = [(i, k) for i, restart in enumerate(result["restarts"]) for k in range(1, restart["n_iter"] + 1)]
    assert [(e["start"], e["iteration"]) for e in iterations] == expected
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    best = [e for e in iterations if e["log_likelihood"] == result["log_likelihood"]]
    assert best, "the returned log-likelihood is one of the streamed iterations"


def test_events_resume_after_last_event_id(client):
    job = client.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU, "init": {"biases": [0.6, 0.5]}}).json()
    wait_until(lambda: finished_job(client, job["id"]))
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        everything = parse_sse(list(stream.iter_lines()))
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "3"}) as stream:
        rest = parse_sse(list(stream.iter_lines()))
    assert [e["id"] for e in rest] == [e["id"] for e in everything[3:]]


def _events(client, job_id, last_event_id=None):
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as stream:
        assert stream.status_code == 200
        return parse_sse(list(stream.iter_lines()))


def test_events_replayed_from_the_store_keep_their_live_ids(settings):
    # With seed 9 the returned start is the last of three: live, its iterations were not events 1..n.
    body = {"sequences": DO_BATZOGLOU, "n_coins": 2, "n_init": 3, "seed": 9}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        job = client.post("/v1/jobs/coins", json=body).json()
        live = _events(client, job["id"])
    forget_live_events(settings, job["id"])  # distributed: as when the job's Redis stream has expired
    with TestClient(create_app(settings), raise_server_exceptions=False) as restarted:  # replays from the store
        replayed = _events(restarted, job["id"])
        past_the_end = _events(restarted, job["id"], last_event_id=999_999)
    live_by_id = {e["id"]: e for e in live}
    assert replayed[-1]["event"] == "succeeded" and replayed[-1]["id"] == live[-1]["id"]
    assert replayed[:-1] and all(e == live_by_id[e["id"]] for e in replayed[:-1])
    assert len(replayed) - 1 == len(json.loads(live[-1]["data"])["result"]["trace"])
    assert [(e["event"], e["id"]) for e in past_the_end] == [("succeeded", live[-1]["id"])]


def test_unknown_jobs_are_404(client):
    assert client.get("/v1/jobs/nope").status_code == 404
    assert client.delete("/v1/jobs/nope").status_code == 404
    assert client.get("/v1/jobs/nope/events").status_code == 404


def test_cancelling_a_finished_job_is_409(client):
    job = client.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU}).json()
    wait_until(lambda: finished_job(client, job["id"]))
    response = client.delete(f"/v1/jobs/{job['id']}")
    assert response.status_code == 409 and "already succeeded" in response.json()["detail"]


@pytest.fixture
def one_worker_client(tmp_path):
    settings = Settings(data_dir=tmp_path, workers=1, queue_size=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def test_cancel_running_and_queued_jobs_and_back_pressure(one_worker_client):
    client = one_worker_client
    running = client.post("/v1/jobs/gaussian", json=long_gaussian_body()).json()
    wait_until(lambda: client.get(f"/v1/jobs/{running['id']}").json()["progress"])
    queued = client.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU}).json()
    assert client.get(f"/v1/jobs/{queued['id']}").json()["status"] == "queued"

    full = client.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU})
    assert full.status_code == 503 and int(full.headers["retry-after"]) >= 1
    assert "queue is full" in full.json()["detail"]

    response = client.delete(f"/v1/jobs/{queued['id']}")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert client.delete(f"/v1/jobs/{queued['id']}").status_code == 200

    assert client.delete(f"/v1/jobs/{running['id']}").status_code == 202
    done = wait_until(lambda: finished_job(client, running["id"]), timeout_s=5)
    assert done["status"] == "cancelled" and done["result"] is None
    with client.stream("GET", f"/v1/jobs/{running['id']}/events") as stream:
        events = parse_sse(list(stream.iter_lines()))
    assert events[-1]["event"] == "cancelled"
    # The worker is free again: the next fit runs.
    assert client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU}).status_code == 200


def test_job_requests_are_validated_before_queueing(client):
    response = client.post("/v1/jobs/gaussian", json={"points": [[0, 0], [1, 1]], "init": {"means": [[0, 0, 0]]}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "init", "means"]
    response = client.post("/v1/jobs/coins", json={"sequences": ["HTZ"]})
    assert response.status_code == 422
    assert client.get("/v1/jobs").json()["items"] == []


def test_listing_pages_newest_first(client):
    ids = [client.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU, "seed": i}).json()["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        page = client.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [job["id"] for job in page["items"]]
        assert all(job["result"] is None for job in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    bad = client.get("/v1/jobs", params={"cursor": "garbage"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "cursor"]


def _cursor(decoded: str) -> str:
    return base64.urlsafe_b64encode(decoded.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor('[1%s, "x"]' % ("0" * 400)),
        "WzEsICJcdWQ4MDAiXQ==",  # [1, "\ud800"]
        _cursor('[1.5, "\\ud800"]'),
        _cursor("[" * 5000 + "]" * 5000),
    ],
)
def test_listing_rejects_a_malformed_cursor_with_422(client, cursor):
    client.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU})
    response = client.get("/v1/jobs", params={"cursor": cursor})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_readyz_reports_the_runner(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready" and response.json()["workers"] >= 1
