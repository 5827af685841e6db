"""The server's caps on a fit request: checked in the API process, before any work is queued.

A value the schema accepts but this server's limits do not is a 422 naming the limit. Defaults that
exceed a cap (an operator lowered ``EM_MAX_ITER_CAP`` below the schema's default) are clamped to it:
a client that did not ask for a value must not be refused for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.em.errors import EMError
from service.em.loop import EMOptions
from service.schemas.common import FitOptions
from service.settings import Settings


class LimitExceeded(EMError):
    """A request above one of the server's caps (answered 422 with type ``value_error.limit``)."""


def em_options(request: FitOptions, settings: Settings, default_time_limit_s: float) -> EMOptions:
    """The driver's options from the request's common fields, each checked against its cap."""
    given = request.model_fields_set
    max_iter = _capped("max_iter", request.max_iter, settings.max_iter_cap, "max_iter" in given)
    n_init = _capped("n_init", request.n_init, settings.n_init_cap, "n_init" in given)
    if request.time_limit_s is None:
        time_limit_s = min(default_time_limit_s, settings.time_limit_cap_s)
    else:
        time_limit_s = _capped("time_limit_s", request.time_limit_s, settings.time_limit_cap_s, True)
    return EMOptions(
        max_iter=int(max_iter),
        tol=request.tol,
        n_init=int(n_init),
        seed=request.seed,
        trace=request.trace,
        time_limit_s=float(time_limit_s),
    )


def _capped(name: str, value: float, cap: float, given: bool) -> float:
    if value <= cap:
        return value
    if not given:
        return cap
    raise LimitExceeded(f"{name} is {value}; this server allows at most {cap}", name)


def check_size(
    settings: Settings,
    *,
    field: str,
    n_observations: int,
    n_features: int = 1,
    n_components: int,
    components_field: str = "n_components",
    max_components: int | None = None,
) -> None:
    """Observations, dimensions, components and their product against the server's caps.

    ``max_components`` replaces ``settings.max_components`` for families whose components have their own cap
    (an abundance fit's targets: ``settings.max_targets``).
    """
    component_cap = settings.max_components if max_components is None else max_components
    if n_observations > settings.max_points:
        raise LimitExceeded(
            f"{field} has {n_observations} entries; this server allows at most {settings.max_points}", field
        )
    if n_features > settings.max_features:
        raise LimitExceeded(
            f"points have {n_features} dimensions; this server allows at most {settings.max_features}", field
        )
    if n_components > component_cap:
        raise LimitExceeded(
            f"{components_field} is {n_components}; this server allows at most {component_cap}",
            components_field,
        )
    cells = n_observations * n_features * n_components
    if cells > settings.max_cells:
        raise LimitExceeded(
            f"points x dimensions x components is {cells}; this server allows at most {settings.max_cells}", field
        )


def check_standard_errors(settings: Settings, n_observations: int, n_free_parameters: int) -> int:
    """The work of the observed information (observations x free parameters^2), within the server's cap."""
    cells = n_observations * n_free_parameters**2
    if cells > settings.max_standard_error_cells:
        raise LimitExceeded(
            f"standard errors of {n_free_parameters} parameters over {n_observations} observations are "
            f"{cells:.3g} cells of work; this server allows at most {settings.max_standard_error_cells:.3g} "
            "(fewer components or dimensions, a simpler covariance type, or no standard_errors)",
            "standard_errors",
        )
    return cells


def standard_error_bytes(n_observations: int, n_components: int, n_free_parameters: int) -> int:
    """Memory of the observed information: three P x P sums, a chunk's scores, the responsibilities."""
    return 8 * (3 * n_free_parameters**2 + (1 << 22) + n_observations * n_components)


# Bytes a number costs on its way out: ~20 characters of JSON, and a Python float in a list (32 bytes) while the
# result is built. Rough on purpose: the estimates only have to tell a fit that fits from one that cannot.
_JSON_BYTES_PER_NUMBER = 20
_PYTHON_BYTES_PER_NUMBER = 32
_FIXED_RESULT_BYTES = 4096
_TRACE_ENTRY_BYTES = 100  # {"iteration", "log_likelihood", "delta"}


@dataclass(frozen=True)
class Footprint:
    """What a fit will need at most, estimated before it runs.

    ``arrays_bytes``: what the solver holds (data, working copies, n x K arrays); ``trace_numbers``: numbers
    kept per iteration for ``trace: "params"`` times ``max_iter``; ``result_numbers``: numbers in the result
    besides the trace (parameters, responsibilities, labels).
    """

    arrays_bytes: int
    trace_numbers: int
    result_numbers: int
    trace_entries: int

    @property
    def result_bytes(self) -> int:
        numbers = self.trace_numbers + self.result_numbers
        return _FIXED_RESULT_BYTES + self.trace_entries * _TRACE_ENTRY_BYTES + numbers * _JSON_BYTES_PER_NUMBER

    @property
    def peak_bytes(self) -> int:
        """Arrays, the trace's snapshots (8 bytes a number), then the result built as Python lists and JSON."""
        numbers = self.trace_numbers + self.result_numbers
        return self.arrays_bytes + self.trace_numbers * 8 + numbers * _PYTHON_BYTES_PER_NUMBER + self.result_bytes


def check_refit_footprint(footprint: Footprint, settings: Settings) -> None:
    """Refuse a bootstrap whose refits would not fit a worker: a refit holds a resampled copy of the data beside
    what the fit itself needs (the fit's arrays bound the data)."""
    limit_mb = settings.worker_memory_limit_mb
    refit_mb = (footprint.peak_bytes + footprint.arrays_bytes) / 2**20
    if limit_mb is not None and refit_mb > limit_mb:
        raise LimitExceeded(
            f"a bootstrap refit would need about {refit_mb:.0f} MB (the fit and a resampled copy of its data); a fit "
            f"worker has {limit_mb} MB (fewer points, or no bootstrap)",
            "bootstrap",
        )


def check_footprint(footprint: Footprint, settings: Settings) -> None:
    """Refuse, before it runs, a fit whose result or memory would exceed the server's limits (a 422 naming why)."""
    result_mb = footprint.result_bytes / 2**20
    if result_mb > settings.max_result_mb:
        field = "trace" if footprint.trace_numbers * 2 > footprint.result_numbers else "return_responsibilities"
        raise LimitExceeded(
            f"the result would be about {result_mb:.0f} MB; this server answers at most {settings.max_result_mb} MB "
            "(ask for less: trace 'loglik' or 'none', fewer iterations, return_responsibilities false, or fewer "
            "points or components)",
            field,
        )
    limit_mb = settings.worker_memory_limit_mb
    peak_mb = footprint.peak_bytes / 2**20
    if limit_mb is not None and peak_mb > limit_mb:
        raise LimitExceeded(
            f"the fit would need about {peak_mb:.0f} MB of memory; a fit worker has {limit_mb} MB "
            "(fit fewer points or components, or keep less: trace 'loglik', return_responsibilities false)",
            "points",
        )
