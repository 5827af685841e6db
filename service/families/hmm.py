"""The hmm family: hidden Markov models by Baum-Welch over several sequences (categorical or Gaussian emissions)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.em.errors import InvalidParameterError
from service.em.hmm import HiddenMarkovModel, HmmInit, HmmParams, check_init
from service.em.hmm_data import Emission, HmmCovarianceType, Sequences, check_enough_steps, encode
from service.em.hmm_use import HmmModel
from service.em.loop import EMOptions, FitOutcome, Hooks, run_em
from service.families.base import Family, ModelUse
from service.families.limits import Footprint, check_size, em_options
from service.families.render import common_fields, dumps
from service.plots import hmm as hmm_plot
from service.schemas.hmm import HMM_EXAMPLES, HmmFitRequest, HmmFitResult, HmmModelImport
from service.schemas.models import SampleRequest, ScoreRequest
from service.schemas.results import load_result_examples
from service.settings import Settings

IntArray = NDArray[np.intp]

# Arrays of T x K numbers one E-step holds at once: emissions, forward, backward (the posteriors reuse it), the
# categorical gather index; plus the data in the block layout (T x d, and T x d^2 products for full covariances).
_T_BY_K_ARRAYS = 5


@dataclass(frozen=True)
class HmmTask:
    options: EMOptions
    sequences: Sequences
    n_states: int = 2
    emission: Emission = "categorical"
    covariance_type: HmmCovarianceType = "diag"
    reg_covar: float = 0.0
    init: HmmInit | None = None
    return_labels: bool = True

    @property
    def n_features(self) -> int:
        values = self.sequences.values
        return 1 if values.ndim == 1 else int(values.shape[1])

    @property
    def work_per_iteration(self) -> int:
        return self.sequences.n_steps * self.n_states * max(self.n_states, self.n_features)

    @property
    def footprint(self) -> Footprint:
        T, K, d = self.sequences.n_steps, self.n_states, self.n_features
        data = T * (d + (d * d if self.covariance_type == "full" else d)) if self.emission == "gaussian" else T
        emission_numbers = K * (len(self.sequences.symbols or []) or (d + d * d))
        n_params = K + K * K + emission_numbers
        return Footprint(
            arrays_bytes=8 * (_T_BY_K_ARRAYS * T * K + 2 * data),
            trace_numbers=self.options.max_iter * n_params if self.options.trace == "params" else 0,
            result_numbers=n_params + (T if self.return_labels else 0),
            trace_entries=self.options.max_iter if self.options.trace != "none" else 0,
        )


@dataclass
class HmmSolution:
    outcome: FitOutcome[HmmParams]
    emission: Emission
    covariance_type: HmmCovarianceType
    params: dict[str, Any]
    mean_log_likelihood: float
    labels: list[IntArray] | None


def make_task(request: HmmFitRequest, settings: Settings, default_time_limit_s: float) -> HmmTask:
    """Sequences as arrays (symbols coded once), within the server's caps."""
    check_size(
        settings, field="sequences", n_observations=request.n_steps, n_components=request.n_states,
        components_field="n_states",
    )  # fmt: skip
    assert request.sequences is not None  # the schema requires them
    sequences = encode(request.sequences, request.emission, request.fixed_symbols)
    if request.emission == "gaussian":
        check_size(
            settings, field="sequences", n_observations=sequences.n_steps, n_features=sequences.values.shape[1],
            n_components=request.n_states, components_field="n_states",
        )  # fmt: skip
    init = request.init
    given = None
    if init is not None:
        given = HmmInit(init.start, init.transitions, request.init_emissions, init.means, init.covariances)
    return HmmTask(
        options=em_options(request, settings, default_time_limit_s),
        sequences=sequences,
        n_states=request.n_states,
        emission=request.emission,
        covariance_type=request.covariance_type,
        reg_covar=request.reg_covar,
        init=given,
        return_labels=request.return_labels,
    )


def check(task: HmmTask) -> None:
    """What the model would refuse, without building it: too few steps, a start of the wrong shape."""
    check_enough_steps(task.sequences.n_steps, task.n_states)
    if task.init is not None:
        check_init(task.init, task.n_states, task.sequences, task.emission, task.covariance_type)


def solve(task: HmmTask, hooks: Hooks | None = None) -> HmmSolution:
    model = HiddenMarkovModel(
        task.sequences, task.n_states, task.emission, task.covariance_type, task.reg_covar, task.init
    )
    # A given start keeps the caller's state order; otherwise results come in canonical order.
    options = replace(task.options, canonical_order=task.init is None or task.init.empty)
    outcome = run_em(model, options, hooks)
    labels = task.sequences.split(model.viterbi(outcome.params)) if task.return_labels else None
    return HmmSolution(
        outcome=outcome,
        emission=task.emission,
        covariance_type=task.covariance_type,
        params=model.to_dict(outcome.params),
        mean_log_likelihood=outcome.log_likelihood / task.sequences.n_steps,
        labels=labels,
    )


def render(solution: HmmSolution, job_id: str) -> bytes:
    """The ``HmmFitResult`` JSON of a solved fit."""
    return dumps(
        {
            "model": "hmm",
            "emission": solution.emission,
            "covariance_type": solution.covariance_type if solution.emission == "gaussian" else None,
            "params": solution.params,
            "mean_log_likelihood": solution.mean_log_likelihood,
            "labels": solution.labels,
            **common_fields(solution.outcome, job_id),
        }
    )


def summarise(request: HmmFitRequest) -> dict[str, Any]:
    return {
        "n_sequences": len(request.sequences or []),
        "n_steps": request.n_steps,
        "emission": request.emission,
        "n_states": request.n_states,
        "covariance_type": request.covariance_type if request.emission == "gaussian" else None,
        **request.options_summary(),
    }


# --- the kept model ---


def keep(solution: HmmSolution) -> dict[str, Any]:
    return {
        "params": solution.params,
        "n_features": len(solution.params["means"][0]) if solution.emission == "gaussian" else None,
        "emission": solution.emission,
        "covariance_type": solution.covariance_type if solution.emission == "gaussian" else None,
        "log_likelihood": solution.outcome.log_likelihood,
    }


def content_of_import(request: HmmModelImport) -> dict[str, Any]:
    params = request.params.model_dump(exclude_none=True)
    model = HmmModel.of(params, request.emission, request.covariance_type)  # a 422 for unusable parameters
    gaussian = model.emission == "gaussian"
    return {
        "params": model.to_dict(),
        "n_features": model.n_features if gaussian else None,
        "emission": model.emission,
        "covariance_type": model.covariance_type if gaussian else None,
    }


def load(content: dict[str, Any]) -> HmmModel:
    return HmmModel.of(content["params"], content["emission"], content.get("covariance_type") or "diag")


def observations(request: ScoreRequest, model: HmmModel, dataset: Any) -> Sequences:
    """The sequences sent, in the model's terms (its alphabet, or rows of its dimension)."""
    sequences = request.sequences
    if sequences is None or any(isinstance(s, str) for s in sequences):
        raise InvalidParameterError(
            "an hmm model takes sequences as lists of symbols, numbers or rows (not strings, points or datasets)",
            "sequences",
        )
    return model.encode(list(sequences))


def predict(model: HmmModel, sequences: Sequences, responsibilities: bool) -> dict[str, Any]:
    return model.predict(sequences, responsibilities)


def score(model: HmmModel, sequences: Sequences) -> NDArray[np.float64]:
    return model.score(sequences)


def sample(model: HmmModel, request: SampleRequest, seed: int) -> dict[str, Any]:
    values, states = model.sample(request.n, seed)
    return {"sequences": [values], "labels": [states]}


MODEL_USE = ModelUse(
    import_request=HmmModelImport,
    content_of_import=content_of_import,
    import_size=lambda request: (len(request.params.start), 1),
    load=load,
    observations=observations,
    count=lambda sequences: sequences.n_steps,
    sample=sample,
    sample_size=lambda model, request: request.n * (model.n_features + 1),
    predict=predict,
    score=score,
)

FAMILY = Family(
    kind="hmm",
    title="a hidden Markov model to sequences",
    description="Estimate start, transition and emission probabilities (categorical symbols, or Gaussian numbers "
    "or rows) of a K-state hidden Markov chain from several sequences by Baum-Welch; labels are Viterbi paths.",
    request=HmmFitRequest,
    result=HmmFitResult,
    examples=HMM_EXAMPLES,
    result_examples=load_result_examples("hmm"),
    make_task=make_task,
    check=check,
    summarise=summarise,
    solve=solve,
    render=render,
    keep=keep,
    use=MODEL_USE,
    plot=hmm_plot.draw,
    plot_data=hmm_plot.picture_data,
)
