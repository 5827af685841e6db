"""Result JSON from a solved fit: the fields every family shares, and a serialiser that never emits NaN.

Runs in the worker processes (and inline for tiny fits): numpy arrays go straight to JSON with orjson.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from service.em.errors import EMError
from service.em.information import Uncertainty
from service.em.loop import FitOutcome


def common_fields(outcome: FitOutcome[Any], job_id: str) -> dict[str, Any]:
    """``n_iter`` … ``elapsed_ms``: the fields of ``FitResultBase`` plus the total log-likelihood."""
    return {
        "n_iter": outcome.n_iter,
        "converged": outcome.converged,
        "stop_reason": outcome.stop_reason,
        "trace": [
            {"iteration": t.iteration, "log_likelihood": t.log_likelihood, "delta": t.delta}
            | ({} if t.params is None else {"params": t.params})
            for t in outcome.trace
        ],
        "restarts": [
            {"seed": r.seed, "log_likelihood": r.log_likelihood, "n_iter": r.n_iter, "converged": r.converged}
            for r in outcome.restarts
        ],
        "warnings": outcome.warnings,
        "job_id": job_id,
        "model_id": job_id,  # every succeeded fit keeps its model, under the fit's id
        "elapsed_ms": outcome.elapsed_s * 1000.0,
        "log_likelihood": outcome.log_likelihood,
    }


def uncertainty_fields(uncertainty: Uncertainty | None, maps: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``standard_errors`` (each of ``maps``' parameters, in the shape ``params`` gives it; null entries for
    fixed ones) and ``covariance_of_estimates``: both null unless asked for and defined."""
    if uncertainty is None or uncertainty.covariance is None:
        return {"standard_errors": None, "covariance_of_estimates": None, "bootstrap": None}
    errors: dict[str, Any] = {}
    for name, linear_map in maps.items():
        shape = np.shape(params[name])
        found = None if linear_map is None else uncertainty.errors_of(linear_map)
        errors[name] = None if found is None else found.reshape(shape)
    return {
        "standard_errors": errors,
        "covariance_of_estimates": {"parameters": uncertainty.names, "matrix": uncertainty.covariance},
        "bootstrap": None,  # a job's bootstrap fills it in when its refits end (service.families.bootstrap)
    }


def dumps(result: dict[str, Any]) -> bytes:
    """JSON straight from numpy arrays (orjson), refusing NaN/Infinity rather than emitting them."""
    data = orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY, default=_contiguous)
    # orjson writes a NaN or an infinity as null. Every null in the JSON is a None of the result, a non-finite
    # number, or a string that says "null"; when there are no more of them than the result's top-level Nones
    # (its unasked-for fields), there is no non-finite number, and the walk over the whole result (a tenth
    # of a small fit's time in the service) is spared.
    if data.count(b"null") > sum(value is None for value in result.values()) and not _finite(result):
        raise EMError("the fit produced non-finite numbers; try fewer components or a larger reg_covar")
    return data


def kept_model_json(keep: Callable[[Any], dict[str, Any]], solution: Any) -> bytes:
    """The JSON of the model a solved fit keeps (``keep`` is the family's)."""
    return dumps(keep(solution))


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
