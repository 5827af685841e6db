"""The hmm family over HTTP: sync fit, jobs (SSE, cancel), every 422, kept models, and one live-server fit."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hmmlearn.hmm import CategoricalHMM, GaussianHMM

from service.main import create_app
from service.schemas.hmm import HMM_EXAMPLES
from service.settings import Settings
from tests.jobs.helpers import finished_job, parse_sse, wait_until
from tests.live_server import live_server

CASINO = HMM_EXAMPLES["dishonest_casino"]["value"]
SMALL_GAUSSIAN = HMM_EXAMPLES["gaussian_two_regimes"]["value"]
TIMINGS = {"job_id", "model_id", "elapsed_ms"}


def _strip(result):
    return {k: v for k, v in result.items() if k not in TIMINGS}


def test_casino_fit_matches_hmmlearn_from_the_same_start(client):
    body = {**CASINO, "tol": 0, "max_iter": 15}
    response = client.post("/v1/fit/hmm", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["model"] == "hmm" and result["emission"] == "categorical" and result["n_iter"] == 15
    assert result["params"]["symbols"] == ["1", "2", "3", "4", "5", "6"]
    assert len(result["labels"]) == 1 and len(result["labels"][0]) == len(CASINO["sequences"][0])

    init = CASINO["init"]
    reference = CategoricalHMM(n_components=2, n_features=6, init_params="", n_iter=15, tol=-np.inf)
    reference.startprob_ = np.array(init["start"])
    reference.transmat_ = np.array(init["transitions"])
    reference.emissionprob_ = np.array(init["emissions"]["probabilities"])
    rolls = np.array([int(s) - 1 for s in CASINO["sequences"][0]])[:, None]
    reference.fit(rolls)
    np.testing.assert_allclose(result["params"]["emissions"], reference.emissionprob_, rtol=1e-6)
    np.testing.assert_allclose(result["params"]["transitions"], reference.transmat_, rtol=1e-6)
    np.testing.assert_allclose(
        [t["log_likelihood"] for t in result["trace"][:-1]], list(reference.monitor_.history)[1:], rtol=1e-6
    )


def test_gaussian_fit_gives_regimes_and_viterbi_paths(client):
    response = client.post("/v1/fit/hmm", json={**SMALL_GAUSSIAN, "covariance_type": "full", "reg_covar": 1e-6})
    assert response.status_code == 200, response.text
    result = response.json()
    means = [m[0] for m in result["params"]["means"]]
    assert means == sorted(means) and means[0] == pytest.approx(0.06, abs=0.2) and means[1] == pytest.approx(5, abs=0.3)
    assert np.array(result["params"]["covariances"]).shape == (2, 1, 1)
    assert result["labels"] == [[0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0]]


def test_job_events_and_result_equal_the_sync_fit(client):
    body = {**SMALL_GAUSSIAN, "n_init": 2, "seed": 5}
    job = client.post("/v1/jobs/hmm", json=body).json()
    assert job["kind"] == "hmm"
    done = wait_until(lambda: finished_job(client, job["id"]))
    assert done["status"] == "succeeded"
    assert _strip(done["result"]) == _strip(client.post("/v1/fit/hmm", json=body).json())
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        events = parse_sse(list(stream.iter_lines()))
    assert events[-1]["event"] == "succeeded"
    assert [e["event"] for e in events[:-1]] == ["iteration"] * (len(events) - 1) and len(events) > 1


def test_cancel_a_running_hmm_job(tmp_path):
    settings = Settings(data_dir=tmp_path, workers=1, queue_size=2)
    rng = np.random.default_rng(0)
    body = {
        "sequences": [rng.normal(size=(20_000, 2)).tolist()],
        "emission": "gaussian",
        "n_states": 6,
        "tol": 0,
        "max_iter": 10_000,
        "time_limit_s": 60,
        "return_labels": False,
    }
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.post("/v1/jobs/hmm", json=body)
        assert response.status_code == 202, response.text
        job = response.json()
        wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["progress"], timeout_s=60)
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 202
        done = wait_until(lambda: finished_job(client, job["id"]), timeout_s=30)
        assert done["status"] == "cancelled"


BAD_REQUESTS = {
    "unequal_dimensions": ({"sequences": [[[1.0, 2.0]], [[1.0]]], "emission": "gaussian"}, "same dimension"),
    "empty_sequence": ({"sequences": [["a", "b"], []]}, "empty"),
    "symbol_not_in_list": (
        {"sequences": [["a", "z"]], "init": {"emissions": {"symbols": ["a", "b"]}}},
        "not in init.emissions.symbols",
    ),
    "more_states_than_steps": ({"sequences": [["a", "b"]], "n_states": 3}, "n_states is 3"),
    "start_not_summing_to_1": ({"sequences": [["a", "b", "a"]], "init": {"start": [0.5, 0.6]}}, "must sum to 1"),
    "transition_row": (
        {"sequences": [["a", "b", "a"]], "init": {"transitions": [[0.5, 0.5], [0.2, 0.7]]}},
        "row 1 sums to",
    ),
    "emission_row": (
        {"sequences": [["a", "b", "a"]], "init": {"emissions": [[0.5, 0.5], [0.9, 0.2]]}},
        "row 1 sums to",
    ),
    "shape_vs_n_states": ({"sequences": [["a", "b", "a"]], "init": {"start": [0.2, 0.3, 0.5]}}, "expected (2,)"),
    "emission_columns_vs_symbols": (
        {"sequences": [["a", "b", "a"]], "init": {"emissions": [[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]]}},
        "expected (2, 2)",
    ),
    "means_shape": (
        {"sequences": [[1.0, 2.0, 3.0]], "emission": "gaussian", "init": {"means": [[1.0, 2.0], [3.0, 4.0]]}},
        "expected (2, 1)",
    ),
    "mixed_symbol_types": ({"sequences": [["a", 1]]}, "mixes"),
    "mixed_across_sequences": ({"sequences": [["a", "b"], [1, 2]]}, "all strings or all integers"),
    "float_symbols": ({"sequences": [[1.5, 2.5]]}, "strings or integers"),
    "strings_for_gaussian": ({"sequences": [["a", "b"]], "emission": "gaussian"}, "need numbers"),
    "not_finite": ('{"sequences": [[1.0, NaN, 2.0]], "emission": "gaussian"}', "not a finite number"),
    "covariances_not_positive": (
        {"sequences": [[1.0, 2.0, 3.0]], "emission": "gaussian", "init": {"covariances": [1.0, -1.0]}},
        "must all be > 0",
    ),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_requests_are_clear_422s(client, name):
    body, message = BAD_REQUESTS[name]
    if isinstance(body, str):
        response = client.post("/v1/fit/hmm", content=body, headers={"content-type": "application/json"})
    else:
        response = client.post("/v1/fit/hmm", json=body)
    assert response.status_code == 422, response.text
    assert message in json.dumps(response.json()), response.text


def test_total_steps_and_states_are_capped(tmp_path):
    settings = Settings(data_dir=tmp_path, max_points=10, max_components=3)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        too_long = client.post("/v1/fit/hmm", json={"sequences": [["a"] * 6, ["b"] * 6]})
        assert too_long.status_code == 422 and "at most 10" in too_long.text
        too_many = client.post("/v1/fit/hmm", json={"sequences": [["a", "b"] * 2], "n_states": 4})
        assert too_many.status_code == 422 and "n_states" in too_many.text


def test_kept_model_predicts_scores_and_samples_like_hmmlearn(client):
    result = client.post("/v1/fit/hmm", json={**SMALL_GAUSSIAN, "covariance_type": "diag"}).json()
    model_id, params = result["model_id"], result["params"]
    reference = GaussianHMM(n_components=2, covariance_type="diag", init_params="")
    reference.startprob_, reference.transmat_ = np.array(params["start"]), np.array(params["transitions"])
    reference.means_, reference.covars_ = np.array(params["means"]), np.array(params["covariances"])
    new = [[0.2, 5.1, 4.9, -0.1], [5.0, 5.2]]

    predicted = client.post(f"/v1/models/{model_id}/predict", json={"sequences": new, "return_responsibilities": True})
    assert predicted.status_code == 200, predicted.text
    body = predicted.json()
    for sequence, labels, posteriors in zip(new, body["labels"], body["responsibilities"], strict=True):
        X = np.array(sequence)[:, None]
        assert labels == reference.decode(X, algorithm="viterbi")[1].tolist()
        np.testing.assert_allclose(posteriors, reference.predict_proba(X), rtol=1e-9, atol=1e-12)

    scored = client.post(f"/v1/models/{model_id}/score", json={"sequences": new}).json()
    expected = [reference.score(np.array(s)[:, None]) for s in new]
    np.testing.assert_allclose(scored["per_observation"], expected, rtol=1e-10)
    assert scored["log_likelihood"] == pytest.approx(sum(expected), rel=1e-10)

    first = client.post(f"/v1/models/{model_id}/sample", json={"n": 50, "seed": 3}).json()
    again = client.post(f"/v1/models/{model_id}/sample", json={"n": 50, "seed": 3}).json()
    assert first == again and len(first["sequences"][0]) == 50 and len(first["labels"][0]) == 50
    assert set(first["labels"][0]) <= {0, 1}

    wrong = client.post(f"/v1/models/{model_id}/score", json={"sequences": [[[1.0, 2.0]]]})
    assert wrong.status_code == 422 and "expects 1" in wrong.text
    coins_style = client.post(f"/v1/models/{model_id}/score", json={"sequences": ["HTTH"]})
    assert coins_style.status_code == 422


def test_import_a_casino_and_use_it(client):
    params = {
        "start": [0.5, 0.5],
        "transitions": [[0.95, 0.05], [0.1, 0.9]],
        "symbols": ["1", "2", "3", "4", "5", "6"],
        "emissions": [[1 / 6] * 6, [0.1] * 5 + [0.5]],
    }
    response = client.post("/v1/models", json={"kind": "hmm", "emission": "categorical", "params": params})
    assert response.status_code == 201, response.text
    model_id = response.json()["id"]
    rolls = list("6666666666612345123451234561")
    reference = CategoricalHMM(n_components=2, n_features=6, init_params="")
    reference.startprob_, reference.transmat_ = np.array(params["start"]), np.array(params["transitions"])
    reference.emissionprob_ = np.array(params["emissions"])
    X = np.array([int(r) - 1 for r in rolls])[:, None]
    scored = client.post(f"/v1/models/{model_id}/score", json={"sequences": [rolls]}).json()
    assert scored["per_observation"][0] == pytest.approx(reference.score(X), rel=1e-10)
    predicted = client.post(f"/v1/models/{model_id}/predict", json={"sequences": [rolls]}).json()
    assert predicted["labels"][0][:5] == [1] * 5  # the run of sixes is the loaded die
    unknown = client.post(f"/v1/models/{model_id}/predict", json={"sequences": [["7"]]})
    assert unknown.status_code == 422 and "not in" in unknown.text
    sample = client.post(f"/v1/models/{model_id}/sample", json={"n": 20, "seed": 1}).json()
    assert set(sample["sequences"][0]) <= set(params["symbols"])

    bad = client.post("/v1/models", json={"kind": "hmm", "params": {**params, "start": [0.7, 0.7]}})
    assert bad.status_code == 422 and "params.start" in bad.text


def test_one_fit_against_the_live_server(tmp_path):
    with live_server({"EM_DATA_DIR": str(tmp_path / "data")}) as server:
        response = httpx.post(f"{server.url}/v1/fit/hmm", json=CASINO, timeout=60)
    assert response.status_code == 200, response.text
    result = response.json()
    loaded = int(np.argmax(np.array(result["params"]["emissions"])[:, 5]))
    assert result["params"]["emissions"][loaded][5] > 0.3
