"""The gaussian family: mixtures of K normal groups over a 1-D or d-D point cloud (four covariance types)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.datasets.parse import as_rows, map_points
from service.em.blocks import argmax_rows, has_nan
from service.em.errors import InvalidParameterError
from service.em.gaussian import GaussianMixture, GaussianMixtureRules, GaussianParams, n_parameters
from service.em.gaussian_checks import CovarianceType, InitMethod, WorkingDtype, check_inputs
from service.em.gaussian_information import gaussian_uncertainty, n_free_parameters, reported_maps
from service.em.gaussian_missing import MissingGaussianMixture, check_missing
from service.em.information import Uncertainty
from service.em.loop import EMOptions, FitOutcome, Hooks, run_em
from service.em.use import GaussianModel
from service.families.base import Family, ModelUse
from service.families.bootstrap import Resampling, matched_order, solution_params
from service.families.limits import Footprint, check_size, check_standard_errors, em_options, standard_error_bytes
from service.families.render import common_fields, dumps, uncertainty_fields
from service.plots import gaussian as gaussian_plot
from service.schemas.gaussian import GAUSSIAN_EXAMPLES, GaussianFitRequest, GaussianFitResult, GaussianModelImport
from service.schemas.models import SampleRequest, ScoreRequest
from service.schemas.results import load_result_examples
from service.settings import Settings

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class GaussianTask:
    options: EMOptions
    X: FloatArray  # (n, d), also for 1-D data
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
    return_imputed: bool = False
    standard_errors: bool = False
    # Points with missing coordinates: at most this many patterns of them (0: none missing). Each pattern costs
    # every iteration a few small-matrix calls per component, whatever its number of points.
    missing_patterns: int = 0
    # Set when X is an uploaded dataset's: the task then reaches its worker as this path, which the worker maps,
    # not as a pickled copy of the points (the dataset cannot be deleted while a job fits it).
    data_file: Path | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.data_file is not None:
            state["X"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["X"] is None:
            state["X"] = as_rows(map_points(state["data_file"]))
        self.__dict__.update(state)

    @property
    def work_per_iteration(self) -> int:
        n, d = self.X.shape
        arithmetic = n * self.n_components * d * (d if self.covariance_type in ("full", "tied") else 1)
        return int(arithmetic + self.missing_patterns * self.n_components * _PATTERN_WORK)

    @property
    def n_free_parameters(self) -> int:
        return n_free_parameters(self.n_components, self.X.shape[1], self.covariance_type)

    @property
    def work_after_fit(self) -> int:
        return int(self.X.shape[0]) * self.n_free_parameters**2 if self.standard_errors else 0

    @property
    def footprint(self) -> Footprint:
        n, d = self.X.shape
        K, options = self.n_components, self.options
        P = self.n_free_parameters if self.standard_errors else 0
        n_params = K + K * d + _covariance_numbers(self.covariance_type, K, d) + (K if d == 1 else 0)
        per_point = (
            (1 if self.return_labels else 0)
            + (K if self.return_responsibilities else 0)
            + (d if self.return_imputed else 0)
        )
        return Footprint(
            # the points, their centred (and float32) working copies; log-responsibilities, responsibilities
            # and the chunked pass's temporaries
            arrays_bytes=8 * (3 * n * d + 3 * n * K) + (standard_error_bytes(n, K, P) if P else 0),
            trace_numbers=options.max_iter * n_params if options.trace == "params" else 0,
            result_numbers=n_params + n * per_point + P * P + (n_params if P else 0),
            trace_entries=options.max_iter if options.trace != "none" else 0,
        )


@dataclass
class GaussianSolution:
    outcome: FitOutcome[GaussianParams]
    covariance_type: CovarianceType
    collapsed: list[int]  # components that collapsed onto repeated values (see GaussianMixture.collapsed_components)
    params: dict[str, Any]
    mean_log_likelihood: float
    bic: float
    aic: float
    n_parameters: int
    labels: NDArray[np.intp] | None
    responsibilities: FloatArray | None
    uncertainty: Uncertainty | None = None
    imputed: FloatArray | None = None
    n_missing: int = 0


def _covariance_numbers(covariance_type: CovarianceType, K: int, d: int) -> int:
    return {"full": K * d * d, "diag": K * d, "spherical": K, "tied": d * d}[covariance_type]


# One missing-value pattern's small-matrix calls, per component and iteration, in work units (~60 us).
_PATTERN_WORK = 2000


def _missing_patterns(X: FloatArray) -> int:
    """An upper bound on the patterns of missing coordinates: incomplete rows + 1, and 2^d."""
    if not has_nan(X):
        return 0
    incomplete = int(np.count_nonzero(np.isnan(X).any(axis=1)))
    return int(min(incomplete + 1, 2 ** min(int(X.shape[1]), 40)))


def make_task(request: GaussianFitRequest, settings: Settings, default_time_limit_s: float) -> GaussianTask:
    X = as_rows(request.points_array())
    check_size(settings, field="points", n_observations=X.shape[0], n_features=X.shape[1],
               n_components=request.n_components)  # fmt: skip
    if request.standard_errors:
        check_standard_errors(
            settings, X.shape[0], n_free_parameters(request.n_components, X.shape[1], request.covariance_type)
        )
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
        return_imputed=request.return_imputed,
        missing_patterns=_missing_patterns(X),
        standard_errors=request.standard_errors,
        data_file=request.dataset_file(),
    )


def _check_missing(task: GaussianTask) -> None:
    """Points with missing coordinates: what the observed-data fit needs, and what it cannot yet do."""
    check_missing(task.X)
    if task.dtype != "float64":
        raise InvalidParameterError("points with missing values (null) are fitted in float64 only", "dtype")
    if task.standard_errors:
        raise InvalidParameterError(
            "standard_errors are not available yet for points with missing values (null); fit without them, or "
            "drop the incomplete points",
            "standard_errors",
        )


def check(task: GaussianTask) -> None:
    if has_nan(task.X):
        _check_missing(task)
        # The remaining checks (options, distinct points, given starts) on the points with their gaps filled.
        filled = np.where(np.isnan(task.X), np.nanmean(task.X, axis=0), task.X)
        task = replace(task, X=filled, data_file=None)
    check_inputs(
        task.X,
        task.n_components,
        task.covariance_type,
        task.reg_covar,
        task.dtype,
        task.init_means,
        task.init_covariances,
        task.init_weights,
    )


def _model(task: GaussianTask) -> GaussianMixture | MissingGaussianMixture:
    """The plain mixture, or (points with null coordinates) the observed-data one; the same start either way."""
    if has_nan(task.X):  # checked in the API process (check); the model checks the points again itself
        return MissingGaussianMixture(
            task.X, task.n_components, task.covariance_type, task.reg_covar, init_method=task.init_method,
            init_means=task.init_means, init_covariances=task.init_covariances, init_weights=task.init_weights,
        )  # fmt: skip
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


def solve(task: GaussianTask, hooks: Hooks | None = None) -> GaussianSolution:
    model = _model(task)
    # Given starting means keep the caller's order; otherwise results come in canonical order.
    options = replace(task.options, canonical_order=task.init_means is None)
    outcome = run_em(model, options, hooks)
    uncertainty = None
    if task.standard_errors and isinstance(model, GaussianMixture):
        params = outcome.params
        uncertainty = gaussian_uncertainty(
            model.X, params.weights, params.means - model.shift, params.covariances, task.covariance_type,
            np.exp(outcome.log_resp), outcome.converged,
        )  # fmt: skip
        outcome.warnings.extend(uncertainty.warnings)
    return solution_of(
        task,
        model,
        outcome,
        uncertainty=uncertainty,
        imputed=_imputed(model, outcome) if task.return_imputed else None,
        n_missing=int(np.count_nonzero(np.isnan(task.X))) if isinstance(model, MissingGaussianMixture) else 0,
    )


def solution_of(
    task: GaussianTask,
    model: GaussianMixtureRules | MissingGaussianMixture,
    outcome: FitOutcome[GaussianParams],
    uncertainty: Uncertainty | None = None,
    imputed: FloatArray | None = None,
    n_missing: int = 0,
) -> GaussianSolution:
    """The solution of a fit that ran, locally or elsewhere (``service.distributed``): what is reported of it."""
    n_samples = model.n_observations
    n_params = n_parameters(task.n_components, model.n_features, task.covariance_type)
    return GaussianSolution(
        outcome=outcome,
        covariance_type=task.covariance_type,
        collapsed=model.collapsed_components(outcome.params),
        params=model.to_dict(outcome.params),
        mean_log_likelihood=outcome.log_likelihood / n_samples,
        bic=-2 * outcome.log_likelihood + n_params * np.log(n_samples),
        aic=-2 * outcome.log_likelihood + 2 * n_params,
        n_parameters=n_params,
        labels=_labels(model, outcome) if task.return_labels else None,
        responsibilities=np.exp(outcome.log_resp) if task.return_responsibilities else None,
        uncertainty=uncertainty,
        imputed=imputed,
        n_missing=n_missing,
    )


def _labels(
    model: GaussianMixtureRules | MissingGaussianMixture, outcome: FitOutcome[GaussianParams]
) -> NDArray[np.intp]:
    """Each point's most probable component; a plain mixture's come a chunk at a time, so a fit that reports only
    labels never holds the n x K log-responsibilities (as large as the data when K = d)."""
    if isinstance(model, GaussianMixture):
        return model.labels(outcome.params)
    return argmax_rows(outcome.log_resp)


def _imputed(model: GaussianMixture | MissingGaussianMixture, outcome: FitOutcome[GaussianParams]) -> FloatArray:
    """Conditional means in the gaps (a complete cloud is its own imputation)."""
    if isinstance(model, MissingGaussianMixture):
        return model.imputed(outcome.params, outcome.log_resp)
    return model.X + model.shift


def render(solution: GaussianSolution, job_id: str) -> bytes:
    """The ``GaussianFitResult`` JSON of a solved fit."""
    return dumps(
        {
            "model": "gaussian",
            "params": solution.params,
            "mean_log_likelihood": solution.mean_log_likelihood,
            "bic": solution.bic,
            "aic": solution.aic,
            "n_parameters": solution.n_parameters,
            "labels": solution.labels,
            "imputed": solution.imputed,
            "n_missing": solution.n_missing,
            "responsibilities": solution.responsibilities,
            **_uncertainty_fields(solution),
            **common_fields(solution.outcome, job_id),
        }
    )


def _uncertainty_fields(solution: GaussianSolution) -> dict[str, Any]:
    """Standard errors of weights, means and covariances; for 1-D data also of the standard deviations, by the
    delta method (d sigma = d sigma^2 / 2 sigma)."""
    params = solution.params
    if solution.uncertainty is None:
        return uncertainty_fields(None, {}, params)
    K, d = len(params["weights"]), len(params["means"][0])
    fields = uncertainty_fields(solution.uncertainty, reported_maps(K, d, solution.covariance_type), params)
    errors = fields["standard_errors"]
    if errors is not None and "stds" in params:
        stds = np.asarray(params["stds"], dtype=np.float64)
        variance_errors = np.broadcast_to(np.ravel(errors["covariances"]), stds.shape)
        errors["stds"] = variance_errors / (2 * stds)
    return fields


def summarise(request: GaussianFitRequest) -> dict[str, Any]:
    X = request.points_array()
    return {
        "n_points": int(X.shape[0]),
        "n_features": int(X.shape[1]) if X.ndim == 2 else 1,
        "n_components": request.n_components,
        "covariance_type": request.covariance_type,
        "reg_covar": request.reg_covar,
        "dtype": request.dtype,
        "init_method": request.init.method if request.init else "kmeans",
        **request.options_summary(),
    }


# --- the kept model ---


def keep(solution: GaussianSolution) -> dict[str, Any]:
    return {
        "params": solution.params,
        "n_features": len(solution.params["means"][0]),
        "covariance_type": solution.covariance_type,
        "log_likelihood": solution.outcome.log_likelihood,
    }


def content_of_import(request: GaussianModelImport) -> dict[str, Any]:
    params = request.params.model_dump(exclude={"stds"})
    model = load({"params": params, "covariance_type": request.covariance_type})  # a 422 for unusable parameters
    params = {"weights": model.weights, "means": model.means, "covariances": model.covariances}
    return {"params": params, "n_features": model.n_features, "covariance_type": request.covariance_type}


def import_size(request: GaussianModelImport) -> tuple[int, int]:
    first = request.params.means[0]
    return len(request.params.weights), len(first) if isinstance(first, list) else 1


def load(content: dict[str, Any]) -> GaussianModel:
    params = content["params"]
    return GaussianModel.of(params["weights"], params["means"], params["covariances"], content["covariance_type"])


def observations(request: ScoreRequest, model: GaussianModel, dataset: FloatArray | None) -> FloatArray:
    """The points sent (or the dataset named), as rows of the model's dimension."""
    points = request.points if request.points is not None else dataset
    if points is None:
        raise InvalidParameterError("a gaussian model takes points or a dataset of points", "points")
    X = as_rows(points)
    field = "points" if request.points is not None else "dataset"
    if has_nan(X):
        raise InvalidParameterError(
            "the points have missing values (NaN); predict and score need complete points (a fit's "
            "return_imputed fills the gaps under its model)",
            field,
        )
    if X.shape[1] != model.n_features:
        raise InvalidParameterError(
            f"the points have {X.shape[1]} dimensions; the model expects {model.n_features}", field
        )
    return X


def sample(model: GaussianModel, request: SampleRequest, seed: int) -> dict[str, Any]:
    points, labels = model.sample(request.n, seed)
    return {"points": points[:, 0] if model.n_features == 1 else points, "labels": labels}


MODEL_USE = ModelUse(
    import_request=GaussianModelImport,
    content_of_import=content_of_import,
    import_size=import_size,
    load=load,
    observations=observations,
    count=len,
    log_joint=lambda model, X: model.log_joint(X),
    sample=sample,
    sample_size=lambda model, request: request.n * (model.n_features + 1),
)

# --- the bootstrap ---


def replicate(task: GaussianTask, fitted: dict[str, Any], rng: np.random.Generator) -> GaussianTask:
    """The points resampled with replacement (in row order: the passes read them in sequence), refitted from
    the fitted parameters."""
    rows = np.sort(rng.integers(len(task.X), size=len(task.X)))
    return replace(
        task,
        X=task.X[rows],
        data_file=None,
        init_means=fitted["means"],
        init_covariances=fitted["covariances"],
        init_weights=fitted["weights"],
        return_labels=False,
        return_responsibilities=False,
        return_imputed=False,
        standard_errors=False,
        options=replace(task.options, n_init=1, trace="none"),
    )


def align(params: dict[str, Any], fitted: dict[str, Any], task: GaussianTask) -> dict[str, Any]:
    """Components matched by their means; a tied covariance is shared and stays as it is."""
    order = matched_order(np.asarray(params["means"]), np.asarray(fitted["means"]))
    per_component = ["weights", "means", "stds"] + ([] if task.covariance_type == "tied" else ["covariances"])
    return {name: np.asarray(v)[order].tolist() if name in per_component else v for name, v in params.items()}


FAMILY = Family(
    kind="gaussian",
    title="a Gaussian mixture to points",
    description="Estimate weights, means and covariances of K normal groups in a 1-D or d-D point cloud by EM.",
    request=GaussianFitRequest,
    result=GaussianFitResult,
    examples=GAUSSIAN_EXAMPLES,
    result_examples=load_result_examples("gaussian"),
    make_task=make_task,
    check=check,
    summarise=summarise,
    solve=solve,
    render=render,
    keep=keep,
    use=MODEL_USE,
    dataset_kind="points",
    resampling=Resampling(replicate, align, solution_params),
    plot=gaussian_plot.draw,
    plot_data=gaussian_plot.picture_data,
)
