"""A gaussian fit job on Dask: the family's task in, the family's solution out, so the job renders as any other.

The job manager decides where a fit runs (:func:`runs_on_dask`) and where its dataset is (:func:`dataset_url`);
:func:`solve_on_dask` then stands in for ``service.families.gaussian.solve``.
"""

from __future__ import annotations

from typing import Any

from distributed import Client

from service.distributed.dask_em import fit_on_dask
from service.em.errors import InvalidParameterError
from service.em.loop import Hooks
from service.families.gaussian import GaussianSolution, GaussianTask, solution_of


def runs_on_dask(n_rows: int, scheduler: str | None, min_rows: int | None) -> bool:
    """Whether a fit of ``n_rows`` goes to the cluster: only with a scheduler and a threshold both set
    (``EM_DASK_SCHEDULER``, ``EM_DASK_MIN_ROWS``), and more rows than the threshold."""
    return scheduler is not None and min_rows is not None and n_rows > min_rows


def dataset_url(storage_url: str, dataset_id: str) -> str:
    """Where the workers read a stored dataset: ``<EM_STORAGE_URL>/<id>.npy``, the store's own file name."""
    return f"{storage_url.rstrip('/')}/{dataset_id}.npy"


def solve_on_dask(
    task: GaussianTask,
    cluster: Client | str,
    storage_url: str,
    hooks: Hooks | None = None,
    chunk_rows: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> GaussianSolution:
    """``service.families.gaussian.solve`` with the passes on Dask, the data read from ``storage_url``.

    What would need every row in the coordinator is refused before any work: standard errors (an n x P
    score matrix) and imputed points (the points themselves). Labels and responsibilities come back whole
    (n and n x K numbers), as a local fit's do.
    """
    if task.standard_errors:
        raise InvalidParameterError(
            "standard_errors are not available for fits run on a Dask cluster", "standard_errors"
        )
    if task.return_imputed:
        raise InvalidParameterError("return_imputed is not available for fits run on a Dask cluster", "return_imputed")
    fit = fit_on_dask(
        cluster, storage_url, task.n_components, task.options, covariance_type=task.covariance_type,
        reg_covar=task.reg_covar, init_method=task.init_method, init_means=task.init_means,
        init_covariances=task.init_covariances, init_weights=task.init_weights, dtype=task.dtype, hooks=hooks,
        chunk_rows=chunk_rows, storage_options=storage_options,
    )  # fmt: skip
    return solution_of(task, fit.model, fit.outcome)


def dask_solver(task: object, scheduler: str | None, min_rows: int | None, storage_url: str | None) -> Any:
    """``solve(task, hooks)`` on Dask for a gaussian fit of a stored dataset with more rows than ``min_rows``
    (None: the fit runs where it is, as any other). What Dask does not do (standard errors, imputed points,
    missing values) stays local rather than being refused."""
    if not isinstance(task, GaussianTask) or task.data_file is None:
        return None
    if task.standard_errors or task.return_imputed or task.missing_patterns:
        return None
    if not runs_on_dask(int(task.X.shape[0]), scheduler, min_rows):
        return None
    assert scheduler is not None
    url = dataset_url(storage_url or str(task.data_file.parent), task.data_file.stem)

    def solve(task: GaussianTask, hooks: Hooks | None = None) -> GaussianSolution:
        return solve_on_dask(task, scheduler, url, hooks)

    return solve
