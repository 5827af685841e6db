"""The bootstrap of a job's estimates: refits spread over the workers, percentile intervals beside the analytic
errors, progress events, the same seed the same intervals, cancellation, and the requests it refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.schemas.alleles import ALLELE_EXAMPLES
from service.settings import Settings
from tests.conftest import DO_BATZOGLOU
from tests.jobs.helpers import finished_job, parse_sse, wait_until

CONVERGED = {"tol": 1e-10, "max_iter": 2000}
MOTH = ALLELE_EXAMPLES["peppered_moth"]["value"]


def _separated_points(n: int = 400) -> list[list[float]]:
    rng = np.random.default_rng(7)
    first = rng.normal([0.0, 0.0], [1.0, 0.5], (int(0.6 * n), 2))
    second = rng.normal([6.0, 3.0], [0.7, 1.2], (n - len(first), 2))
    return np.vstack([first, second]).tolist()


def _run(client: TestClient, kind: str, body: dict) -> dict:
    job = client.post(f"/v1/jobs/{kind}", json=body)
    assert job.status_code == 202, job.text
    done = wait_until(lambda: finished_job(client, job.json()["id"]), timeout_s=120)
    assert done["status"] == "succeeded", done["error"]
    return done


def test_gaussian_intervals_agree_with_the_analytic_errors_on_a_separated_mixture(client):
    body = {
        "points": _separated_points(),
        "seed": 0,
        "standard_errors": True,
        "bootstrap": {"replicates": 200, "seed": 1},
        **CONVERGED,
    }
    result = _run(client, "gaussian", body)["result"]
    analytic, boot = result["standard_errors"], result["bootstrap"]
    assert boot["replicates"] == 200 and boot["succeeded"] == 200 and boot["level"] == 0.95
    # A bootstrap standard deviation from B = 200 refits is within ~5% of its limit (1 / sqrt(2B)), and at
    # n = 400 the bootstrap and the observed information agree to ~10%: 30% fails only a wrong computation
    # (a factor sqrt(2), unmatched components, errors of the wrong parameter).
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(boot["standard_errors"][name], analytic[name], rtol=0.3)
        lower, upper, fitted = (np.asarray(x[name]) for x in (boot["lower"], boot["upper"], result["params"]))
        assert np.all(lower <= fitted) and np.all(fitted <= upper)
        # A 95% percentile interval is about 2 x 1.96 standard errors wide.
        np.testing.assert_allclose(upper - lower, 3.92 * np.asarray(analytic[name]), rtol=0.35)


def test_allele_intervals_of_the_peppered_moth_agree_with_the_analytic_errors(client):
    body = {
        **MOTH,
        "standard_errors": True,
        "bootstrap": {"replicates": 300, "seed": 2},
        **CONVERGED,
    }
    result = _run(client, "alleles", body)["result"]
    boot = result["bootstrap"]
    assert boot["succeeded"] == 300
    np.testing.assert_allclose(
        boot["standard_errors"]["frequencies"], result["standard_errors"]["frequencies"], rtol=0.25
    )


def test_coin_replicates_are_matched_to_the_fitted_coins(client):
    # Two well-separated coins over many experiments: a replicate that swapped them would put the interval
    # of coin 0 around coin 1's bias.
    rng = np.random.default_rng(3)
    heads = np.concatenate([rng.binomial(50, 0.8, 30), rng.binomial(50, 0.3, 30)])
    counts = [{"heads": int(h), "tails": int(50 - h)} for h in heads]
    body = {"counts": counts, "n_coins": 2, "fit_weights": True, "seed": 0, "bootstrap": {"replicates": 50}}
    result = _run(client, "coins", {**body, **CONVERGED})["result"]
    biases, boot = result["params"]["biases"], result["bootstrap"]
    for k in range(2):
        assert boot["lower"]["biases"][k] <= biases[k] <= boot["upper"]["biases"][k]
        assert boot["upper"]["biases"][k] - boot["lower"]["biases"][k] < 0.1


def test_the_same_seed_gives_the_same_intervals_and_another_seed_others(client):
    body = {"sequences": DO_BATZOGLOU, "init": {"biases": [0.6, 0.5]}, **CONVERGED}
    first = _run(client, "coins", {**body, "bootstrap": {"replicates": 40, "seed": 5}})["result"]["bootstrap"]
    again = _run(client, "coins", {**body, "bootstrap": {"replicates": 40, "seed": 5}})["result"]["bootstrap"]
    other = _run(client, "coins", {**body, "bootstrap": {"replicates": 40, "seed": 6}})["result"]["bootstrap"]
    assert first == again
    assert first["lower"] != other["lower"]


def test_the_job_streams_replicate_progress_then_its_result_and_keeps_its_model(client):
    body = {"points": _separated_points(200), "seed": 0, "bootstrap": {"replicates": 30}, **CONVERGED}
    job = client.post("/v1/jobs/gaussian", json=body).json()
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        events = parse_sse(list(stream.iter_lines()))
    kinds = [e["event"] for e in events]
    progress = [json.loads(e["data"]) for e in events if e["event"] == "replicates"]
    assert kinds[-1] == "succeeded" and kinds.index("replicates") > kinds.index("iteration")
    done = [p["done"] for p in progress]
    assert done == sorted(done) and done[-1] == 30 and all(p["replicates"] == 30 for p in progress)
    ids = [int(e["id"]) for e in events]
    assert ids == list(range(1, len(events) + 1))
    result = json.loads(events[-1]["data"])["result"]
    assert result["bootstrap"]["succeeded"] == 30
    assert client.get(f"/v1/models/{result['model_id']}").status_code == 200
    # A follower that comes back later is told the same final event id.
    replayed = client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": str(ids[-2])})
    assert parse_sse(replayed.text.splitlines())[-1]["id"] == events[-1]["id"]


def test_a_fit_without_bootstrap_has_a_null_one(client):
    result = client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU, "init": {"biases": [0.6, 0.5]}}).json()
    assert result["bootstrap"] is None


def test_cancelling_a_bootstrap_cancels_its_refits(tmp_path):
    # One worker and slow refits: the job is still refitting when the cancel comes.
    settings = Settings(data_dir=tmp_path / "data", workers=1)
    points = np.random.default_rng(0).normal(size=(5_000, 3)).tolist()
    body = {"points": points, "n_components": 4, "tol": 0, "max_iter": 50, "seed": 0}
    with TestClient(create_app(settings)) as client:
        # 40 batches of 25 refits: the first batch's event comes long before the last batch could end.
        job = client.post("/v1/jobs/gaussian", json={**body, "bootstrap": {"replicates": 1000}}).json()
        with client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
            for line in stream.iter_lines():
                if line == "event: replicates":
                    break
        assert client.delete(f"/v1/jobs/{job['id']}").status_code in (200, 202)
        done = wait_until(lambda: finished_job(client, job["id"]), timeout_s=60)
        assert done["status"] == "cancelled"
        # The worker is free again: a new fit runs.
        again = client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU, "init": {"biases": [0.6, 0.5]}})
        assert again.status_code == 200


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("fit/coins", {"sequences": DO_BATZOGLOU, "bootstrap": {"replicates": 10}}, "bootstrap"),
        ("jobs/coins", {"sequences": DO_BATZOGLOU, "bootstrap": {"replicates": 10**6}}, "bootstrap.replicates"),
        ("jobs/coins", {"sequences": DO_BATZOGLOU, "bootstrap": {"replicates": 1}}, "replicates"),
        ("jobs/coins", {"sequences": DO_BATZOGLOU, "bootstrap": {"replicates": 10, "level": 1.5}}, "level"),
        ("jobs/hmm", {"sequences": [[0, 1, 0]], "n_states": 2, "bootstrap": {"replicates": 10}}, "bootstrap"),
    ],
)
def test_refused_bootstraps_are_422_naming_the_field(client, kind, body, field):
    response = client.post(f"/v1/{kind}", json=body)
    assert response.status_code == 422, response.text
    assert field in response.text


def test_each_replicate_has_its_own_seed_whatever_the_number_of_workers():
    from service.families import bootstrap
    from service.families.coins import FAMILY

    def seeds(workers: int) -> list[int]:
        items = bootstrap.plan(
            None, {}, replicates=103, seed=4, workers=workers, resampling=FAMILY.resampling, solve=FAMILY.solve,
            time_limit_s=1.0,
        )  # fmt: skip
        assert sum(len(item.task.seeds) for item in items) == 103
        return [seed for item in items for seed in item.task.seeds]

    assert seeds(1) == seeds(3) == bootstrap.replicate_seeds(4, 103)
    assert len(set(seeds(1))) == 103


def test_a_bootstrap_whose_refits_would_not_fit_a_worker_is_refused_before_it_runs(tmp_path):
    from types import SimpleNamespace

    from service.api.runs import _bootstrap
    from service.em.loop import EMOptions
    from service.families.limits import Footprint, LimitExceeded
    from service.families.registry import BY_KIND

    # A fit of ~40 MB of arrays on a 64 MB worker: room for the fit, not for the fit and a resampled copy.
    task = SimpleNamespace(
        footprint=Footprint(arrays_bytes=40 * 2**20, trace_numbers=0, result_numbers=100, trace_entries=100),
        options=EMOptions(time_limit_s=10.0),
    )
    body = SimpleNamespace(bootstrap=SimpleNamespace(replicates=10, seed=0, level=0.95))
    family = BY_KIND["gaussian"]
    with pytest.raises(LimitExceeded, match="resampled copy"):
        _bootstrap(family, body, task, Settings(data_dir=tmp_path, worker_memory_mb=64))
    assert _bootstrap(family, body, task, Settings(data_dir=tmp_path, worker_memory_mb=128)) is not None
