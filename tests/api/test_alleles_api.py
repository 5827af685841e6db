"""The alleles family over HTTP: sync and job fits, events, refusals, and its kept model."""

from __future__ import annotations

import copy
import json

import httpx
import numpy as np
import pytest

from service.schemas.alleles import ALLELE_EXAMPLES
from tests.jobs.helpers import finished_job, parse_sse, wait_until
from tests.live_server import live_server

MOTH = ALLELE_EXAMPLES["peppered_moth"]["value"]
TIMINGS = {"job_id", "model_id", "elapsed_ms"}


def test_the_peppered_moth_over_http(client):
    response = client.post("/v1/fit/alleles", json=MOTH)
    assert response.status_code == 200
    result = response.json()
    assert result["model"] == "alleles" and result["alleles"] == ["C", "I", "T"]
    np.testing.assert_allclose(result["params"]["frequencies"], [0.07084, 0.18874, 0.74043], atol=1e-4)
    assert result["n_observations"] == 622 and result["converged"] and result["stop_reason"] == "converged"
    genotypes = result["params"]["genotype_frequencies"]
    assert list(genotypes) == ["C/C", "C/I", "C/T", "I/I", "I/T", "T/T"]
    assert sum(genotypes.values()) == pytest.approx(1.0, abs=1e-12)
    assert sum(result["genotype_posteriors"]["insularia"].values()) == pytest.approx(1.0, abs=1e-12)
    lls = [entry["log_likelihood"] for entry in result["trace"]]
    assert lls == sorted(lls) and lls[-1] == result["log_likelihood"]


def test_an_allele_job_streams_its_iterations_and_equals_the_sync_fit(client):
    body = {**ALLELE_EXAMPLES["abo_blood_groups"]["value"], "n_init": 2, "seed": 4}
    job = client.post("/v1/jobs/alleles", json=body).json()
    assert job["kind"] == "alleles" and job["request"]["n_individuals"] == 521
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        events = parse_sse(list(stream.iter_lines()))
    assert events[-1]["event"] == "succeeded"
    iterations = [json.loads(e["data"]) for e in events if e["event"] == "iteration"]
    result = json.loads(events[-1]["data"])["result"]
    assert len(iterations) == sum(restart["n_iter"] for restart in result["restarts"])
    sync = client.post("/v1/fit/alleles", json=body).json()
    assert {k: v for k, v in result.items() if k not in TIMINGS} == {k: v for k, v in sync.items() if k not in TIMINGS}


def test_an_allele_job_can_be_cancelled(client):
    # A million iterations (100 starts of 10,000): seconds of work, cancelled within one iteration.
    body = {**MOTH, "tol": 0, "max_iter": 10_000, "init": None, "n_init": 100, "seed": 1}
    job = client.post("/v1/jobs/alleles", json=body).json()
    wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["progress"])
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 202
    assert wait_until(lambda: finished_job(client, job["id"]))["status"] == "cancelled"


def _with(change):
    body = copy.deepcopy(MOTH)
    change(body)
    return body


@pytest.mark.parametrize(
    ("change", "where", "says"),
    [
        (lambda b: b["phenotypes"][2]["genotypes"].append(["T", "X"]), "phenotypes.2.genotypes.1", "allele 'X'"),
        (lambda b: b["phenotypes"][1]["genotypes"].append(["T", "C"]), "phenotypes.1.genotypes.2", "also in"),
        (lambda b: b["phenotypes"].pop(), "phenotypes", "T/T is in no phenotype"),
        (lambda b: b["init"].update(frequencies=[0.5, 0.2, 0.2]), "init.frequencies", "sums to 0.9"),
        (lambda b: b["init"].update(frequencies=[0.5, 0.5]), "body", "expected one per allele"),
        (lambda b: b["phenotypes"][0].update(count=-1), "phenotypes.0.count", "greater than or equal to 0"),
        (lambda b: b["phenotypes"][0]["genotypes"].append(["C"]), "phenotypes.0.genotypes.3", "at least 2"),
        (lambda b: b.update(alleles=["C", "I", "I"]), "body", "more than once"),
        (lambda b: [p.update(count=0) for p in b["phenotypes"]], "phenotypes", "every phenotype count is 0"),
        (lambda b: b["init"].update(frequencies=[1.0, 0.0, 0.0]), "init.frequencies", "probability 0"),
    ],
)
def test_bad_allele_requests_are_a_422_naming_the_field(client, change, where, says):
    response = client.post("/v1/fit/alleles", json=_with(change))
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    assert any(".".join(map(str, p["loc"])).endswith(where) and says in p["msg"] for p in problems), problems


def test_a_fitted_allele_model_predicts_scores_and_samples(client):
    fit = client.post("/v1/fit/alleles", json=MOTH).json()
    model = client.get(f"/v1/models/{fit['model_id']}").json()
    assert model["kind"] == "alleles" and model["params"] == fit["params"]
    assert [p["name"] for p in model["phenotypes"]] == ["carbonaria", "insularia", "typica"]
    asked = ["insularia", "typica", "carbonaria"]
    predicted = client.post(
        f"/v1/models/{fit['model_id']}/predict", json={"phenotypes": asked, "return_responsibilities": True}
    ).json()
    # Labels index genotypes in genotype_frequencies order: I/T (4), T/T (5), C/T (2).
    assert predicted["labels"] == [4, 5, 2]
    names = list(fit["params"]["genotype_frequencies"])
    for phenotype, row in zip(asked, predicted["responsibilities"], strict=True):
        expected = fit["genotype_posteriors"][phenotype]
        assert {names[g]: p for g, p in enumerate(row) if p > 0} == pytest.approx(expected, rel=1e-12)
    scored = client.post(f"/v1/models/{fit['model_id']}/score", json={"phenotypes": asked}).json()
    p_c, p_i, p_t = fit["params"]["frequencies"]
    expected = np.log([p_i**2 + 2 * p_i * p_t, p_t**2, p_c**2 + 2 * p_c * p_i + 2 * p_c * p_t])
    np.testing.assert_allclose(scored["per_observation"], expected, rtol=1e-12)
    drawn = client.post(f"/v1/models/{fit['model_id']}/sample", json={"n": 50, "seed": 2}).json()
    assert drawn == client.post(f"/v1/models/{fit['model_id']}/sample", json={"n": 50, "seed": 2}).json()
    assert len(drawn["phenotypes"]) == 50 and set(drawn["phenotypes"]) <= set(asked)
    unknown = client.post(f"/v1/models/{fit['model_id']}/score", json={"phenotypes": ["melanic"]})
    assert unknown.status_code == 422 and "not one of the model's phenotypes" in unknown.text


def test_allele_models_import_checked_like_a_fit(client):
    body = {
        "kind": "alleles",
        "alleles": MOTH["alleles"],
        "phenotypes": [{"name": p["name"], "genotypes": p["genotypes"]} for p in MOTH["phenotypes"]],
        "params": {"frequencies": [0.1, 0.2, 0.7]},
    }
    created = client.post("/v1/models", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["params"]["genotype_frequencies"]["T/T"] == pytest.approx(0.49)
    body["phenotypes"].pop()
    refused = client.post("/v1/models", json=body)
    assert refused.status_code == 422 and "T/T is in no phenotype" in refused.text


def test_the_peppered_moth_over_a_real_server(tmp_path):
    server_env = {"EM_DATA_DIR": str(tmp_path / "data")}
    with live_server(server_env) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        fit = http.post("/v1/fit/alleles", json=MOTH).json()
        job = http.post("/v1/jobs/alleles", json=MOTH).json()
        done = wait_until(lambda: finished_job(http, job["id"]))
    np.testing.assert_allclose(fit["params"]["frequencies"], [0.07084, 0.18874, 0.74043], atol=1e-4)
    assert done["result"]["params"] == fit["params"]
