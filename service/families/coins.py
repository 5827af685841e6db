"""The coins family: K-coin binomial mixtures over experiments of flips (Do & Batzoglou, generalised)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.em.coins import CoinMixture, CoinParams, check_weights, parse_sequences
from service.em.errors import DegenerateDataError, InvalidParameterError
from service.em.information import Uncertainty
from service.em.loop import EMOptions, FitOutcome, Hooks, run_em
from service.em.use import CoinModel
from service.families.base import Family, ModelUse
from service.families.bootstrap import Resampling, matched_order, solution_params
from service.families.limits import Footprint, check_size, check_standard_errors, em_options, standard_error_bytes
from service.families.render import common_fields, dumps, uncertainty_fields
from service.plots import coins as coins_plot
from service.schemas.coins import COIN_EXAMPLES, CoinFitRequest, CoinFitResult, CoinModelImport
from service.schemas.models import SampleRequest, ScoreRequest
from service.schemas.results import load_result_examples
from service.settings import Settings

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class CoinTask:
    options: EMOptions
    heads: FloatArray
    tails: FloatArray
    n_coins: int = 2
    fit_weights: bool = False
    init_biases: FloatArray | None = None
    init_weights: FloatArray | None = None
    standard_errors: bool = False

    @property
    def n_free_parameters(self) -> int:
        return 2 * self.n_coins - 1 if self.fit_weights else self.n_coins

    @property
    def work_per_iteration(self) -> int:
        return int(self.heads.size) * self.n_coins

    @property
    def work_after_fit(self) -> int:
        return int(self.heads.size) * self.n_free_parameters**2 if self.standard_errors else 0

    @property
    def footprint(self) -> Footprint:
        n, K, options = int(self.heads.size), self.n_coins, self.options
        n_params = 2 * K
        kept = options.max_iter if options.trace != "none" else 0
        P = self.n_free_parameters if self.standard_errors else 0
        return Footprint(
            # counts; joint, responsibilities and temporaries; the observed information
            arrays_bytes=8 * (3 * n + 4 * n * K) + (standard_error_bytes(n, K, P) if P else 0),
            trace_numbers=options.max_iter * n_params if options.trace == "params" else 0,
            result_numbers=n_params + n * K + P * P + n_params,
            trace_entries=kept,
        )


@dataclass
class CoinSolution:
    outcome: FitOutcome[CoinParams]
    params: dict[str, Any]
    responsibilities: FloatArray
    uncertainty: Uncertainty | None = None
    uncertainty_maps: dict[str, Any] | None = None


def make_task(request: CoinFitRequest, settings: Settings, default_time_limit_s: float) -> CoinTask:
    """Counts from the request (sequences are counted here, once), within the server's caps."""
    field = "sequences" if request.sequences is not None else "counts" if request.counts is not None else "dataset"
    check_size(
        settings, field=field, n_observations=request.n_experiments, n_components=request.n_coins,
        components_field="n_coins",
    )  # fmt: skip
    if request.sequences is not None:
        heads, tails = parse_sequences(request.sequences)
    elif request.dataset is not None:
        experiments = request.dataset_array()  # columns heads, tails
        heads, tails = np.array(experiments[:, 0], dtype=np.float64), np.array(experiments[:, 1], dtype=np.float64)
    else:
        assert request.counts is not None
        heads = np.array([c.heads for c in request.counts], dtype=np.float64)
        tails = np.array([c.tails for c in request.counts], dtype=np.float64)
    init = request.init
    task = CoinTask(
        options=em_options(request, settings, default_time_limit_s),
        heads=heads,
        tails=tails,
        n_coins=request.n_coins,
        fit_weights=request.fit_weights,
        init_biases=None if init is None else np.asarray(init.biases, dtype=np.float64),
        init_weights=None if init is None or init.weights is None else np.asarray(init.weights, dtype=np.float64),
        standard_errors=request.standard_errors,
    )
    if task.standard_errors:
        check_standard_errors(settings, int(task.heads.size), task.n_free_parameters)
    return task


def check(task: CoinTask) -> None:
    """What the model would refuse, without building it (the schema has checked shapes and ranges)."""
    if task.n_coins > task.heads.size:
        raise DegenerateDataError(
            f"n_coins is {task.n_coins} but there are only {task.heads.size} experiments; "
            "use at most one coin per experiment",
            "n_coins",
        )
    if task.init_weights is not None:
        check_weights(task.init_weights, task.n_coins, "init.weights")
    if task.init_biases is not None and task.init_biases.shape != (task.n_coins,):
        raise InvalidParameterError(
            f"init.biases has {task.init_biases.size} values, expected n_coins = {task.n_coins}", "init.biases"
        )


def solve(task: CoinTask, hooks: Hooks | None = None) -> CoinSolution:
    model = CoinMixture(task.heads, task.tails, task.n_coins, task.fit_weights, task.init_weights, task.init_biases)
    # Given starting biases keep the caller's order; otherwise results come in canonical order.
    options = replace(task.options, canonical_order=task.init_biases is None)
    outcome = run_em(model, options, hooks)
    solution = CoinSolution(outcome, model.to_dict(outcome.params), np.exp(outcome.log_resp))
    if task.standard_errors:
        solution.uncertainty, solution.uncertainty_maps = model.uncertainty(outcome.params, outcome.converged)
        outcome.warnings.extend(solution.uncertainty.warnings)
    return solution


def render(solution: CoinSolution, job_id: str) -> bytes:
    """The ``CoinFitResult`` JSON of a solved fit."""
    return dumps(
        {
            "model": "coins",
            "params": solution.params,
            "responsibilities": solution.responsibilities,
            **uncertainty_fields(solution.uncertainty, solution.uncertainty_maps or {}, solution.params),
            **common_fields(solution.outcome, job_id),
        }
    )


def summarise(request: CoinFitRequest) -> dict[str, Any]:
    return {
        "n_experiments": request.n_experiments,
        "n_coins": request.n_coins,
        "fit_weights": request.fit_weights,
        **request.options_summary(),
    }


# --- the kept model ---


def keep(solution: CoinSolution) -> dict[str, Any]:
    return {"params": solution.params, "n_features": None, "log_likelihood": solution.outcome.log_likelihood}


def content_of_import(request: CoinModelImport) -> dict[str, Any]:
    model = CoinModel.of(request.params.biases, request.params.weights)  # a 422 for unusable parameters
    return {"params": {"biases": model.biases, "weights": model.weights}, "n_features": None}


def load(content: dict[str, Any]) -> CoinModel:
    params = content["params"]
    return CoinModel.of(params["biases"], params.get("weights"))


Counts = tuple[FloatArray, FloatArray]


def observations(request: ScoreRequest, model: CoinModel, dataset: FloatArray | None) -> Counts:
    """Heads and tails of the experiments sent (or of the dataset named)."""
    if request.sequences is not None:
        if not all(isinstance(sequence, str) for sequence in request.sequences):
            raise InvalidParameterError('a coins model takes sequences as strings of flips ("HTTH")', "sequences")
        return parse_sequences(request.sequences)  # type: ignore[arg-type]  # strings, checked above
    if request.counts is not None:
        counts = np.array([(c.heads, c.tails) for c in request.counts], dtype=np.float64)
        return counts[:, 0], counts[:, 1]
    if dataset is not None:
        return np.array(dataset[:, 0], dtype=np.float64), np.array(dataset[:, 1], dtype=np.float64)
    raise InvalidParameterError("a coins model takes sequences, counts or a dataset of experiments", "points")


def log_joint(model: CoinModel, counts: Counts) -> FloatArray:
    return model.log_joint(*counts)


def sample(model: CoinModel, request: SampleRequest, seed: int) -> dict[str, Any]:
    outcomes, labels = model.sample(request.n, request.flips, seed)
    letters = np.where(outcomes, ord("H"), ord("T")).astype(np.uint8).tobytes().decode("ascii")
    flips = request.flips
    return {"sequences": [letters[i * flips : (i + 1) * flips] for i in range(request.n)], "labels": labels}


MODEL_USE = ModelUse(
    import_request=CoinModelImport,
    content_of_import=content_of_import,
    import_size=lambda request: (len(request.params.biases), 1),
    load=load,
    observations=observations,
    count=lambda counts: len(counts[0]),
    log_joint=log_joint,
    sample=sample,
    sample_size=lambda model, request: request.n * request.flips,
)

# --- the bootstrap ---


def replicate(task: CoinTask, fitted: dict[str, Any], rng: np.random.Generator) -> CoinTask:
    """The experiments resampled with replacement, refitted from the fitted biases and weights."""
    rows = rng.integers(task.heads.size, size=task.heads.size)
    return replace(
        task,
        heads=task.heads[rows],
        tails=task.tails[rows],
        init_biases=np.asarray(fitted["biases"], dtype=np.float64),
        init_weights=np.asarray(fitted["weights"], dtype=np.float64),
        options=replace(task.options, n_init=1, trace="none"),
        standard_errors=False,
    )


def align(params: dict[str, Any], fitted: dict[str, Any], task: CoinTask) -> dict[str, Any]:
    order = matched_order(np.asarray(params["biases"]), np.asarray(fitted["biases"]))
    return {name: np.asarray(values)[order].tolist() for name, values in params.items()}


FAMILY = Family(
    kind="coins",
    title="a K-coin binomial mixture",
    description="Estimate each coin's bias (and optionally mixing weights) from experiments of flips by EM.",
    request=CoinFitRequest,
    result=CoinFitResult,
    examples=COIN_EXAMPLES,
    result_examples=load_result_examples("coins"),
    make_task=make_task,
    check=check,
    summarise=summarise,
    solve=solve,
    render=render,
    keep=keep,
    use=MODEL_USE,
    dataset_kind="coins",
    resampling=Resampling(replicate, align, solution_params),
    plot=coins_plot.draw,
    plot_data=coins_plot.picture_data,
)
