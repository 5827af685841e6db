"""Kept models over HTTP: every fit keeps one, imports are checked like an init, and predict / score / sample
answer what scikit-learn (and the binomial law) answer for the same parameters."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import stats
from sklearn.mixture import GaussianMixture

from service.datasets.parse import npy_bytes
from service.jobs.models import StorageFull
from service.main import create_app
from service.settings import Settings
from tests.conftest import DO_BATZOGLOU
from tests.jobs.helpers import no_worker_free, wait_until
from tests.live_server import live_server

RNG = np.random.default_rng(11)
COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def _sklearn_model(covariance_type: str, d: int = 3, K: int = 3) -> GaussianMixture:
    centres = RNG.normal(0, 5, (K, d))
    X = centres[RNG.integers(K, size=2000)] + RNG.normal(size=(2000, d)) @ RNG.normal(size=(d, d))
    return GaussianMixture(K, covariance_type=covariance_type, random_state=0).fit(X)


def _import(client, body, headers=None):
    response = client.post("/v1/models", json=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == f"/v1/models/{response.json()['id']}"
    return response.json()


def _import_sklearn(client, model: GaussianMixture, covariance_type: str) -> str:
    params = {
        "weights": model.weights_.tolist(),
        "means": model.means_.tolist(),
        "covariances": model.covariances_.tolist(),
    }
    body = {"kind": "gaussian", "covariance_type": covariance_type, "params": params}
    return _import(client, body)["id"]


def _close(ours, theirs):
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-10, atol=1e-12)


# --- every fit keeps its model ---


def test_a_synchronous_fit_keeps_its_model(client):
    fit = client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU, "init": {"biases": [0.6, 0.5]}}).json()
    assert fit["model_id"] == fit["job_id"]
    model = client.get(f"/v1/models/{fit['model_id']}").json()
    assert model["kind"] == "coins" and model["params"] == fit["params"] and model["job_id"] is None
    assert model["log_likelihood"] == fit["log_likelihood"] and model["n_features"] is None


def test_a_fit_on_a_worker_and_a_job_keep_their_models(tmp_path):
    # A budget of 0 sends every synchronous fit to a worker, as a large one would go.
    with TestClient(create_app(Settings(data_dir=tmp_path, inline_fit_budget=0))) as client:
        points = RNG.normal(size=(300, 2)).tolist()
        fit = client.post("/v1/fit/gaussian", json={"points": points, "covariance_type": "diag", "seed": 1}).json()
        model = client.get(f"/v1/models/{fit['model_id']}").json()
        assert model["params"] == fit["params"] and model["covariance_type"] == "diag" and model["n_features"] == 2
        job = client.post("/v1/jobs/gaussian", json={"points": points, "seed": 1}).json()
        wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded")
        done = client.get(f"/v1/jobs/{job['id']}").json()
        model = client.get(f"/v1/models/{done['result']['model_id']}").json()
        assert model["job_id"] == job["id"] and model["params"] == done["result"]["params"]


def test_a_model_that_cannot_be_stored_here_fails_the_fit(client, monkeypatch):
    def refuse(self, records):
        raise StorageFull("database or disk is full")

    # No worker free for the small fit: it is solved, and its model stored, in the API process.
    monkeypatch.setattr(client.app.state.services.jobs, "run_small_fit", no_worker_free)
    monkeypatch.setattr(type(client.app.state.services.models), "put_many", refuse)  # SQLite's or PostgreSQL's
    response = client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU})
    assert response.status_code == 507 and "full" in response.json()["detail"]


def test_a_model_its_worker_cannot_store_fails_the_fit_and_nothing_is_kept(tmp_path):
    # A small fit's worker stores its model itself, through its own connection to the store's file: a refusal
    # there (a trigger stands in for a failing disk) is the fit's failure, answered 503, as it is in the API process.
    with TestClient(create_app(Settings(data_dir=tmp_path)), raise_server_exceptions=False) as client:
        models = client.app.state.services.models
        assert client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU}).status_code == 200
        models._execute("CREATE TRIGGER refuse BEFORE INSERT ON models BEGIN SELECT RAISE(ABORT, 'refused'); END")
        response = client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU})
        # (Were it stored in this process, the trigger's error, which is not a storage refusal, would be a 500.)
        assert response.status_code == 503 and "model store" in response.json()["detail"]
        assert models.count() == 1
        models._execute("DROP TRIGGER refuse")
        kept = client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU}).json()["model_id"]
        assert client.get(f"/v1/models/{kept}").status_code == 200 and models.count() == 2


# --- reading, listing, deleting ---


def test_models_are_listed_newest_first_without_parameters_and_paged(client):
    ids = [
        client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU, "seed": s}).json()["model_id"] for s in range(5)
    ]
    first = client.get("/v1/models", params={"limit": 3}).json()
    second = client.get("/v1/models", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [m["id"] for m in first["items"] + second["items"]] == ids[::-1]
    assert second["next_cursor"] is None and all("params" not in m for m in first["items"])
    assert client.get("/v1/models", params={"cursor": "nope"}).status_code == 422


def test_a_deleted_model_is_gone(client):
    model_id = client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU}).json()["model_id"]
    assert client.delete(f"/v1/models/{model_id}").status_code == 204
    assert client.get(f"/v1/models/{model_id}").status_code == 404
    assert client.post(f"/v1/models/{model_id}/sample", json={"n": 1}).status_code == 404
    assert client.delete(f"/v1/models/{model_id}").status_code == 404


def test_another_key_cannot_see_use_or_delete_a_model(tmp_path):
    settings = Settings(data_dir=tmp_path, api_keys=["key-a", "key-b"], admin_keys=["key-admin"])
    a, b, admin = ({"Authorization": f"Bearer {key}"} for key in ("key-a", "key-b", "key-admin"))
    with TestClient(create_app(settings)) as client:
        model_id = client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU}, headers=a).json()["model_id"]
        path = f"/v1/models/{model_id}"
        assert client.get(path, headers=b).status_code == 404
        assert client.post(f"{path}/predict", json={"sequences": ["HH"]}, headers=b).status_code == 404
        assert client.delete(path, headers=b).status_code == 404
        assert client.get("/v1/models", headers=b).json()["items"] == []
        assert client.get(path, headers=admin).status_code == 200
        assert [m["id"] for m in client.get("/v1/models", headers=a).json()["items"]] == [model_id]


def test_models_expire_and_each_key_keeps_at_most_the_cap(tmp_path):
    from service.models import store as model_store

    with TestClient(create_app(Settings(data_dir=tmp_path, max_models=3))) as client:
        models = client.app.state.services.models
        ids = [client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU}).json()["model_id"] for _ in range(5)]
        client.post(f"/v1/models/{ids[0]}/sample", json={"n": 1})  # used: now the most recent
        assert models.expire(before=0.0) == 2  # nothing is that old; the cap forgets the two least recently used
        kept = {m["id"] for m in client.get("/v1/models").json()["items"]}
        assert kept == {ids[0], ids[3], ids[4]}
        assert models.expire(before=float("inf")) == 3  # past the retention: all
    assert model_store.TRIM_EVERY > 1  # trimming on writes is batched; expire() is the exact check above


# --- predict and score equal scikit-learn's ---


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_predict_and_score_equal_scikit_learn(client, covariance_type):
    reference = _sklearn_model(covariance_type)
    model_id = _import_sklearn(client, reference, covariance_type)
    X = RNG.normal(0, 5, (400, 3))
    predicted = client.post(
        f"/v1/models/{model_id}/predict", json={"points": X.tolist(), "return_responsibilities": True}
    ).json()
    assert predicted["labels"] == reference.predict(X).tolist()
    _close(predicted["responsibilities"], reference.predict_proba(X))
    scored = client.post(f"/v1/models/{model_id}/score", json={"points": X.tolist()}).json()
    _close(scored["per_observation"], reference.score_samples(X))
    assert scored["mean_log_likelihood"] == pytest.approx(reference.score(X), rel=1e-10)
    assert scored["log_likelihood"] == pytest.approx(reference.score(X) * len(X), rel=1e-10)


def test_a_fitted_model_predicts_its_own_labels_and_scores_its_own_log_likelihood(client):
    points = np.concatenate([RNG.normal(0, 1, (200, 2)), RNG.normal(6, 1, (200, 2))])
    fit = client.post("/v1/fit/gaussian", json={"points": points.tolist(), "seed": 0}).json()
    predicted = client.post(f"/v1/models/{fit['model_id']}/predict", json={"points": points.tolist()}).json()
    assert predicted["labels"] == fit["labels"] and predicted["responsibilities"] is None
    scored = client.post(f"/v1/models/{fit['model_id']}/score", json={"points": points.tolist()}).json()
    assert scored["log_likelihood"] == pytest.approx(fit["log_likelihood"], rel=1e-9)


def test_predict_and_score_take_a_dataset_by_id(client):
    reference = _sklearn_model("full", d=2, K=2)
    model_id = _import_sklearn(client, reference, "full")
    X = RNG.normal(0, 4, (5000, 2))  # large enough to be answered from a thread
    dataset = client.post("/v1/datasets", content=npy_bytes(X), headers={"Content-Type": "application/x-npy"}).json()
    predicted = client.post(
        f"/v1/models/{model_id}/predict", json={"dataset": dataset["id"], "return_responsibilities": True}
    ).json()
    assert predicted["labels"] == reference.predict(X).tolist()
    _close(predicted["responsibilities"], reference.predict_proba(X))
    scored = client.post(f"/v1/models/{model_id}/score", json={"dataset": dataset["id"]}).json()
    _close(scored["per_observation"], reference.score_samples(X))


def test_a_coin_model_scores_the_binomial_law_and_predicts_the_likelier_coin(client):
    model = _import(client, {"kind": "coins", "params": {"biases": [0.8, 0.45], "weights": [0.3, 0.7]}})
    counts = [{"heads": 9, "tails": 1}, {"heads": 5, "tails": 5}, {"heads": 0, "tails": 3}]
    heads, flips = np.array([9, 5, 0]), np.array([10, 10, 3])
    joint = np.log([0.3, 0.7]) + np.stack([stats.binom.logpmf(heads, flips, p) for p in (0.8, 0.45)], axis=1)
    scored = client.post(f"/v1/models/{model['id']}/score", json={"counts": counts}).json()
    _close(scored["per_observation"], np.logaddexp(joint[:, 0], joint[:, 1]))
    predicted = client.post(
        f"/v1/models/{model['id']}/predict", json={"sequences": ["HHHHHHHHHT", "HTHTHTHTHT", "TTT"]}
    ).json()
    assert predicted["labels"] == np.argmax(joint, axis=1).tolist()


# --- sample: reproducible, with the model's moments ---


def test_a_gaussian_sample_is_reproducible_and_has_the_models_moments(client):
    weights, means = [0.3, 0.7], [[0.0, 0.0], [5.0, -2.0]]
    covariances = [[[1.0, 0.5], [0.5, 2.0]], [[0.3, 0.0], [0.0, 0.3]]]
    body = {"kind": "gaussian", "params": {"weights": weights, "means": means, "covariances": covariances}}
    model_id = _import(client, body)["id"]
    n = 50_000
    drawn = client.post(f"/v1/models/{model_id}/sample", json={"n": n, "seed": 9}).json()
    assert drawn == client.post(f"/v1/models/{model_id}/sample", json={"n": n, "seed": 9}).json()
    points, labels = np.array(drawn["points"]), np.array(drawn["labels"])
    for k in range(2):
        members = points[labels == k]
        assert abs(len(members) / n - weights[k]) < 6 * np.sqrt(weights[k] * (1 - weights[k]) / n)
        sd = np.sqrt(np.diag(covariances[k]))
        np.testing.assert_array_less(np.abs(members.mean(axis=0) - means[k]), 6 * sd / np.sqrt(len(members)))
    unseeded = client.post(f"/v1/models/{model_id}/sample", json={"n": 3}).json()
    replay = client.post(f"/v1/models/{model_id}/sample", json={"n": 3, "seed": unseeded["seed"]}).json()
    assert replay == unseeded


def test_a_coin_sample_is_sequences_of_the_asked_length_with_the_models_head_rate(client):
    model_id = _import(client, {"kind": "coins", "params": {"biases": [0.9, 0.2]}})["id"]
    n, flips = 20_000, 12
    drawn = client.post(f"/v1/models/{model_id}/sample", json={"n": n, "flips": flips, "seed": 2}).json()
    sequences, labels = drawn["sequences"], np.array(drawn["labels"])
    assert len(sequences) == n and {len(s) for s in sequences} == {flips} and set("".join(sequences)) <= {"H", "T"}
    heads = np.array([s.count("H") for s in sequences])
    for k, bias in enumerate([0.9, 0.2]):
        members = heads[labels == k]
        sd = np.sqrt(flips * bias * (1 - bias))
        assert abs(members.mean() - flips * bias) < 6 * sd / np.sqrt(len(members))


# --- what is refused ---


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            {"kind": "gaussian", "params": {"weights": [0.5, 0.6], "means": [[0.0], [1.0]], "covariances": [1.0, 1.0]}},
            "must sum to 1",
        ),
        (
            {
                "kind": "gaussian",
                "params": {"weights": [1.0], "means": [[0.0, 0.0]], "covariances": [[[1, 2], [2, 1]]]},
            },
            "not positive definite",
        ),
        (
            {
                "kind": "gaussian",
                "covariance_type": "diag",
                "params": {"weights": [1.0], "means": [[0.0, 0.0]], "covariances": [[1.0, 1.0, 1.0]]},
            },
            "expected (1, 2)",
        ),
        (
            {
                "kind": "gaussian",
                "covariance_type": "spherical",
                "params": {"weights": [0.5, 0.5], "means": [[0.0], [1.0]], "covariances": [1.0, 0.0]},
            },
            "positive",
        ),
        ({"kind": "coins", "params": {"biases": [1.2, 0.5]}}, "less than or equal to 1"),
        ({"kind": "coins", "params": {"biases": [0.2, 0.5], "weights": [1.0]}}, "expected 2"),
        ({"kind": "dice", "params": {}}, "does not match any of the expected tags"),
    ],
)
def test_unusable_imported_parameters_are_a_422_naming_the_problem(client, body, says):
    response = client.post("/v1/models", json=body)
    assert response.status_code == 422 and says in str(response.json()["detail"]), response.text


def test_observations_that_do_not_fit_the_model_are_a_422(client):
    gaussian = _import_sklearn(client, _sklearn_model("diag", d=3, K=2), "diag")
    coins = _import(client, {"kind": "coins", "params": {"biases": [1.0, 0.5], "weights": [1.0, 0.0]}})["id"]
    cases = [
        (gaussian, "predict", {"points": [[1.0, 2.0]]}, "the model expects 3"),
        (gaussian, "score", {"sequences": ["HT"]}, "takes points or a dataset"),
        (coins, "predict", {"points": [1.0]}, "takes sequences, counts"),
        (coins, "score", {"sequences": ["HT"]}, "observation 0 has probability 0"),
        (gaussian, "predict", {"points": [[1.0, 2.0, 3.0]], "sequences": ["H"]}, "exactly one of"),
        (gaussian, "predict", {"dataset": "nope"}, "no dataset 'nope'"),
        (gaussian, "sample", {"n": 0}, "greater than or equal to 1"),
    ]
    for model_id, verb, body, says in cases:
        response = client.post(f"/v1/models/{model_id}/{verb}", json=body)
        assert response.status_code == 422 and says in str(response.json()["detail"]), (verb, body, response.text)


def test_caps_apply_to_samples_and_answers(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path, max_points=100))) as client:
        model_id = _import(client, {"kind": "coins", "params": {"biases": [0.5]}})["id"]
        response = client.post(f"/v1/models/{model_id}/sample", json={"n": 101})
        assert response.status_code == 422 and "at most 100" in response.json()["detail"][0]["msg"]
        response = client.post(f"/v1/models/{model_id}/score", json={"sequences": ["H"] * 101})
        assert response.status_code == 422 and "at most 100" in response.json()["detail"][0]["msg"]


# --- Swagger's examples, and a real server ---


def test_the_swagger_examples_run(client):
    from service.api.models import IMPORT_EXAMPLES, PREDICT_EXAMPLES, SAMPLE_EXAMPLES

    gaussian = _import(client, IMPORT_EXAMPLES["gaussian_2d"]["value"])["id"]
    coins = _import(client, IMPORT_EXAMPLES["coins"]["value"])["id"]
    for model_id, example in ((gaussian, "points"), (coins, "sequences")):
        for verb in ("predict", "score"):
            body = dict(PREDICT_EXAMPLES[example]["value"])
            if verb == "score":
                body.pop("return_responsibilities")
            assert client.post(f"/v1/models/{model_id}/{verb}", json=body).status_code == 200
        assert client.post(f"/v1/models/{model_id}/sample", json=SAMPLE_EXAMPLES["five"]["value"]).status_code == 200


def test_fit_then_predict_over_a_real_server(tmp_path):
    server_env = {"EM_DATA_DIR": str(tmp_path / "data")}
    with live_server(server_env) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        fit = http.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU, "init": {"biases": [0.6, 0.5]}}).json()
        predicted = http.post(f"/v1/models/{fit['model_id']}/predict", json={"sequences": DO_BATZOGLOU}).json()
        assert predicted["labels"] == np.argmax(fit["responsibilities"], axis=1).tolist()
        scored = http.post(f"/v1/models/{fit['model_id']}/score", json={"sequences": DO_BATZOGLOU}).json()
        assert len(scored["per_observation"]) == 5
        drawn = http.post(f"/v1/models/{fit['model_id']}/sample", json={"n": 4, "seed": 1}).json()
        assert drawn == http.post(f"/v1/models/{fit['model_id']}/sample", json={"n": 4, "seed": 1}).json()
        imported = http.post("/v1/models", json={"kind": "coins", "params": {"biases": [0.3]}})
        assert imported.status_code == 201
        assert {m["id"] for m in http.get("/v1/models").json()["items"]} == {fit["model_id"], imported.json()["id"]}
        assert http.delete(f"/v1/models/{imported.json()['id']}").status_code == 204
    with live_server({"EM_DATA_DIR": str(tmp_path / "data")}) as restarted:  # kept across a restart
        assert httpx.get(f"{restarted.url}/v1/models/{fit['model_id']}").json()["params"] == fit["params"]


def test_imports_are_held_to_the_size_caps_and_large_ones_still_work(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path, max_components=3, max_features=120))) as client:
        too_many = {"kind": "coins", "params": {"biases": [0.1, 0.2, 0.3, 0.4]}}
        response = client.post("/v1/models", json=too_many)
        assert response.status_code == 422 and "at most 3" in response.json()["detail"][0]["msg"]
        wide = {"kind": "gaussian", "covariance_type": "diag",
                "params": {"weights": [1.0], "means": [[0.0] * 121], "covariances": [[1.0] * 121]}}  # fmt: skip
        response = client.post("/v1/models", json=wide)
        assert response.status_code == 422 and "at most 120" in response.json()["detail"][0]["msg"]
        d = 110  # 2 x 110^2 numbers of covariance: checked (and later loaded) off the event loop
        reference = GaussianMixture(2, random_state=0).fit(
            RNG.normal(size=(500, d)) + np.repeat([[0.0], [9.0]], 250, 0)
        )
        model_id = _import_sklearn(client, reference, "full")
        X = RNG.normal(size=(20, d))
        predicted = client.post(f"/v1/models/{model_id}/predict", json={"points": X.tolist()}).json()
        assert predicted["labels"] == reference.predict(X).tolist()


def test_an_empty_list_of_sequences_is_a_422_not_a_500(client):
    """Found by Schemathesis: {"sequences": []} reached the score's mean over no observations (a 500)."""
    coins = _import(client, {"kind": "coins", "params": {"biases": [0.3, 0.6]}})["id"]
    for verb in ("predict", "score"):
        response = client.post(f"/v1/models/{coins}/{verb}", json={"sequences": []})
        assert response.status_code == 422 and "at least 1 item" in response.text
