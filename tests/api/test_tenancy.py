"""Each API key is a tenant: its jobs are its own; an admin key sees every tenant's; without keys, one space."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.conftest import DO_BATZOGLOU
from tests.jobs.helpers import parse_sse, wait_until

A, B, ADMIN = ({"Authorization": f"Bearer {key}"} for key in ("key-a", "key-b", "key-admin"))


@pytest.fixture
def keyed(tmp_path):
    settings = Settings(data_dir=tmp_path, api_keys=["key-a", "key-b"], admin_keys=["key-admin"])
    with TestClient(create_app(settings)) as client:
        yield client


def _finished(client, job_id, headers):
    job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
    return job if job.get("status") in ("succeeded", "failed", "cancelled") else None


def test_another_key_cannot_read_list_follow_or_cancel_a_job(keyed):
    job = keyed.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU}, headers=A).json()
    wait_until(lambda: _finished(keyed, job["id"], A))
    path = f"/v1/jobs/{job['id']}"
    assert keyed.get(path, headers=A).status_code == 200
    for response in (
        keyed.get(path, headers=B),
        keyed.delete(path, headers=B),
        keyed.get(f"{path}/events", headers=B),
    ):
        assert response.status_code == 404
        assert response.json()["detail"] == f"no job with id {job['id']!r} (it may have expired)"
    assert [item["id"] for item in keyed.get("/v1/jobs", headers=A).json()["items"]] == [job["id"]]
    assert keyed.get("/v1/jobs", headers=B).json()["items"] == []


def test_a_running_job_cannot_be_cancelled_by_another_key(keyed):
    body = {"sequences": DO_BATZOGLOU, "max_iter": 10_000, "tol": 0}
    job = keyed.post("/v1/jobs/coins", json=body, headers=A).json()
    assert keyed.delete(f"/v1/jobs/{job['id']}", headers=B).status_code == 404
    assert keyed.delete(f"/v1/jobs/{job['id']}", headers=A).status_code in (202, 409)


def test_an_admin_key_sees_and_cancels_every_tenants_jobs(keyed):
    mine = keyed.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU}, headers=A).json()
    theirs = keyed.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU}, headers=B).json()
    for job in (mine, theirs):
        wait_until(lambda job=job: _finished(keyed, job["id"], ADMIN))
    listed = {item["id"] for item in keyed.get("/v1/jobs", headers=ADMIN).json()["items"]}
    assert listed == {mine["id"], theirs["id"]}
    with keyed.stream("GET", f"/v1/jobs/{theirs['id']}/events", headers=ADMIN) as stream:
        assert parse_sse(list(stream.iter_lines()))[-1]["event"] == "succeeded"
    assert keyed.delete(f"/v1/jobs/{theirs['id']}", headers=ADMIN).status_code == 409  # found, already finished


def test_the_key_itself_is_never_stored(keyed, tmp_path):
    keyed.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU}, headers=A)
    stored = b"".join(path.read_bytes() for path in tmp_path.glob("jobs.sqlite3*"))
    assert b"key-a" not in stored


def test_without_keys_everyone_shares_one_space(client):
    job = client.post("/v1/jobs/coins", json={"sequences": DO_BATZOGLOU}).json()
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200
    assert [item["id"] for item in client.get("/v1/jobs").json()["items"]] == [job["id"]]
