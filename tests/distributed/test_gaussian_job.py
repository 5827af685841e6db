"""A gaussian fit job's task solved on Dask reports what the family's local solve reports."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

from service.distributed.gaussian_job import dataset_url, runs_on_dask, solve_on_dask
from service.em.errors import InvalidParameterError
from service.em.loop import EMOptions
from service.families.gaussian import GaussianTask, solve


def _task(X: np.ndarray, path: Path) -> GaussianTask:
    return GaussianTask(
        options=EMOptions(seed=5, max_iter=10, tol=0, n_init=2), X=X, n_components=3, covariance_type="diag",
        return_responsibilities=True, data_file=path,
    )  # fmt: skip


def test_solves_as_the_family_does(client: Client, points: tuple[np.ndarray, Path]) -> None:
    X, path = points
    task = _task(X, path)
    ours, local = solve_on_dask(task, client, str(path), chunk_rows=700), solve(task)
    assert ours.labels is not None and local.labels is not None
    np.testing.assert_array_equal(ours.labels, local.labels)
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(ours.params[name], local.params[name], rtol=1e-10, atol=1e-10 * 100)
    assert ours.bic == pytest.approx(local.bic, rel=1e-10)
    assert (ours.n_parameters, ours.collapsed, ours.outcome.warnings) == (
        local.n_parameters,
        local.collapsed,
        local.outcome.warnings,
    )


def test_refuses_what_needs_every_row_in_the_coordinator(client: Client, points: tuple[np.ndarray, Path]) -> None:
    X, path = points
    for field in ("standard_errors", "return_imputed"):
        with pytest.raises(InvalidParameterError) as refused:
            solve_on_dask(replace(_task(X, path), **{field: True}), client, str(path))
        assert refused.value.field == field


def test_routing_needs_both_settings_and_more_rows_than_the_threshold() -> None:
    assert runs_on_dask(1001, "tcp://scheduler:8786", 1000)
    assert not runs_on_dask(1000, "tcp://scheduler:8786", 1000)
    assert not runs_on_dask(10**9, None, 1000)
    assert not runs_on_dask(10**9, "tcp://scheduler:8786", None)
    assert dataset_url("s3://bucket/datasets/", "abc") == "s3://bucket/datasets/abc.npy"
