"""Memory is bounded before and while a fit runs: a request that cannot fit is refused up front; a fit that
grows past its worker's limit fails with memory_limit and the worker is replaced (never a host OOM)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.runs import work_item
from service.em.loop import EMOptions
from service.families import coins
from service.families.coins import CoinTask
from service.jobs.manager import JobLimits, LocalJobManager
from service.jobs.store import SQLiteJobStore
from service.main import create_app
from service.settings import Settings
from tests.conftest import DO_BATZOGLOU


def test_the_runaway_trace_request_is_refused_before_it_runs(client):
    # Found in an abuse run: 82 KB of points, K = 64 full covariances traced every iteration for 10,000
    # iterations grew one worker to 12 GB. Its trace alone would be 2.6e9 numbers.
    points = np.random.default_rng(0).normal(size=(200, 64)).round(3).tolist()
    body = {"points": points, "n_components": 64, "trace": "params", "max_iter": 10_000, "tol": 0}
    for route in ("/v1/fit/gaussian", "/v1/jobs/gaussian"):
        response = client.post(route, json=body)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["body", "trace"] and detail["type"] == "value_error.limit"
        assert "MB" in detail["msg"] and "trace 'loglik'" in detail["msg"]
    assert client.post("/v1/fit/gaussian", json=body | {"trace": "loglik", "max_iter": 3}).status_code == 200


def test_responsibilities_too_large_to_answer_are_refused_naming_the_field(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path, max_result_mb=1))) as client:
        points = np.random.default_rng(1).normal(size=(20_000, 2)).round(3).tolist()
        body = {"points": points, "n_components": 8, "return_responsibilities": True, "max_iter": 2}
        response = client.post("/v1/fit/gaussian", json=body)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "return_responsibilities"]
        assert client.post("/v1/fit/gaussian", json=body | {"return_responsibilities": False}).status_code == 200


def test_a_fit_estimated_over_the_worker_memory_is_refused(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path, worker_memory_mb=64))) as client:
        points = np.random.default_rng(2).normal(size=(200_000, 4)).round(3).tolist()
        response = client.post("/v1/jobs/gaussian", json={"points": points, "n_components": 16, "max_iter": 2})
        assert response.status_code == 422 and "a fit worker has 64 MB" in response.json()["detail"][0]["msg"]
        assert client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU}).status_code == 200


def test_the_worker_memory_limit_turns_an_allocation_past_it_into_memory_error():
    code = (
        "import numpy as np\n"
        "from service.jobs.worker import limit_memory\n"
        "limit_memory(1 << 30)\n"
        "small = np.ones(10_000_000)\n"  # 80 MB: fine
        "try:\n"
        "    np.ones(400_000_000)\n"  # 3.2 GB: past the limit
        "except MemoryError:\n"
        "    print('MemoryError')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "MemoryError", run.stderr


@pytest.mark.slow
def test_a_fit_that_grows_past_its_worker_limit_fails_alone_and_the_worker_is_replaced(tmp_path):
    # Bypasses the API's estimate on purpose: the limit is the second line of defence.
    limits = JobLimits(workers=1, queue_size=4, retention_s=3600, worker_memory_bytes=1 << 30)

    async def scenario():
        manager = LocalJobManager(SQLiteJobStore(tmp_path), limits)
        await manager.start()
        try:
            n = 2_000_000  # 2e6 experiments x 64 coins: several GB of n x K arrays
            rng = np.random.default_rng(0)
            heads = rng.integers(0, 10, n).astype(np.float64)
            huge = CoinTask(EMOptions(max_iter=2, time_limit_s=120), heads, 10 - heads + 1, n_coins=64)
            record = await manager.submit("coins", work_item(coins.FAMILY, huge), {})
            failed = await manager.wait(record.id)
            assert failed.status == "failed" and failed.error["type"] == "memory_limit"
            small = CoinTask(EMOptions(time_limit_s=60), np.array([5.0, 9.0, 1.0]), np.array([5.0, 1.0, 9.0]))
            after = await manager.submit("coins", work_item(coins.FAMILY, small), {})
            assert (await manager.wait(after.id)).status == "succeeded"
        finally:
            await manager.stop()

    asyncio.run(scenario())
