"""The Python client against the real service (uvicorn on a loopback port), sync and async.

The clients are strict here (``strict=True``): a field in an answer that the client does not know fails the test,
so the live answers are checked against the client's types as well as the schema is (test_schema_drift.py).
"""

from __future__ import annotations

import asyncio
import threading

import httpx
import numpy as np
import pytest
from em_client import (
    AsyncEMClient,
    CandidateEvent,
    Conflict,
    EMClient,
    IterationEvent,
    NotFound,
    ReplicatesEvent,
    RequestRejected,
    RetryPolicy,
    ServiceUnavailable,
    Unauthorized,
)
from em_client.models import CoinFitResult, GaussianFitResult, Job, SelectionResult

from tests.client.proxy import cutting_proxy
from tests.conftest import DO_BATZOGLOU
from tests.jobs.helpers import long_gaussian_body
from tests.live_server import live_server

# Bounds on a hang, not claims about speed: a busy machine can make any step take seconds.
HANG_S = 120.0
POINTS_1D = np.random.default_rng(3).normal([-2.0, 3.0], 1.0, size=(150, 2)).ravel().round(4).tolist()
# A job of exactly 40 EM iterations (tol 0): 40 iteration events, then the final one.
FORTY_ITERATIONS = {"points": POINTS_1D, "n_components": 2, "max_iter": 40, "tol": 0.0, "seed": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("client-live")
    with live_server({"EM_DATA_DIR": str(data / "data"), "EM_WORKERS": "2"}) as running:
        yield running


@pytest.fixture
def em(server):
    with EMClient(server.url, strict=True, timeout=HANG_S) as client:
        yield client


def test_sync_fit_returns_typed_results_that_keep_a_model(em):
    fit = em.fit_coins(sequences=DO_BATZOGLOU, init={"biases": [0.6, 0.5]}, tol=1e-8, trace="none")
    assert isinstance(fit, CoinFitResult)
    assert fit.converged and fit.stop_reason == "converged"
    assert [round(b, 4) for b in fit.params.biases] == [0.7968, 0.5196]  # Do & Batzoglou's 0.80 / 0.52
    model = em.get_model(fit.model_id)
    assert model.kind == "coins" and model.params["biases"] == fit.params.biases
    scored = em.score(fit.model_id, counts=[{"heads": 9, "tails": 1}, {"heads": 3, "tails": 7}])
    assert len(scored.per_observation) == 2
    drawn = em.sample(fit.model_id, n=3, flips=10, seed=1)
    assert drawn.seed == 1 and drawn.sequences is not None and len(drawn.sequences) == 3


def test_invalid_request_raises_with_the_fields_named(em):
    with pytest.raises(RequestRejected) as rejected:
        em.fit_gaussian(points=[[1, 2], [3], [4, 5]])
    assert rejected.value.status_code == 422
    assert rejected.value.fields == ["points"]
    assert "same length" in rejected.value.problems[0].msg
    assert rejected.value.detail == rejected.value.body["detail"]
    with pytest.raises(RequestRejected) as unknown:
        em.fit_gaussian(points=[1.0, 2.0], n_componets=2)  # type: ignore[call-arg]  # a typo the server refuses
    assert unknown.value.fields == ["n_componets"]


def test_missing_and_finished_resources_raise(em):
    with pytest.raises(NotFound) as missing:
        em.get_job("no-such-job")
    assert missing.value.status_code == 404 and "no-such-job" in str(missing.value)
    job = em.submit_coins(sequences=DO_BATZOGLOU, seed=1)
    assert em.wait(job.id).status == "succeeded"
    with pytest.raises(Conflict):
        em.cancel_job(job.id)


def test_numpy_upload_fit_by_id_and_predict_with_the_kept_model(em):
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2))])
    dataset = em.upload_array(points)
    assert (dataset.kind, dataset.n, dataset.d, dataset.dtype) == ("points", 400, 2, "float64")
    assert em.get_dataset(dataset.id) == dataset
    assert dataset.id in [item.id for item in em.list_datasets(limit=200).items]

    fit = em.fit_gaussian(dataset=dataset.id, n_components=2, seed=0, return_labels=False)
    assert isinstance(fit, GaussianFitResult) and fit.labels is None
    means = sorted(fit.params.means)
    assert np.allclose(means, [[0, 0], [6, 6]], atol=0.3)
    prediction = em.predict(fit.model_id, points=np.array([means[0], means[1]]), return_responsibilities=True)
    assert prediction.responsibilities is not None and len(prediction.responsibilities) == 2
    assert prediction.labels[0] != prediction.labels[1]

    em.delete_dataset(dataset.id)
    with pytest.raises(NotFound):
        em.get_dataset(dataset.id)


def test_csv_upload_json_upload_and_model_import(em):
    csv = em.upload_csv("x,y\n0,0\n1,1\n5,5\n6,6\n")
    assert (csv.n, csv.d) == (4, 2)
    coins = em.upload_dataset(counts=[{"heads": 5, "tails": 5}, {"heads": 9, "tails": 1}])
    assert (coins.kind, coins.d) == ("coins", 2)
    kept = em.import_model(
        kind="gaussian",
        covariance_type="diag",
        params={"weights": [0.3, 0.7], "means": [[0, 0], [5, 5]], "covariances": [[1, 1], [0.5, 2]]},
    )
    assert kept.covariance_type == "diag" and kept.n_features == 2
    assert em.predict(kept.id, points=[[0.1, 0.0], [5.0, 5.2]]).labels == [0, 1]
    em.delete_model(kept.id)
    with pytest.raises(NotFound):
        em.get_model(kept.id)


def test_selection_job_streams_candidates_and_ends_with_the_selection(em):
    job = em.submit_gaussian_select(points=POINTS_1D, n_components={"min": 1, "max": 3}, seed=0)
    follow = em.follow(job.id)
    candidates = [event.candidate for event in follow if isinstance(event, CandidateEvent)]
    assert sorted(c.n_components for c in candidates) == [1, 2, 3]
    assert follow.job.status == "succeeded"
    assert isinstance(follow.job.result, SelectionResult)
    assert follow.job.result.best.n_components == 2


def test_follow_yields_every_iteration_once_and_returns_the_job(em):
    job = em.submit_gaussian(**FORTY_ITERATIONS)
    follow = em.follow(job.id)
    events = list(follow)
    assert [(e.start, e.iteration) for e in events] == [(0, i) for i in range(1, 41)]
    assert [e.id for e in events] == list(range(1, 41))
    assert follow.job.status == "succeeded" and follow.last_event_id == 40
    assert isinstance(follow.job.result, GaussianFitResult) and follow.job.result.n_iter == 40


def test_follow_resumes_after_a_dropped_connection_without_gaps_or_repeats(server, em):
    job = em.submit_gaussian(**FORTY_ITERATIONS)
    with cutting_proxy(server.url, cut_after=10) as proxy, EMClient(proxy.url, strict=True, timeout=HANG_S) as via:
        follow = via.follow(job.id)
        events = list(follow)
    assert proxy.cuts == 1
    assert [e.iteration for e in events] == list(range(1, 41))  # each once, in order, none lost at the cut
    assert all(isinstance(e, IterationEvent) for e in events)
    assert follow.job.status == "succeeded" and follow.job.result is not None
    events_requests = [head for head in proxy.heads if b"/events" in head.split(b"\r\n", 1)[0]]
    assert len(events_requests) == 2
    assert b"last-event-id" not in events_requests[0].lower()
    assert b"last-event-id: 10\r\n" in events_requests[1].lower()


def test_async_follow_resumes_after_a_dropped_connection(server):
    async def scenario() -> None:
        async with AsyncEMClient(server.url, strict=True, timeout=HANG_S) as em:
            job = await em.submit_gaussian(**FORTY_ITERATIONS)
            with cutting_proxy(server.url, cut_after=25) as proxy:
                async with AsyncEMClient(proxy.url, strict=True, timeout=HANG_S) as via:
                    follow = via.follow(job.id)
                    iterations = [event.iteration async for event in follow if isinstance(event, IterationEvent)]
            assert proxy.cuts == 1
            assert iterations == list(range(1, 41))
            assert follow.job.status == "succeeded"
            assert b"last-event-id: 25\r\n" in proxy.heads[-1].lower()

    asyncio.run(scenario())


def test_async_client_fits_uploads_and_raises_as_the_sync_one(server):
    async def scenario() -> None:
        async with AsyncEMClient(server.url, strict=True, timeout=HANG_S) as em:
            assert (await em.health())["status"] == "ok"
            assert (await em.ready())["status"] == "ready"
            fit = await em.fit_alleles(
                alleles=["C", "I", "T"],
                phenotypes=[
                    {"name": "carbonaria", "count": 85, "genotypes": [["C", "C"], ["C", "I"], ["C", "T"]]},
                    {"name": "insularia", "count": 196, "genotypes": [["I", "I"], ["I", "T"]]},
                    {"name": "typica", "count": 341, "genotypes": [["T", "T"]]},
                ],
                tol=1e-10,
            )
            assert [round(f, 4) for f in fit.params.frequencies] == [0.0708, 0.1887, 0.7404]  # the published values
            dataset = await em.upload_array(np.array([0.1, 0.2, 5.0, 5.1], dtype=np.float32))
            assert dataset.dtype == "float32"
            job = await em.submit_coins(sequences=DO_BATZOGLOU, n_init=2, seed=3)
            finished = await em.wait(job.id)
            assert finished.status == "succeeded" and isinstance(finished.result, CoinFitResult)
            page = await em.list_jobs(limit=5, kind="coins", status="succeeded")
            assert job.id in [item.id for item in page.items]
            with pytest.raises(RequestRejected) as rejected:
                await em.sample(fit.model_id, n=0)
            assert rejected.value.fields == ["n"]
            with pytest.raises(NotFound):
                await em.get_model("no-such-model")
            assert "em_http_requests_total" in await em.metrics()

    asyncio.run(scenario())


def test_api_keys_are_sent_and_enforced(tmp_path):
    keys = {"EM_DATA_DIR": str(tmp_path / "data"), "EM_WORKERS": "1", "EM_API_KEYS": "s3cret,other"}
    with live_server(keys) as server:
        with EMClient(server.url) as anonymous, pytest.raises(Unauthorized) as refused:
            anonymous.fit_coins(sequences=DO_BATZOGLOU)
        assert refused.value.status_code == 401 and "API key" in str(refused.value)
        with EMClient(server.url, api_key="s3cret", strict=True, timeout=HANG_S) as em:
            job = em.submit_coins(sequences=DO_BATZOGLOU, seed=0)
            follow = em.follow(job.id)  # the event stream carries the key too
            assert len(list(follow)) > 0 and follow.job.status == "succeeded"
        with EMClient(server.url, api_key="other") as stranger, pytest.raises(NotFound):
            stranger.get_job(job.id)  # another key's job is as unknown as a missing one


class RecordingTransport(httpx.HTTPTransport):
    """The real transport, noting each answer's status (and when the first 503 came)."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []
        self.refused = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        if response.status_code == 503:
            self.refused.set()
        return response


def test_a_full_queue_is_retried_after_retry_after_and_reported_when_retries_run_out(tmp_path):
    settings = {"EM_DATA_DIR": str(tmp_path / "data"), "EM_WORKERS": "1", "EM_QUEUE_SIZE": "1"}
    with live_server(settings) as server, EMClient(server.url, strict=True, timeout=HANG_S) as em:
        running = em.submit_gaussian(**long_gaussian_body(n_points=4_000))
        waiting = em.submit_gaussian(**long_gaussian_body(n_points=4_000))  # the queue's one place

        impatient = EMClient(server.url, retry=RetryPolicy(max_attempts=1))
        with impatient, pytest.raises(ServiceUnavailable) as full:
            impatient.submit_coins(sequences=DO_BATZOGLOU)
        assert full.value.status_code == 503 and full.value.retry_after is not None and full.value.retry_after >= 1

        # A patient client is refused, then (once the queue has room) accepted, all in one call.
        transport = RecordingTransport()
        outcome: dict[str, Job] = {}

        def submit() -> None:
            with EMClient(server.url, transport=transport, retry=RetryPolicy(max_attempts=50)) as patient:
                outcome["job"] = patient.submit_coins(sequences=DO_BATZOGLOU)

        thread = threading.Thread(target=submit)
        thread.start()
        assert transport.refused.wait(HANG_S)
        em.cancel_job(waiting.id)
        em.cancel_job(running.id)
        thread.join(HANG_S)
        assert transport.statuses[0] == 503 and transport.statuses[-1] == 202
        assert em.wait(outcome["job"].id).status == "succeeded"


def test_a_bootstrap_job_is_followed_to_its_intervals(em):
    job = em.submit_coins(sequences=DO_BATZOGLOU, init={"biases": [0.6, 0.5]}, bootstrap={"replicates": 20, "seed": 3})
    follow = em.follow(job.id)
    progress = [event for event in follow if isinstance(event, ReplicatesEvent)]
    assert progress[-1].done == progress[-1].replicates == 20
    assert follow.job is not None and follow.job.status == "succeeded"
    result = follow.job.result
    assert isinstance(result, CoinFitResult) and result.bootstrap is not None and result.bootstrap.succeeded == 20


def test_pictures_of_a_job_and_its_model_come_back_as_image_bytes(em):
    job = em.submit_coins(sequences=DO_BATZOGLOU, init={"biases": [0.6, 0.5]}, trace="params")
    done = em.wait(job.id)
    assert done.status == "succeeded" and isinstance(done.result, CoinFitResult)
    assert em.plot_job(job.id).startswith(b"\x89PNG\r\n\x1a\n")
    assert em.plot_job(job.id, view="animation").startswith(b"GIF8")
    svg = em.plot_model(done.result.model_id, format="svg", width=400, height=300)
    assert b"<svg" in svg[:500]
