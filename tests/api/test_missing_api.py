"""Missing coordinates over HTTP: null in JSON rows, the observed-data fit, imputations, and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from tests.jobs.helpers import wait_until

ROWS = [[0.1, 0.2], [None, 0.4], [0.3, None], [4.0, 4.1], [4.2, None], [None, 3.9], [0.0, 0.1], [4.1, 4.0]]


def test_null_coordinates_are_fitted_not_refused(client):
    response = client.post("/v1/fit/gaussian", json={"points": ROWS, "seed": 0, "return_imputed": True})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["n_missing"] == 4 and result["labels"] == [0, 0, 0, 1, 1, 1, 0, 1]
    imputed = np.array(result["imputed"])
    observed = np.array([[np.nan if v is None else v for v in row] for row in ROWS])
    known = ~np.isnan(observed)
    np.testing.assert_array_equal(imputed[known], observed[known])  # observed values as given
    assert np.all(np.isfinite(imputed)) and abs(imputed[1, 0] - 0.3) < 0.5  # a gap filled near its group


def test_complete_points_answer_exactly_as_before(client):
    complete = [[0.1, 0.2], [0.2, 0.4], [0.3, 0.1], [4.0, 4.1], [4.2, 4.3], [3.8, 3.9]]
    body = {"points": complete, "seed": 0, "return_imputed": True}
    result = client.post("/v1/fit/gaussian", json=body).json()
    assert result["n_missing"] == 0
    np.testing.assert_allclose(result["imputed"], complete, rtol=0, atol=1e-12)
    again = client.post("/v1/fit/gaussian", json={**body, "return_imputed": False}).json()
    assert again["params"] == result["params"] and again["imputed"] is None


def test_a_job_fits_missing_values_like_the_synchronous_fit(client):
    body = {"points": ROWS, "seed": 1, "n_init": 2}
    job = client.post("/v1/jobs/gaussian", json=body).json()
    done = wait_until(lambda: (j := client.get(f"/v1/jobs/{job['id']}").json())["status"] == "succeeded" and j)
    assert done["result"]["params"] == client.post("/v1/fit/gaussian", json=body).json()["params"]


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        ({"points": [[None, None], [1, 2], [3, 4]]}, ["body", "points", 0], "no observed coordinate"),
        ({"points": [[None, 1], [None, 2], [None, 3]]}, ["body", "points"], "coordinate 0 is missing"),
        ({"points": ROWS, "standard_errors": True}, ["body", "standard_errors"], "not available yet"),
        ({"points": ROWS, "dtype": "float32"}, ["body", "dtype"], "float64 only"),
        ({"points": [[1, None], [2]]}, ["body", "points"], "same length"),
        ({"points": [[1, "a"], [2, None]]}, ["body", "points"], "'a', not a number"),
    ],
)
def test_unusable_missing_values_are_a_422_naming_them(client, body, where, says):
    response = client.post("/v1/fit/gaussian", json={"n_components": 1, **body})
    assert response.status_code == 422, response.text
    problem = response.json()["detail"][0]
    assert problem["loc"] == where and says in problem["msg"], problem


def test_a_kept_model_of_incomplete_points_predicts_complete_ones(client):
    fit = client.post("/v1/fit/gaussian", json={"points": ROWS, "seed": 0}).json()
    predicted = client.post(f"/v1/models/{fit['model_id']}/predict", json={"points": [[0.0, 0.0], [4.0, 4.0]]})
    assert predicted.json()["labels"] == [0, 1]


def test_an_npy_dataset_with_nan_is_fitted_and_selected_by_id_but_not_predicted(client):
    from service.datasets.parse import npy_bytes

    rng = np.random.default_rng(7)
    X = np.vstack([rng.normal(0, 1, (60, 2)), rng.normal(5, 1, (60, 2))])
    X[rng.uniform(size=X.shape) < 0.15] = np.nan
    X[np.isnan(X).all(axis=1), 0] = 0.0
    upload = client.post("/v1/datasets", content=npy_bytes(X), headers={"content-type": "application/x-npy"})
    assert upload.status_code == 201, upload.text
    dataset = upload.json()["id"]
    fit = client.post("/v1/fit/gaussian", json={"dataset": dataset, "seed": 0}).json()
    assert fit["n_missing"] == int(np.isnan(X).sum()) and fit["labels"][:3] != fit["labels"][-3:]
    body = {"dataset": dataset, "n_components": [1, 2, 3], "seed": 0}
    selected = client.post("/v1/fit/gaussian/select", json=body)
    assert selected.status_code == 200 and selected.json()["best"]["n_components"] == 2
    predicted = client.post(f"/v1/models/{fit['model_id']}/predict", json={"dataset": dataset})
    assert predicted.status_code == 422 and "missing values" in predicted.text
