"""EM on a Dask LocalCluster (two worker processes, see conftest) against the local solver on the same data and options.

"Equal" is to 1e-10 relative to each array's largest entry: the chunks' sums are added in another order than
the local pass adds them, which moves results by rounding (about 1e-15 here), not by 1e-10.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("distributed")

from distributed import Client, get_task_stream

from service.distributed.dask_em import DaskFit, fit_on_dask
from service.em.errors import DegenerateDataError, InvalidParameterError
from service.em.gaussian import GaussianMixture, GaussianParams
from service.em.loop import EMOptions, FitOutcome, Hooks, run_em
from tests.distributed.conftest import blobs

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
CHUNK_ROWS = 700  # 3000 rows: five chunks, the last one short
OPTIONS = EMOptions(seed=3, max_iter=15, tol=0)
RTOL = 1e-10


def _local(X: np.ndarray, n_components: int, options: EMOptions, **model: Any) -> FitOutcome[GaussianParams]:
    """The local solver as the gaussian family runs it (canonical order unless means were given)."""
    options = replace(options, canonical_order=model.get("init_means") is None)
    return run_em(GaussianMixture(X, n_components, **model), options)


def _on_dask(client: Client, path: Path, n_components: int, options: EMOptions, **model: Any) -> DaskFit:
    return fit_on_dask(client, str(path), n_components, options, chunk_rows=CHUNK_ROWS, **model)


def _assert_close(actual: np.ndarray | float, expected: np.ndarray | float) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * np.max(np.abs(expected)))


def _assert_same_fit(dask: FitOutcome[GaussianParams], local: FitOutcome[GaussianParams]) -> None:
    _assert_close(dask.log_likelihood, local.log_likelihood)
    for name in ("weights", "means", "covariances", "precisions_cholesky"):
        _assert_close(getattr(dask.params, name), getattr(local.params, name))
    _assert_close(np.exp(dask.log_resp), np.exp(local.log_resp))
    _assert_close([entry.log_likelihood for entry in dask.trace], [entry.log_likelihood for entry in local.trace])
    assert (dask.n_iter, dask.stop_reason, dask.converged) == (local.n_iter, local.stop_reason, local.converged)
    assert [(r.seed, r.n_iter, r.converged) for r in dask.restarts] == [
        (r.seed, r.n_iter, r.converged) for r in local.restarts
    ]
    assert dask.returned_start == local.returned_start
    assert dask.warnings == local.warnings


def _assert_never_decreases(outcome: FitOutcome[GaussianParams]) -> None:
    trace = np.array([entry.log_likelihood for entry in outcome.trace])
    assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace[1:]))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_equals_the_local_fit_and_its_log_likelihood_never_decreases(
    client: Client, points: tuple[np.ndarray, Path], covariance_type: str
) -> None:
    X, path = points
    fit = _on_dask(client, path, 3, OPTIONS, covariance_type=covariance_type)
    _assert_same_fit(fit.outcome, _local(X, 3, OPTIONS, covariance_type=covariance_type))
    _assert_never_decreases(fit.outcome)
    assert fit.model.to_dict(fit.outcome.params).keys() == {"weights", "means", "covariances"}


@pytest.mark.parametrize("init_method", ["kmeans++", "random", "random_from_data"])
def test_every_start_method_starts_where_the_local_one_does(
    client: Client, points: tuple[np.ndarray, Path], init_method: str
) -> None:
    X, path = points
    options = replace(OPTIONS, max_iter=5)
    fit = _on_dask(client, path, 3, options, init_method=init_method)
    _assert_same_fit(fit.outcome, _local(X, 3, options, init_method=init_method))


def test_given_means_start_from_the_nearest_rows(client: Client, points: tuple[np.ndarray, Path]) -> None:
    X, path = points
    options = replace(OPTIONS, max_iter=5)
    means = [[100.0, 100.0, 100.0], [104.0, 101.0, 98.0], [97.0, 105.0, 101.0]]
    fit = _on_dask(client, path, 3, options, covariance_type="diag", init_means=means)
    _assert_same_fit(fit.outcome, _local(X, 3, options, covariance_type="diag", init_means=means))


def test_one_dimensional_two_components(client: Client, tmp_path: Path) -> None:
    """The local pass's two-component shortcut (one log-density difference per row) on 1-D data, stored 1-D."""
    X = blobs(2000, seed=1)[:, 0]
    np.save(tmp_path / "line.npy", X)
    fit = _on_dask(client, tmp_path / "line.npy", 2, OPTIONS, covariance_type="full")
    _assert_same_fit(fit.outcome, _local(X, 2, OPTIONS, covariance_type="full"))


def test_same_seed_same_answer_to_the_last_bit(client: Client, points: tuple[np.ndarray, Path]) -> None:
    _, path = points
    options = replace(OPTIONS, n_init=2, max_iter=4)
    first, second = (_on_dask(client, path, 3, options).outcome for _ in range(2))
    assert first.log_likelihood == second.log_likelihood
    for name in ("weights", "means", "covariances"):
        np.testing.assert_array_equal(getattr(first.params, name), getattr(second.params, name))
    assert first.restarts == second.restarts


class _CancelAfter(Hooks):
    def __init__(self, iterations: int) -> None:
        self.iterations = iterations
        self.seen: list[int] = []

    def on_iteration(self, start: int, iteration: int, log_likelihood: float, delta: float) -> None:
        self.seen.append(iteration)

    def should_cancel(self) -> bool:
        return len(self.seen) >= self.iterations


def test_cancellation_stops_between_iterations(client: Client, points: tuple[np.ndarray, Path]) -> None:
    _, path = points
    hooks = _CancelAfter(3)
    outcome = fit_on_dask(client, str(path), 3, replace(OPTIONS, n_init=3), hooks=hooks, chunk_rows=CHUNK_ROWS).outcome
    assert outcome.stop_reason == "cancelled"
    assert (outcome.n_iter, hooks.seen, len(outcome.restarts)) == (3, [1, 2, 3], 1)
    _assert_released(client)


def _assert_released(client: Client) -> None:
    """Nothing of the fit stays on the workers (releases reach the scheduler asynchronously: wait a little)."""
    deadline = time.monotonic() + 10
    while client.who_has() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.who_has()


def test_refuses_missing_values_and_too_few_distinct_points(client: Client, tmp_path: Path) -> None:
    gaps = blobs(100)
    gaps[7, 1] = np.nan
    np.save(tmp_path / "gaps.npy", gaps)
    with pytest.raises(InvalidParameterError, match="missing values"):
        fit_on_dask(client, str(tmp_path / "gaps.npy"), 2, OPTIONS, chunk_rows=30)
    np.save(tmp_path / "two.npy", np.repeat([[0.0, 1.0], [2.0, 3.0]], 50, axis=0))
    with pytest.raises(DegenerateDataError, match="only 2 distinct"):
        fit_on_dask(client, str(tmp_path / "two.npy"), 3, OPTIONS, chunk_rows=30)


class _KillAWorkerAfter(Hooks):
    """Kills one worker process (SIGKILL: no goodbye to the scheduler) after the given iteration."""

    def __init__(self, client: Client, iteration: int) -> None:
        self.client, self.iteration = client, iteration
        self.killed: int | None = None

    def on_iteration(self, start: int, iteration: int, log_likelihood: float, delta: float) -> None:
        if iteration == self.iteration and self.killed is None:
            holders = {worker for workers in self.client.who_has().values() for worker in workers}
            victim = sorted(holders)[0]  # a worker that holds chunks of this fit
            self.killed = self.client.run(os.getpid, workers=[victim])[victim]
            os.kill(self.killed, signal.SIGKILL)


def test_survives_a_worker_killed_mid_fit(client: Client, points: tuple[np.ndarray, Path]) -> None:
    X, path = points
    hooks = _KillAWorkerAfter(client, iteration=2)
    with get_task_stream(client) as stream:
        fit = fit_on_dask(client, str(path), 3, OPTIONS, hooks=hooks, chunk_rows=CHUNK_ROWS)
    assert hooks.killed is not None
    loads = [task for task in stream.data if "-load-" in task["key"]]
    assert len(loads) > len(range(0, len(X), CHUNK_ROWS))  # the lost worker's chunks were read again from storage
    _assert_same_fit(fit.outcome, _local(X, 3, OPTIONS))
    client.wait_for_workers(2)  # the nanny has started a new worker process in the killed one's place
