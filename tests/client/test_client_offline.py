"""The client's retries, errors and decoding against scripted answers (httpx.MockTransport), no server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np
import pytest
from em_client import (
    AsyncEMClient,
    EMClient,
    InsufficientStorage,
    RetryPolicy,
    ServiceUnavailable,
    UnexpectedResponse,
)
from em_client._calls import Call, encode_json
from em_client._decode import decode
from em_client._http import read
from em_client.models import Job, Score

FAST = RetryPolicy(max_attempts=4, backoff_s=0.001)
SCORE = {"log_likelihood": -1.0, "mean_log_likelihood": -0.5, "per_observation": [-0.25, -0.75]}
QUEUED_JOB = {
    "id": "abc",
    "kind": "coins",
    "status": "queued",
    "created_at": "2026-11-26T03:00:00.000001Z",
    "started_at": None,
    "finished_at": None,
    "progress": None,
    "result": None,
    "error": None,
    "request": {"n_experiments": 5},
}


class Script:
    """Answers requests in turn from a list of (status, headers, body); records what was sent."""

    def __init__(self, *answers: tuple[int, dict[str, str], Any]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, headers, body = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return httpx.Response(status, headers=headers, json=body)


def _sync(script: Script, retry: RetryPolicy = FAST) -> EMClient:
    return EMClient("http://em.test", transport=httpx.MockTransport(script), retry=retry)


def _async(script: Script, retry: RetryPolicy = FAST) -> AsyncEMClient:
    return AsyncEMClient("http://em.test", transport=httpx.MockTransport(script), retry=retry)


FULL = (503, {"Retry-After": "0"}, {"detail": "the job queue is full (64 waiting); retry later"})


def test_503_with_retry_after_is_retried_and_the_same_body_sent_again():
    script = Script(FULL, FULL, (202, {}, QUEUED_JOB))
    with _sync(script) as em:
        job = em.submit_coins(sequences=["HTTH", "HHHT"], seed=1)
    assert job.status == "queued" and len(script.requests) == 3
    assert {request.content for request in script.requests} == {b'{"sequences":["HTTH","HHHT"],"seed":1}'}


def test_async_client_retries_alike():
    script = Script(FULL, (200, {}, SCORE))

    async def scenario() -> Score:
        async with _async(script) as em:
            return await em.score("m1", points=[1.0, 2.0])

    assert asyncio.run(scenario()).per_observation == [-0.25, -0.75]
    assert len(script.requests) == 2


def test_retries_end_with_service_unavailable_carrying_the_last_answer():
    script = Script(FULL)
    with _sync(script) as em, pytest.raises(ServiceUnavailable) as unavailable:
        em.fit_gaussian(points=[1.0, 2.0, 3.0])
    assert len(script.requests) == FAST.max_attempts
    assert unavailable.value.status_code == 503 and unavailable.value.retry_after == 0
    assert "queue is full" in str(unavailable.value)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        # No Retry-After: the service does not say nothing was done (a synchronous fit's worker died).
        ((503, {}, {"detail": "the fit's worker died"}), ServiceUnavailable),
        # A wait past the policy's max_delay_s: the caller decides, with retry_after in hand.
        ((503, {"Retry-After": "3600"}, {"detail": "store unwritable"}), ServiceUnavailable),
        # A full disk is not retried by default.
        ((507, {"Retry-After": "30"}, {"detail": "disk full"}), InsufficientStorage),
    ],
)
def test_answers_the_service_does_not_mark_retryable_are_raised_at_once(answer, error):
    script = Script(answer)
    with _sync(script) as em, pytest.raises(error):
        em.fit_coins(sequences=["HT"])
    assert len(script.requests) == 1


def test_a_retry_after_beyond_the_cap_is_reported():
    script = Script((503, {"Retry-After": "3600"}, {"detail": "store unwritable"}))
    with _sync(script) as em, pytest.raises(ServiceUnavailable) as unavailable:
        em.fit_coins(sequences=["HT"])
    assert unavailable.value.retry_after == 3600


def test_policy_waits_at_least_retry_after_and_backs_off_exponentially_within_its_cap():
    policy = RetryPolicy(max_attempts=10, backoff_s=1.0, max_delay_s=8.0)
    assert policy.delay(1, 503, 5.0) == 5.0  # the server's wait, when longer than the backoff
    assert 4.0 <= policy.delay(4, 503, 0.0) <= 8.0  # 1 * 2**3, jittered down by at most half
    assert 4.0 <= policy.delay(9, 503, 0.0) <= 8.0  # capped
    assert policy.delay(10, 503, 0.0) is None  # the last attempt
    assert policy.delay(1, 500, 0.0) is None and policy.delay(1, 503, None) is None


def test_api_key_is_sent_as_a_bearer_token():
    script = Script((200, {}, {"status": "ok"}))
    with EMClient("http://em.test", api_key="s3cret", transport=httpx.MockTransport(script)) as em:
        em.health()
    assert script.requests[0].headers["Authorization"] == "Bearer s3cret"


def test_path_parameters_are_escaped():
    script = Script((200, {}, SCORE))
    with _sync(script) as em:
        em.score("a/b c", points=[1.0])
    assert script.requests[0].url.raw_path == b"/v1/models/a%2Fb%20c/score"


def test_numpy_values_in_bodies_are_sent_as_json_with_nan_as_a_missing_value():
    body = {"points": np.array([[1.0, np.nan], [2.5, 3.0]]), "n_components": np.int64(2)}
    assert json.loads(encode_json(body)) == {"points": [[1.0, None], [2.5, 3.0]], "n_components": 2}
    with pytest.raises(ValueError, match="JSON"):
        encode_json({"tol": float("nan")})


def test_unknown_fields_are_ignored_by_default_and_refused_when_strict():
    newer = {**SCORE, "median": -0.5}
    assert decode(Score, newer).per_observation == [-0.25, -0.75]
    with pytest.raises(UnexpectedResponse, match="median"):
        decode(Score, newer, strict=True)


def test_a_result_of_an_unknown_kind_stays_a_dict_and_known_kinds_are_typed():
    future = {**QUEUED_JOB, "status": "succeeded", "kind": "mixture", "result": {"model": "t_mixture", "nu": 4.0}}
    job = decode(Job, future)
    assert job.result == {"model": "t_mixture", "nu": 4.0} and job.kind == "mixture"
    assert job.created_at.year == 2026 and job.created_at.tzinfo is not None


def test_an_answer_without_a_required_field_is_unexpected():
    with pytest.raises(UnexpectedResponse, match="per_observation"):
        decode(Score, {"log_likelihood": -1.0, "mean_log_likelihood": -0.5})


def test_follow_raises_after_reconnecting_max_attempts_times_without_an_event():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    em = EMClient("http://em.test", transport=httpx.MockTransport(refuse), retry=FAST)
    with em, pytest.raises(httpx.ConnectError):
        em.wait("abc")


def test_text_and_binary_answers_are_returned_as_they_came():
    png = b"\x89PNG\r\n\x1a\n..."
    binary = read(Call("GET", "/x", bytes), httpx.Response(200, content=png), strict=True)
    text = read(Call("GET", "/x", str), httpx.Response(200, text="em_workers 2.0\n"), strict=True)
    assert binary == png and text == "em_workers 2.0\n"
