"""A job reads "succeeded" only once its result is committed; a result the store refuses makes the job failed,
consistently everywhere; a full store answers 507 and is reported by /readyz until it takes writes again."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from service.families import coins
from service.jobs.manager import JobLimits, LocalJobManager
from service.jobs.models import StorageFull
from service.jobs.store import SQLiteJobStore
from service.main import create_app
from service.schemas.coins import CoinFitRequest
from service.settings import Settings
from tests.conftest import DO_BATZOGLOU
from tests.jobs.helpers import parse_sse, wait_until

LIMITS = JobLimits(workers=1, queue_size=8, retention_s=3600, storage_probe_interval_s=0.2)


def _item(n_experiments: int = 5):
    settings = Settings.model_construct()
    sequences = (DO_BATZOGLOU * (n_experiments // 5 + 1))[:n_experiments]
    request = CoinFitRequest.model_validate({"sequences": sequences, "seed": 0})
    task = coins.make_task(request, settings, settings.default_job_time_limit_s)
    return coins.FAMILY, task


async def _run_job(manager, n_experiments):
    from service.api.runs import work_item

    family, task = _item(n_experiments)
    record = await manager.submit("coins", work_item(family, task), {"n": n_experiments})
    await manager.wait(record.id)
    return record.id


class _WatchingStore(SQLiteJobStore):
    """Records, at each commit of a job's end, the status the manager was showing for it then."""

    manager: LocalJobManager | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shown_while_committing: list[str] = []

    def finish(self, record, picture=None):
        assert self.manager is not None
        self.shown_while_committing.append(self.manager._active[record.id].record.status)
        super().finish(record, picture)


@pytest.mark.parametrize("n_experiments", [5, 20_000])  # a small result written inline, a large one from a thread
def test_a_job_is_shown_succeeded_only_after_its_result_is_committed(tmp_path, n_experiments):
    async def scenario():
        store = _WatchingStore(tmp_path)
        manager = LocalJobManager(store, LIMITS)
        store.manager = manager
        await manager.start()
        try:
            job_id = await _run_job(manager, n_experiments)
            assert (await manager.get(job_id)).status == "succeeded"
        finally:
            await manager.stop()
        assert store.shown_while_committing == ["running"]
        reopened = SQLiteJobStore(tmp_path)
        assert reopened.get(job_id).status == "succeeded" and reopened.get(job_id).result
        reopened.close()

    asyncio.run(scenario())


def test_a_result_the_store_cannot_hold_fails_the_job_the_same_everywhere(tmp_path):
    settings = Settings(data_dir=tmp_path)
    app = create_app(settings)
    with TestClient(app) as client:
        # Shrink SQLite's value limit below this result's size (the real limit is 1 GB).
        app.state.services.jobs.store._db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 50_000)
        app.state.services.jobs.store.max_value_bytes = 50_000
        body = {"counts": [{"heads": i % 10 + 1, "tails": 3} for i in range(4000)], "n_coins": 3, "seed": 0}
        job = client.post("/v1/jobs/coins", json=body).json()
        done = wait_until(lambda: _final(client, job["id"]))
        assert done["status"] == "failed" and done["error"]["type"] == "result_too_large"
        assert done["result"] is None and "too large" in done["error"]["message"]
        listed = client.get("/v1/jobs").json()["items"][0]
        assert listed["id"] == job["id"] and listed["status"] == "failed"
        with client.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
            final = parse_sse(list(stream.iter_lines()))[-1]
        assert final["event"] == "failed" and '"status":"failed"' in final["data"]
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 409
    reopened = SQLiteJobStore(tmp_path)
    assert reopened.get(job["id"]).status == "failed"
    reopened.close()


def _final(client, job_id):
    job = client.get(f"/v1/jobs/{job_id}").json()
    return job if job["status"] in ("succeeded", "failed", "cancelled") else None


def _fill(store: SQLiteJobStore) -> None:
    """Let the store grow by no page more: SQLite then answers SQLITE_FULL, as on a full disk."""
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_store_refuses_new_jobs_with_507_and_readyz_says_why_until_it_has_room(tmp_path):
    # A queue long enough for every insert below: on a busy machine the workers may not drain it meanwhile.
    app = create_app(Settings(data_dir=tmp_path, queue_size=1000))
    with TestClient(app) as client:
        manager = app.state.services.jobs
        manager.limits = replace(manager.limits, storage_probe_interval_s=0.2)
        store = manager.store
        _fill(store)
        refused = 0
        for _ in range(200):  # the last page fills up within a few inserts
            response = client.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU})
            if response.status_code == 507:
                refused += 1
                break
            assert response.status_code == 202
        assert refused == 1
        assert response.headers["retry-after"] and "full" in response.json()["detail"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "full" in ready.json()["reason"]
        assert client.post("/v1/fit/coins", json={"sequences": DO_BATZOGLOU}).status_code == 200  # not stored
        store._db.execute("PRAGMA max_page_count = 1073741823")  # space is freed
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout_s=10)
        assert client.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU}).status_code == 202


def test_the_store_maps_full_and_too_big_to_its_own_errors(tmp_path):
    store = SQLiteJobStore(tmp_path, max_value_bytes=1000)
    from service.jobs.models import JobRecord, ResultTooLarge

    record = JobRecord(id="a", kind="coins", status="queued", created_at=1.0)
    store.insert(record)
    record.status, record.finished_at, record.result = "succeeded", 2.0, b"x" * 5000
    with pytest.raises(ResultTooLarge):
        store.finish(record)
    _fill(store)
    with pytest.raises(StorageFull):
        for i in range(1000):
            store.insert(JobRecord(id=f"b{i}", kind="coins", status="queued", created_at=3.0, request={"x": "y" * 500}))
    store.close()


def test_eviction_keeps_the_store_under_its_cap_oldest_finished_first(tmp_path):
    from service.jobs.models import JobRecord

    store = SQLiteJobStore(tmp_path)
    for i in range(300):
        record = JobRecord(id=f"j{i:03d}", kind="coins", status="succeeded", created_at=float(i), finished_at=float(i))
        record.result = b"r" * 20_000
        store.insert(record)
    store.insert(JobRecord(id="running", kind="coins", status="running", created_at=0.0))
    assert store.size_bytes() > 5_000_000
    evicted = store.evict_oldest(2_000_000)
    assert evicted > 0 and store.size_bytes() <= 2_000_000
    assert store.get("j000") is None and store.get("j299") is not None and store.get("running") is not None
    store.close()


def test_the_probe_refuses_while_the_store_cannot_grow_and_passes_once_it_can(tmp_path):
    # /readyz comes back when a probe passes: a probe that only rewrote a page the store has passed on a full store.
    store = SQLiteJobStore(tmp_path)
    _fill(store)
    with pytest.raises(StorageFull):
        store.probe()
    store._db.execute("PRAGMA max_page_count = 1073741823")
    store.probe()
    assert [name for (name,) in store._db.execute("SELECT name FROM sqlite_master")].count("probe_space") == 0
    store.close()
