"""Between the wire and the solver: request schemas to solver tasks, solutions to result schemas."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np
import orjson
from fastapi.exceptions import RequestValidationError

from service.em.errors import EMError
from service.em.loop import EMOptions, FitOutcome
from service.em.tasks import CoinSolution, CoinTask, GaussianSolution, GaussianTask
from service.schemas.coins import CoinFitRequest
from service.schemas.common import FitOptions
from service.schemas.gaussian import GaussianFitRequest
from service.settings import Settings


def limit_error(field: str, message: str) -> RequestValidationError:
    """A 422 in FastAPI's shape for a value the schema accepts but the server's limits do not."""
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error.limit"}])


def em_options(request: FitOptions, settings: Settings, default_time_limit_s: float) -> EMOptions:
    if request.max_iter > settings.max_iter_cap:
        raise limit_error(
            "max_iter", f"max_iter is {request.max_iter}; this server allows at most {settings.max_iter_cap}"
        )
    if request.n_init > settings.n_init_cap:
        raise limit_error("n_init", f"n_init is {request.n_init}; this server allows at most {settings.n_init_cap}")
    if request.time_limit_s is not None and request.time_limit_s > settings.time_limit_cap_s:
        raise limit_error(
            "time_limit_s",
            f"time_limit_s is {request.time_limit_s}; this server allows at most {settings.time_limit_cap_s}",
        )
    return EMOptions(
        max_iter=request.max_iter,
        tol=request.tol,
        n_init=request.n_init,
        seed=request.seed,
        trace=request.trace,
        time_limit_s=request.time_limit_s if request.time_limit_s is not None else default_time_limit_s,
    )


def _check_size(n_points: int, n_features: int, n_components: int, settings: Settings, what: str) -> None:
    if n_points > settings.max_points:
        raise limit_error(what, f"{what} has {n_points} entries; this server allows at most {settings.max_points}")
    if n_features > settings.max_features:
        raise limit_error(
            what, f"points have {n_features} dimensions; this server allows at most {settings.max_features}"
        )
    component_field = "n_coins" if what == "sequences" or what == "counts" else "n_components"
    if n_components > settings.max_components:
        raise limit_error(
            component_field,
            f"{component_field} is {n_components}; this server allows at most {settings.max_components}",
        )
    if n_points * n_features * n_components > settings.max_cells:
        raise limit_error(
            what,
            f"points x dimensions x components is {n_points * n_features * n_components}; "
            f"this server allows at most {settings.max_cells}",
        )


def coin_task(request: CoinFitRequest, settings: Settings, default_time_limit_s: float) -> CoinTask:
    what = "sequences" if request.sequences is not None else "counts"
    _check_size(request.n_experiments, 1, request.n_coins, settings, what)
    heads = tails = None
    if request.counts is not None:
        heads = np.array([c.heads for c in request.counts], dtype=np.float64)
        tails = np.array([c.tails for c in request.counts], dtype=np.float64)
    return CoinTask(
        options=em_options(request, settings, default_time_limit_s),
        n_coins=request.n_coins,
        sequences=request.sequences,
        heads=heads,
        tails=tails,
        fit_weights=request.fit_weights,
        init_biases=request.init.biases if request.init else None,
        init_weights=request.init.weights if request.init else None,
    )


def gaussian_task(request: GaussianFitRequest, settings: Settings, default_time_limit_s: float) -> GaussianTask:
    X = request.points if request.points.ndim == 2 else request.points[:, None]
    _check_size(X.shape[0], X.shape[1], request.n_components, settings, "points")
    init = request.init
    return GaussianTask(
        options=em_options(request, settings, default_time_limit_s),
        X=X,
        n_components=request.n_components,
        covariance_type=request.covariance_type,
        reg_covar=request.reg_covar,
        dtype=request.dtype,
        init_method=init.method if init else "kmeans",
        init_means=init.means if init else None,
        init_covariances=init.covariances if init else None,
        init_weights=init.weights if init else None,
        return_labels=request.return_labels,
        return_responsibilities=request.return_responsibilities,
    )


def _common(outcome: FitOutcome[Any], job_id: str) -> dict[str, Any]:
    return {
        "n_iter": outcome.n_iter,
        "converged": outcome.converged,
        "stop_reason": outcome.stop_reason,
        "trace": [
            {"iteration": t.iteration, "log_likelihood": t.log_likelihood, "delta": t.delta}
            | ({} if t.params is None else {"params": t.params})
            for t in outcome.trace
        ],
        "restarts": [asdict(r) for r in outcome.restarts],
        "warnings": outcome.warnings,
        "job_id": job_id,
        "elapsed_ms": outcome.elapsed_s * 1000.0,
        "log_likelihood": outcome.log_likelihood,
    }


def _dumps(result: dict[str, Any]) -> bytes:
    """JSON straight from numpy arrays (orjson), refusing NaN/Infinity rather than emitting them."""
    if not _finite(result):  # orjson would quietly write null for them
        raise EMError("the fit produced non-finite numbers; try fewer components or a larger reg_covar")
    return orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY, default=_contiguous)


def _contiguous(value: Any) -> Any:
    # orjson writes C-contiguous arrays natively; a column-permuted view is copied once here.
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, np.ndarray):
        return value.dtype.kind != "f" or bool(np.all(np.isfinite(value)))
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def render_coin_result(solution: CoinSolution, job_id: str) -> bytes:
    """The ``CoinFitResult`` JSON of a solved fit (runs in the worker process)."""
    return _dumps(
        {
            "model": "coins",
            "params": solution.params,
            "responsibilities": solution.responsibilities,
            **_common(solution.outcome, job_id),
        }
    )


def render_gaussian_result(solution: GaussianSolution, job_id: str) -> bytes:
    """The ``GaussianFitResult`` JSON of a solved fit (runs in the worker process)."""
    return _dumps(
        {
            "model": "gaussian",
            "params": solution.params,
            "mean_log_likelihood": solution.mean_log_likelihood,
            "bic": solution.bic,
            "aic": solution.aic,
            "n_parameters": solution.n_parameters,
            "labels": solution.labels,
            "responsibilities": solution.responsibilities,
            **_common(solution.outcome, job_id),
        }
    )


def coin_summary(request: CoinFitRequest) -> dict[str, Any]:
    return {
        "n_experiments": request.n_experiments,
        "n_coins": request.n_coins,
        "fit_weights": request.fit_weights,
        **_options_summary(request),
    }


def gaussian_summary(request: GaussianFitRequest) -> dict[str, Any]:
    X = request.points
    return {
        "n_points": int(X.shape[0]),
        "n_features": int(X.shape[1]) if X.ndim == 2 else 1,
        "n_components": request.n_components,
        "covariance_type": request.covariance_type,
        "reg_covar": request.reg_covar,
        "dtype": request.dtype,
        "init_method": request.init.method if request.init else "kmeans",
        **_options_summary(request),
    }


def _options_summary(request: FitOptions) -> dict[str, Any]:
    return request.model_dump(include={"max_iter", "tol", "n_init", "seed", "trace", "time_limit_s"})
