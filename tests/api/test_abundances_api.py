"""POST /v1/fit/abundances and /v1/jobs/abundances, their 422s, and kept abundance models in /v1/models."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.schemas.abundances import THREE_TRANSCRIPTS
from service.settings import Settings
from tests.jobs.helpers import finished_job, parse_sse, wait_until
from tests.live_server import live_server

TIMINGS = {"job_id", "model_id", "elapsed_ms"}


def _api_example_rho() -> list[float]:
    """The API's example by hand: rho_3 = 0 (t3 is seen only with the shorter t2), then {t2, t3} counts as {t2},
    and rho_1 = x solves -N d x^2 + ((n_a + n_ab) d - (n_a + n_b) v) x + n_a v = 0 (see tests/em)."""
    n_a, n_b, n_ab, u, v = 120, 80, 300, 1 / 1500, 1 / 900
    d = u - v
    roots = np.roots([-(n_a + n_b + n_ab) * d, (n_a + n_ab) * d - (n_a + n_b) * v, n_a * v]).real
    x = float(next(r for r in roots if 0 < r < 1))
    return [x, 1 - x, 0.0]


def test_sync_fit_of_the_api_example(client):
    response = client.post("/v1/fit/abundances", json={**THREE_TRANSCRIPTS, "tol": 0, "max_iter": 3000})
    assert response.status_code == 200
    result = response.json()
    assert result["model"] == "abundances" and result["n_reads"] == 500
    params = result["params"]
    assert params["targets"] == ["t1", "t2", "t3"] and params["lengths"] == [1500.0, 900.0, 2000.0]
    rho = _api_example_rho()
    np.testing.assert_allclose(params["rho"], rho, atol=1e-9)
    np.testing.assert_allclose(params["est_counts"], 500 * np.array(rho), atol=1e-6)
    per_base = np.array(rho) / [1500.0, 900.0, 2000.0]
    np.testing.assert_allclose(params["tpm"], 1e6 * per_base / per_base.sum(), rtol=1e-8, atol=1e-6)
    expected_ll = 120 * np.log(rho[0] / 1500) + 300 * np.log(rho[0] / 1500 + rho[1] / 900) + 80 * np.log(rho[1] / 900)
    assert result["log_likelihood"] == pytest.approx(expected_ll, rel=1e-12)


def test_default_tol_is_per_read_and_converges(client):
    result = client.post("/v1/fit/abundances", json=THREE_TRANSCRIPTS).json()
    assert result["converged"] and result["stop_reason"] == "converged"
    assert abs(result["trace"][-1]["delta"]) <= 1e-6
    deltas = [entry["log_likelihood"] for entry in result["trace"]]
    assert deltas == sorted(deltas)  # never decreases


def test_same_seed_same_answer_with_random_starts(client):
    body = {**THREE_TRANSCRIPTS, "n_init": 3, "seed": 17}
    first, second = (
        client.post("/v1/fit/abundances", json=body).json(),
        client.post("/v1/fit/abundances", json=body).json(),
    )
    assert {k: v for k, v in first.items() if k not in TIMINGS} == {k: v for k, v in second.items() if k not in TIMINGS}


def test_warnings_for_unseen_and_inseparable_targets(client):
    body = {
        "targets": [{"name": "a", "length": 500.0}, {"name": "b", "length": 500.0}, {"name": "c", "length": 900.0}],
        "classes": [{"targets": ["a", "b"], "count": 40}, {"targets": ["c"], "count": 0}],
    }
    result = client.post("/v1/fit/abundances", json=body).json()
    assert result["params"]["rho"][2] == 0
    assert any("'c'" in w for w in result["warnings"]) and any("'a', 'b'" in w for w in result["warnings"])


def test_job_events_and_result_equal_the_sync_fit(client):
    body = {**THREE_TRANSCRIPTS, "tol": 1e-10, "max_iter": 500, "seed": 8}
    job = client.post("/v1/jobs/abundances", json=body)
    assert job.status_code == 202 and job.json()["kind"] == "abundances"
    job_id = job.json()["id"]
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        events = parse_sse(list(stream.iter_lines()))
    assert events[-1]["event"] == "succeeded"
    result = json.loads(events[-1]["data"])["result"]
    iterations = [e for e in events if e["event"] == "iteration"]
    assert len(iterations) == result["n_iter"]
    done = wait_until(lambda: finished_job(client, job_id))
    assert done["request"]["n_targets"] == 3 and done["request"]["n_reads"] == 500
    sync = client.post("/v1/fit/abundances", json=body).json()
    assert {k: v for k, v in done["result"].items() if k not in TIMINGS} == {
        k: v for k, v in sync.items() if k not in TIMINGS
    }


def _long_body(n_targets=200, n_classes=40_000) -> dict:
    """A fit that keeps iterating (tol 0, many iterations) until cancelled."""
    rng = np.random.default_rng(0)
    names = [f"t{i}" for i in range(n_targets)]
    pairs = rng.integers(0, n_targets, size=(n_classes, 2))
    classes = [
        {"targets": [names[a]] if a == b else [names[a], names[b]], "count": int(c)}
        for (a, b), c in zip(pairs, rng.integers(1, 50, n_classes), strict=True)
    ]
    targets = [
        {"name": n, "length": float(length)} for n, length in zip(names, rng.uniform(300, 3000, n_targets), strict=True)
    ]
    return {"targets": targets, "classes": classes, "tol": 0, "max_iter": 10_000, "time_limit_s": 60}


def test_cancel_a_running_job(client):
    job_id = client.post("/v1/jobs/abundances", json=_long_body()).json()["id"]
    wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["progress"])
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 202
    done = wait_until(lambda: finished_job(client, job_id), timeout_s=10)
    assert done["status"] == "cancelled"
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        assert parse_sse(list(stream.iter_lines()))[-1]["event"] == "cancelled"


def _with(**changes):
    body = json.loads(json.dumps(THREE_TRANSCRIPTS))
    for key, value in changes.items():
        body[key] = value
    return body


T3 = THREE_TRANSCRIPTS["targets"]
C3 = THREE_TRANSCRIPTS["classes"]


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        (_with(classes=[*C3, {"targets": ["t9"], "count": 1}]), ["body", "classes", 3, "targets", 0], "t9"),
        (_with(classes=[*C3, {"targets": [], "count": 1}]), ["body", "classes", 3, "targets"], "at least 1"),
        (_with(classes=[{"targets": ["t1", "t1"], "count": 3}]), ["body", "classes", 0, "targets"], "twice"),
        (_with(targets=[*T3, {"name": "t1", "length": 10.0}]), ["body", "targets", 3, "name"], "twice"),
        (_with(targets=[{"name": "t1", "length": 0.0}, *T3[1:]]), ["body", "targets", 0, "length"], "greater than 0"),
        (_with(targets=[{"name": "t1", "length": -5.0}, *T3[1:]]), ["body", "targets", 0, "length"], "greater than 0"),
        (_with(classes=[{"targets": ["t1"], "count": -1}]), ["body", "classes", 0, "count"], "greater than or equal"),
        (_with(classes=[{"targets": ["t1"], "count": 2.5}]), ["body", "classes", 0, "count"], "integer"),
        (_with(classes=[{"targets": ["t1"], "count": 0}]), ["body", "classes"], "no reads"),
        (_with(init={"rho": [0.5, 0.5]}), ["body", "init", "rho"], "expected one per target"),
        (_with(init={"rho": [0.5, 0.4, 0.3]}), ["body", "init", "rho"], "sum to 1"),
        (_with(init={"rho": [1.0, 0.0, 0.0]}), ["body", "init", "rho"], "impossible"),
        (_with(init={"rho": [0.2, 0.3, 0.5]}, n_init=2), ["body"], "n_init must be 1"),
        (_with(targets=[], classes=C3), ["body", "targets"], "at least 1"),
        (_with(dataset="abc"), ["body"], "dataset"),
    ],
)
def test_bad_requests_are_422_naming_the_field(client, body, loc, words):
    response = client.post("/v1/fit/abundances", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(d["loc"][: len(loc)] == loc and words in d["msg"] for d in detail), detail


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"1e999"])
def test_non_finite_numbers_are_422(client, number):
    body = b'{"targets": [{"name": "t1", "length": ' + number + b'}], "classes": [{"targets": ["t1"], "count": 1}]}'
    response = client.post("/v1/fit/abundances", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_caps_are_checked_before_the_fit(tmp_path):
    settings = Settings(data_dir=tmp_path, max_targets=2, max_points=4)
    with TestClient(create_app(settings), raise_server_exceptions=False) as capped:
        response = capped.post("/v1/fit/abundances", json=THREE_TRANSCRIPTS)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "targets"]
        two = {"targets": T3[:2], "classes": [{"targets": ["t1", "t2"], "count": 1}] * 3}
        response = capped.post("/v1/fit/abundances", json=two)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "classes"]


def test_targets_have_their_own_cap_not_the_mixtures_components(tmp_path):
    """A transcriptome has far more targets than a mixture has components: EM_MAX_COMPONENTS does not apply."""
    settings = Settings(data_dir=tmp_path, max_components=2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        fit = client.post("/v1/fit/abundances", json=THREE_TRANSCRIPTS)
        assert fit.status_code == 200, fit.text
        model_id = fit.json()["model_id"]
        assert client.post(f"/v1/models/{model_id}/score", json={"classes": C3}).status_code == 200
        imported = {"kind": "abundances", "params": fit.json()["params"]}
        assert client.post("/v1/models", json=imported).status_code == 201


# --- kept models ---


def test_fitted_model_predicts_scores_and_samples(client):
    fit = client.post("/v1/fit/abundances", json={**THREE_TRANSCRIPTS, "tol": 0, "max_iter": 3000}).json()
    model_id = fit["model_id"]
    kept = client.get(f"/v1/models/{model_id}").json()
    assert kept["kind"] == "abundances" and kept["params"]["targets"] == ["t1", "t2", "t3"]
    rho, lengths = np.array(fit["params"]["rho"]), np.array([1500.0, 900.0, 2000.0])
    weight = rho / lengths

    classes = [{"targets": ["t1", "t2"]}, {"targets": ["t1"], "count": 120}]
    predicted = client.post(
        f"/v1/models/{model_id}/predict", json={"classes": classes, "return_responsibilities": True}
    )
    assert predicted.status_code == 200
    assert predicted.json()["labels"] == [int(np.argmax(weight[:2])), 0]
    np.testing.assert_allclose(predicted.json()["responsibilities"][0], [*(weight[:2] / weight[:2].sum()), 0.0])

    score = client.post(f"/v1/models/{model_id}/score", json={"classes": C3}).json()
    per_read = np.log([weight[0], weight[0] + weight[1], weight[1] + weight[2]])
    np.testing.assert_allclose(score["per_observation"], per_read, rtol=1e-12)
    # Counts do not enter a score; weighted by them the per-read scores are the fit's log-likelihood.
    assert np.dot([120, 300, 80], score["per_observation"]) == pytest.approx(fit["log_likelihood"], rel=1e-12)

    sample = client.post(f"/v1/models/{model_id}/sample", json={"n": 2000, "seed": 3}).json()
    assert sample["seed"] == 3 and len(sample["targets"]) == 2000
    assert all(
        ["t1", "t2", "t3"][label] == name for label, name in zip(sample["labels"], sample["targets"], strict=True)
    )
    assert "t3" not in sample["targets"]  # rho_3 = 0
    assert sample == client.post(f"/v1/models/{model_id}/sample", json={"n": 2000, "seed": 3}).json()


def test_model_use_refusals(client):
    model_id = client.post("/v1/fit/abundances", json=THREE_TRANSCRIPTS).json()["model_id"]
    unknown = client.post(f"/v1/models/{model_id}/predict", json={"classes": [{"targets": ["t7"]}]})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "classes", 0, "targets", 0]
    points = client.post(f"/v1/models/{model_id}/score", json={"points": [1.0, 2.0]})
    assert points.status_code == 422 and "classes" in points.json()["detail"][0]["msg"]
    both = client.post(f"/v1/models/{model_id}/score", json={"points": [1.0], "classes": C3})
    assert both.status_code == 422


def test_import_a_results_params_and_refuse_bad_ones(client):
    fit = client.post("/v1/fit/abundances", json=THREE_TRANSCRIPTS).json()
    imported = client.post("/v1/models", json={"kind": "abundances", "params": fit["params"]})
    assert imported.status_code == 201
    params = imported.json()["params"]
    np.testing.assert_allclose(params["rho"], fit["params"]["rho"], rtol=1e-12)
    np.testing.assert_allclose(params["est_counts"], fit["params"]["est_counts"], rtol=1e-9)
    bad = {"targets": ["a", "b"], "lengths": [100.0, 200.0], "rho": [0.7, 0.7]}
    response = client.post("/v1/models", json={"kind": "abundances", "params": bad})
    assert response.status_code == 422 and "sum to 1" in response.json()["detail"][0]["msg"]
    twice = {"targets": ["a", "a"], "lengths": [100.0, 200.0], "rho": [0.5, 0.5]}
    assert client.post("/v1/models", json={"kind": "abundances", "params": twice}).status_code == 422
    short = {"targets": ["a", "b"], "lengths": [100.0], "rho": [0.5, 0.5]}
    assert client.post("/v1/models", json={"kind": "abundances", "params": short}).status_code == 422


def test_fit_over_real_http(tmp_path):
    with live_server({"EM_DATA_DIR": str(tmp_path / "data")}) as server:
        response = httpx.post(
            f"{server.url}/v1/fit/abundances", json={**THREE_TRANSCRIPTS, "tol": 0, "max_iter": 3000}, timeout=30
        )
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["params"]["rho"], _api_example_rho(), atol=1e-9)
