"""Standard errors over HTTP: the shape of params, null unless asked for and defined, bounded before they run."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.conftest import DO_BATZOGLOU
from tests.jobs.helpers import wait_until

CONVERGED = {"tol": 1e-12, "max_iter": 2000}


def test_coin_errors_have_the_shape_of_params_and_fixed_weights_have_none(client):
    body = {"sequences": DO_BATZOGLOU, "init": {"biases": [0.6, 0.5]}, "standard_errors": True, **CONVERGED}
    result = client.post("/v1/fit/coins", json=body).json()
    errors, covariance = result["standard_errors"], result["covariance_of_estimates"]
    assert errors["weights"] is None  # Do & Batzoglou: weights fixed at 1/2, not estimated
    assert covariance["parameters"] == ["biases[0]", "biases[1]"]
    np.testing.assert_allclose(errors["biases"], np.sqrt(np.diag(covariance["matrix"])), rtol=1e-12)
    plain = client.post("/v1/fit/coins", json={**body, "standard_errors": False}).json()
    assert plain["standard_errors"] is None and plain["covariance_of_estimates"] is None


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_gaussian_errors_have_the_shape_of_params(client, covariance_type):
    rng = np.random.default_rng(0)
    points = np.vstack([rng.normal(0, 1, (60, 2)), rng.normal(5, 1, (40, 2))]).tolist()
    body = {"points": points, "covariance_type": covariance_type, "seed": 0, "standard_errors": True, **CONVERGED}
    result = client.post("/v1/fit/gaussian", json=body).json()
    errors = result["standard_errors"]
    for name in ("weights", "means", "covariances"):
        assert np.shape(errors[name]) == np.shape(result["params"][name])
        assert np.all(np.asarray(errors[name]) > 0)
    assert errors["weights"][0] == pytest.approx(errors["weights"][1], rel=1e-12)


def test_one_dimensional_fits_also_give_the_errors_of_the_standard_deviations(client):
    points = np.random.default_rng(1).normal(2.0, 3.0, 400).tolist()
    body = {"points": points, "n_components": 1, "reg_covar": 0, "standard_errors": True, **CONVERGED}
    result = client.post("/v1/fit/gaussian", json=body).json()
    std, errors = result["params"]["stds"][0], result["standard_errors"]
    assert errors["means"][0][0] == pytest.approx(std / np.sqrt(400), rel=1e-9)
    assert errors["stds"][0] == pytest.approx(std / np.sqrt(2 * 400), rel=1e-6)


def test_a_job_gives_the_same_errors_as_the_synchronous_fit(client):
    body = {"sequences": DO_BATZOGLOU, "n_coins": 2, "fit_weights": True, "seed": 3, "standard_errors": True}
    job = client.post("/v1/jobs/coins", json={**body, **CONVERGED}).json()
    done = wait_until(lambda: (j := client.get(f"/v1/jobs/{job['id']}").json())["status"] == "succeeded" and j)
    sync = client.post("/v1/fit/coins", json={**body, **CONVERGED}).json()
    assert done["result"]["standard_errors"] == sync["standard_errors"]


def test_undefined_errors_are_null_with_a_warning_never_nan(client):
    # Stopped after two iterations: not a maximum, so no curvature to report.
    body = {"sequences": DO_BATZOGLOU, "init": {"biases": [0.6, 0.5]}, "standard_errors": True, "max_iter": 2}
    result = client.post("/v1/fit/coins", json=body).json()
    assert result["standard_errors"] is None
    assert any("did not converge" in w for w in result["warnings"])


def test_standard_errors_over_the_servers_cap_are_a_422_before_any_work(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path, max_standard_error_cells=1000))) as client:
        points = np.random.default_rng(2).normal(size=(100, 3)).tolist()
        response = client.post("/v1/fit/gaussian", json={"points": points, "standard_errors": True})
        assert response.status_code == 422
        problem = response.json()["detail"][0]
        assert problem["loc"][-1] == "standard_errors" and "at most 1e+03" in problem["msg"]
