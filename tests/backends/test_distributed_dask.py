"""A job fitting a large stored dataset on the distributed backend runs its passes on Dask, with the local answer."""

from __future__ import annotations

import numpy as np
import pytest
from distributed import Client, LocalCluster
from fastapi.testclient import TestClient

from service.datasets.parse import npy_bytes
from service.main import create_app
from service.settings import Settings
from tests.distributed.conftest import blobs
from tests.distributed_cluster import cluster
from tests.jobs.helpers import finished_job, wait_until

pytestmark = pytest.mark.slow


def test_a_dataset_past_the_threshold_is_fitted_on_dask_and_equals_the_local_fit(
    redis_server, postgres_server, tmp_path
):
    body = {"n_components": 3, "seed": 4, "n_init": 2, "covariance_type": "full", "return_labels": True}
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as dask_cluster,
        Client(dask_cluster) as dask,
        cluster(redis_server, postgres_server, workers=0) as running,
    ):
        running.start_worker(1, EM_DASK_SCHEDULER=dask_cluster.scheduler_address, EM_DASK_MIN_ROWS="1000")
        with TestClient(create_app(running.settings()), raise_server_exceptions=False) as client:
            npy = {"content-type": "application/x-npy"}
            upload = client.post("/v1/datasets", content=npy_bytes(blobs()), headers=npy)
            assert upload.status_code == 201, upload.text
            before = dask.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.transition_log))
            job = client.post("/v1/jobs/gaussian", json={**body, "dataset": upload.json()["id"]}).json()
            done = wait_until(lambda: finished_job(client, job["id"]), timeout_s=120)
            assert done["status"] == "succeeded", (done, running.worker_log())
            after = dask.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.transition_log))
        assert after > before, "no task ran on the Dask cluster"
    local_settings = Settings(data_dir=tmp_path / "local")
    with TestClient(create_app(local_settings), raise_server_exceptions=False) as local:  # the local solver
        expected = local.post("/v1/fit/gaussian", json={**body, "points": blobs().tolist()}).json()
    ours = done["result"]
    assert ours["n_iter"] == expected["n_iter"] and ours["labels"] == expected["labels"]
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(ours["params"][name], expected["params"][name], rtol=1e-10, atol=1e-10 * 100)
    assert ours["log_likelihood"] == pytest.approx(expected["log_likelihood"], rel=1e-10)
