"""One call per model: a plain task description in, a solved fit out.

These are what the web layer (and a job worker process) hand to the solver: picklable dataclasses of
numpy arrays and numbers, so the same task runs in-thread or in another process unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.em.coins import CoinMixture, CoinParams, parse_sequences
from service.em.gaussian import (
    CovarianceType,
    GaussianMixture,
    GaussianParams,
    InitMethod,
    WorkingDtype,
    n_parameters,
)
from service.em.loop import EMOptions, FitOutcome, Hooks, run_em

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class CoinTask:
    options: EMOptions
    n_coins: int = 2
    sequences: list[str] | None = None
    heads: FloatArray | None = None
    tails: FloatArray | None = None
    fit_weights: bool = False
    init_biases: list[float] | None = None
    init_weights: list[float] | None = None

    @property
    def size(self) -> int:
        return len(self.sequences) if self.sequences is not None else len(self.heads if self.heads is not None else [])


@dataclass(frozen=True)
class GaussianTask:
    options: EMOptions
    X: FloatArray
    n_components: int = 2
    covariance_type: CovarianceType = "full"
    reg_covar: float = 1e-6
    dtype: WorkingDtype = "float64"
    init_method: InitMethod = "kmeans"
    init_means: Any = None
    init_covariances: Any = None
    init_weights: Any = None
    return_labels: bool = True
    return_responsibilities: bool = False

    @property
    def size(self) -> int:
        return len(self.X)


@dataclass
class CoinSolution:
    outcome: FitOutcome[CoinParams]
    params: dict[str, Any]
    responsibilities: FloatArray


@dataclass
class GaussianSolution:
    outcome: FitOutcome[GaussianParams]
    params: dict[str, Any]
    mean_log_likelihood: float
    bic: float
    aic: float
    n_parameters: int
    labels: NDArray[np.intp] | None
    responsibilities: FloatArray | None


def build_coin_model(task: CoinTask) -> CoinMixture:
    """The model a task describes; raises :class:`EMError` for anything that cannot be fitted, before any work."""
    if task.sequences is not None:
        heads, tails = parse_sequences(task.sequences)
    else:
        assert task.heads is not None and task.tails is not None
        heads, tails = task.heads, task.tails
    return CoinMixture(
        heads,
        tails,
        task.n_coins,
        task.fit_weights,
        _array_or_none(task.init_weights),
        _array_or_none(task.init_biases),
    )


def build_gaussian_model(task: GaussianTask) -> GaussianMixture:
    """The model a task describes; raises :class:`EMError` for anything that cannot be fitted, before any work."""
    return GaussianMixture(
        task.X,
        task.n_components,
        task.covariance_type,
        task.reg_covar,
        task.init_method,
        task.init_means,
        task.init_covariances,
        task.init_weights,
        task.dtype,
    )


def solve_coins(task: CoinTask, hooks: Hooks | None = None) -> CoinSolution:
    model = build_coin_model(task)
    outcome = run_em(model, _ordered(task.options, given=task.init_biases is not None), hooks)
    return CoinSolution(outcome, model.to_dict(outcome.params), np.exp(outcome.log_resp))


def solve_gaussian(task: GaussianTask, hooks: Hooks | None = None) -> GaussianSolution:
    model = build_gaussian_model(task)
    outcome = run_em(model, _ordered(task.options, given=task.init_means is not None), hooks)
    n_samples = model.n_observations
    n_params = n_parameters(task.n_components, model.n_features, task.covariance_type)
    return GaussianSolution(
        outcome=outcome,
        params=model.to_dict(outcome.params),
        mean_log_likelihood=outcome.log_likelihood / n_samples,
        bic=-2 * outcome.log_likelihood + n_params * np.log(n_samples),
        aic=-2 * outcome.log_likelihood + 2 * n_params,
        n_parameters=n_params,
        labels=np.argmax(outcome.log_resp, axis=1) if task.return_labels else None,
        responsibilities=np.exp(outcome.log_resp) if task.return_responsibilities else None,
    )


def _ordered(options: EMOptions, given: bool) -> EMOptions:
    """Given starting components keep the caller's order; otherwise results come in canonical order."""
    return replace(options, canonical_order=not given)


def _array_or_none(values: Any) -> FloatArray | None:
    return None if values is None else np.asarray(values, dtype=np.float64)
