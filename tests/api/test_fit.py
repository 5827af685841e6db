"""The synchronous fit endpoints, per the HTTP contract."""

from __future__ import annotations

import numpy as np
import pytest

from service.schemas.coins import COIN_EXAMPLES
from service.schemas.gaussian import GAUSSIAN_EXAMPLES
from tests.conftest import DO_BATZOGLOU

TIMING_FIELDS = {"job_id", "model_id", "elapsed_ms"}


def _without_timings(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in TIMING_FIELDS}


def test_fit_coins_reproduces_do_batzoglou(client):
    body = {
        "sequences": DO_BATZOGLOU,
        "n_coins": 2,
        "init": {"biases": [0.6, 0.5]},
        "tol": 1e-12,
        "max_iter": 500,
        "trace": "params",
    }
    response = client.post("/v1/fit/coins", json=body)
    assert response.status_code == 200
    result = response.json()
    assert result["model"] == "coins"
    assert result["converged"] is True and result["stop_reason"] == "converged"
    np.testing.assert_allclose(result["params"]["biases"], [0.7968, 0.5196], atol=5e-5)
    np.testing.assert_allclose(result["trace"][0]["params"]["biases"], [0.71, 0.58], atol=0.005)
    np.testing.assert_allclose(result["trace"][9]["params"]["biases"], [0.7967, 0.5197], atol=5e-5)
    assert result["params"]["weights"] == [0.5, 0.5]
    np.testing.assert_allclose(np.sum(result["responsibilities"], axis=1), 1.0)
    assert len(result["responsibilities"]) == 5
    assert result["restarts"][0]["converged"] is True


def test_counts_and_sequences_give_the_same_fit(client):
    counts = [{"heads": s.count("H"), "tails": s.count("T")} for s in DO_BATZOGLOU]
    lower_spaced = [" ".join(s.lower()) for s in DO_BATZOGLOU]
    by_sequences = client.post("/v1/fit/coins", json={"sequences": lower_spaced, "seed": 4, "n_init": 3}).json()
    by_counts = client.post("/v1/fit/coins", json={"counts": counts, "seed": 4, "n_init": 3}).json()
    assert _without_timings(by_sequences) == _without_timings(by_counts)


def test_coins_without_init_come_in_descending_bias_order(client):
    result = client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU, "n_coins": 2, "seed": 0}).json()
    assert result["params"]["biases"] == sorted(result["params"]["biases"], reverse=True)


def test_coin_log_likelihood_has_no_binomial_coefficient(client):
    result = client.post("/v1/fit/coins", json={"counts": [{"heads": 3, "tails": 1}], "n_coins": 1}).json()
    assert result["log_likelihood"] == pytest.approx(3 * np.log(0.75) + np.log(0.25))


@pytest.mark.parametrize("name", sorted(GAUSSIAN_EXAMPLES))
def test_gaussian_examples_fit(client, name):
    response = client.post("/v1/fit/gaussian", json=GAUSSIAN_EXAMPLES[name]["value"])
    assert response.status_code == 200
    result = response.json()
    assert result["model"] == "gaussian" and result["converged"] is True
    means = np.array(result["params"]["means"])
    assert [tuple(m) for m in means] == sorted(tuple(m) for m in means)  # canonical order
    assert len(result["labels"]) == len(GAUSSIAN_EXAMPLES[name]["value"]["points"])
    assert result["responsibilities"] is None


def test_gaussian_1d_example_estimates_each_groups_mean_and_std(client):
    points = np.array(GAUSSIAN_EXAMPLES["two_groups_1d"]["value"]["points"])
    result = client.post("/v1/fit/gaussian", json=GAUSSIAN_EXAMPLES["two_groups_1d"]["value"]).json()
    params = result["params"]
    groups = [points[np.array(result["labels"]) == k] for k in range(2)]
    # Well separated groups: the fit is (to rounding) each group's sample mean and standard deviation.
    np.testing.assert_allclose(np.ravel(params["means"]), [g.mean() for g in groups], atol=0.02)
    np.testing.assert_allclose(params["stds"], [g.std() for g in groups], rtol=0.05)
    np.testing.assert_allclose(params["weights"], [0.5, 0.5], atol=0.02)


def test_gaussian_three_clusters_from_the_example(client):
    result = client.post("/v1/fit/gaussian", json=GAUSSIAN_EXAMPLES["three_clusters_2d"]["value"]).json()
    np.testing.assert_allclose(result["params"]["means"], [[0, 0], [0, 5], [5, 5]], atol=0.35)
    assert "stds" not in result["params"]
    assert result["bic"] > result["aic"] or result["n_parameters"] * (np.log(24) - 2) <= 0


@pytest.mark.parametrize(
    "covariance_type,shape", [("full", (3, 2, 2)), ("diag", (3, 2)), ("spherical", (3,)), ("tied", (2, 2))]
)
def test_covariance_shapes_by_type(client, covariance_type, shape):
    body = dict(
        GAUSSIAN_EXAMPLES["three_clusters_2d"]["value"],
        covariance_type=covariance_type,
        return_responsibilities=True,
        return_labels=False,
    )
    result = client.post("/v1/fit/gaussian", json=body).json()
    assert np.shape(result["params"]["covariances"]) == shape
    assert result["labels"] is None
    np.testing.assert_allclose(np.sum(result["responsibilities"], axis=1), 1.0)


def test_same_seed_same_response(client):
    body = dict(GAUSSIAN_EXAMPLES["three_clusters_2d"]["value"], init={"method": "random"}, trace="params")
    first, second = (client.post("/v1/fit/gaussian", json=body).json() for _ in range(2))
    assert _without_timings(first) == _without_timings(second)
    assert first["job_id"] != second["job_id"]


def test_restart_seed_replays_over_http(client):
    body = dict(GAUSSIAN_EXAMPLES["three_clusters_2d"]["value"], n_init=4, seed=9, init={"method": "random"})
    result = client.post("/v1/fit/gaussian", json=body).json()
    restart = result["restarts"][2]
    alone = client.post("/v1/fit/gaussian", json=dict(body, n_init=1, seed=restart["seed"])).json()
    assert alone["log_likelihood"] == restart["log_likelihood"]


def test_given_init_keeps_component_order(client):
    body = {"points": [0.0, 0.2, 0.1, 9.8, 10.0, 10.1], "n_components": 2, "init": {"means": [10.0, 0.0]}}
    result = client.post("/v1/fit/gaussian", json=body).json()
    assert result["params"]["means"][0][0] > result["params"]["means"][1][0]


def test_trace_params_only_when_asked(client):
    body = {"sequences": DO_BATZOGLOU, "seed": 1}
    assert "params" not in client.post("/v1/fit/coins", json=body).json()["trace"][0]
    assert "params" in client.post("/v1/fit/coins", json=dict(body, trace="params")).json()["trace"][0]
    assert client.post("/v1/fit/coins", json=dict(body, trace="none")).json()["trace"] == []


def test_time_limit_reports_stop_reason(client):
    rng = np.random.default_rng(0)
    body = {
        "points": rng.normal(size=(20_000, 3)).tolist(),
        "n_components": 8,
        "max_iter": 10_000,
        "tol": 0,
        "time_limit_s": 0.2,
        "return_labels": False,
    }
    result = client.post("/v1/fit/gaussian", json=body).json()
    assert result["stop_reason"] == "time_limit" and result["converged"] is False


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.parametrize("name", sorted(COIN_EXAMPLES))
def test_coin_examples_fit(client, name):
    assert client.post("/v1/fit/coins", json=COIN_EXAMPLES[name]["value"]).status_code == 200
