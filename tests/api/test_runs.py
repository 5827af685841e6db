"""Where a fit runs: tiny synchronous fits inline (not stored), the rest on a worker, with the same answers."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api.runs import work_estimate
from service.families import coins
from service.main import create_app
from service.schemas.coins import CoinFitRequest
from service.settings import Settings
from tests.conftest import DO_BATZOGLOU
from tests.jobs.helpers import wait_until

TIMINGS = {"job_id", "model_id", "elapsed_ms"}
GAUSSIAN_BODY = {"points": [[0, 0], [0.2, 0.1], [0.1, 0.3], [5, 5], [5.2, 4.9], [4.8, 5.1]], "seed": 3, "n_init": 2}
COIN_BODY = {"sequences": DO_BATZOGLOU, "n_coins": 2, "n_init": 3, "seed": 7, "fit_weights": True}


@pytest.fixture
def worker_only(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path / "w", inline_fit_budget=0))) as client:
        yield client


def _strip(result):
    return {k: v for k, v in result.items() if k not in TIMINGS}


@pytest.mark.parametrize(("path", "body"), [("/v1/fit/coins", COIN_BODY), ("/v1/fit/gaussian", GAUSSIAN_BODY)])
def test_inline_and_worker_fits_give_the_same_answer(client, worker_only, path, body):
    inline = client.post(path, json=body)
    on_worker = worker_only.post(path, json=body)
    assert inline.status_code == on_worker.status_code == 200
    assert _strip(inline.json()) == _strip(on_worker.json())


def test_sync_fits_are_not_stored_as_jobs(client, worker_only):
    # The response is a synchronous fit's only record, inline or on a worker: the store does not grow with them.
    for app in (client, worker_only):
        response = app.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU})
        assert response.status_code == 200
        assert app.get(f"/v1/jobs/{response.json()['job_id']}").status_code == 404
        assert app.get("/v1/jobs").json()["items"] == []


def test_only_fits_whose_whole_work_is_tiny_run_inline(client):
    settings = Settings.model_construct()

    def task(body):
        request = CoinFitRequest.model_validate(body)
        return coins.make_task(request, settings, settings.default_time_limit_s)

    assert work_estimate(task({"sequences": DO_BATZOGLOU})) <= settings.inline_fit_budget
    # Same tiny data, but max_iter x n_init puts its worst case over the inline budget.
    assert work_estimate(task({"sequences": DO_BATZOGLOU, "max_iter": 10_000})) > settings.inline_fit_budget
    assert work_estimate(task({"sequences": DO_BATZOGLOU, "n_init": 50})) > settings.inline_fit_budget
    assert work_estimate(task({"counts": [{"heads": 5, "tails": 5}] * 5000})) > settings.inline_fit_budget
    response = client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU, "max_iter": 10_000, "tol": 0})
    assert response.status_code == 200 and response.json()["n_iter"] == 10_000


def test_inline_fits_are_counted_in_the_metrics(client):
    client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU, "init": {"biases": [0.6, 0.5]}})
    metrics = client.get("/metrics").text
    assert 'em_fits_total{model="coins",outcome="succeeded"} 1.0' in metrics
    assert 'em_iterations_total{model="coins"}' in metrics


def test_inline_fit_errors_are_the_same_422(client, worker_only):
    body = {"sequences": ["HHTT", "HHTT"], "n_coins": 3}
    for app in (client, worker_only):
        response = app.post("/v1/fit/coins", json=body)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "n_coins"]


def test_a_default_above_the_servers_cap_is_clamped_not_refused(tmp_path):
    settings = Settings(data_dir=tmp_path / "d", max_iter_cap=5, time_limit_cap_s=30.0)
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU, "tol": 0})
        assert response.status_code == 200 and response.json()["n_iter"] == 5
        job = client.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU, "tol": 0}).json()
        done = wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["result"])
        assert done["n_iter"] == 5
        asked = client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU, "max_iter": 6})
        assert asked.status_code == 422 and "at most 5" in asked.json()["detail"][0]["msg"]
        assert asked.json()["detail"][0]["type"] == "value_error.limit"
