"""The alleles family: allele frequencies from phenotype counts by gene counting (peppered moth, ABO)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.em.alleles import (
    AlleleModel,
    AlleleParams,
    Genetics,
    check_frequencies,
    genetics_of,
    log_joint,
)
from service.em.alleles import sample as sample_individuals
from service.em.errors import InvalidParameterError
from service.em.information import Uncertainty
from service.em.loop import EMOptions, FitOutcome, Hooks, run_em
from service.families.base import Family, ModelUse
from service.families.bootstrap import Resampling
from service.families.limits import Footprint, check_size, em_options
from service.families.render import common_fields, dumps, uncertainty_fields
from service.plots import bars
from service.schemas.alleles import (
    ALLELE_EXAMPLES,
    AlleleFitRequest,
    AlleleFitResult,
    AlleleModelImport,
    PhenotypeDefinition,
)
from service.schemas.models import SampleRequest, ScoreRequest
from service.schemas.results import load_result_examples
from service.settings import Settings

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


@dataclass(frozen=True)
class AlleleTask:
    options: EMOptions
    alleles: list[str]
    phenotype_names: list[str]
    phenotype_genotypes: list[list[tuple[str, str]]]
    counts: FloatArray
    init_frequencies: FloatArray | None = None
    standard_errors: bool = False

    @property
    def n_genotypes(self) -> int:
        return len(self.alleles) * (len(self.alleles) + 1) // 2

    @property
    def work_per_iteration(self) -> int:
        return self.n_genotypes  # a few numpy calls on G numbers, whatever the counts

    @property
    def footprint(self) -> Footprint:
        A, G, F, options = len(self.alleles), self.n_genotypes, len(self.counts), self.options
        n_params = A + G
        return Footprint(
            # allele copies per genotype; posteriors; temporaries; each phenotype's gradient and Hessian
            arrays_bytes=8 * (G * A + F * G + 8 * G + (F + G) * A * (A + 1)),
            trace_numbers=options.max_iter * n_params if options.trace == "params" else 0,
            result_numbers=n_params + F * G,
            trace_entries=options.max_iter if options.trace != "none" else 0,
        )


@dataclass
class AlleleSolution:
    outcome: FitOutcome[AlleleParams]
    model: AlleleModel
    phenotype_names: list[str]
    phenotype_genotypes: list[list[tuple[str, str]]]
    uncertainty: Uncertainty | None = None
    uncertainty_maps: dict[str, Any] | None = None


def _genotypes_of(definitions: list[Any]) -> list[list[tuple[str, str]]]:
    return [[(pair[0], pair[1]) for pair in phenotype.genotypes] for phenotype in definitions]


def make_task(request: AlleleFitRequest, settings: Settings, default_time_limit_s: float) -> AlleleTask:
    n_alleles = len(request.alleles)
    check_size(
        settings, field="phenotypes", n_observations=len(request.phenotypes),
        n_components=n_alleles * (n_alleles + 1) // 2, components_field="alleles",
    )  # fmt: skip
    init = request.init
    return AlleleTask(
        options=em_options(request, settings, default_time_limit_s),
        alleles=list(request.alleles),
        phenotype_names=[p.name for p in request.phenotypes],
        phenotype_genotypes=_genotypes_of(request.phenotypes),
        counts=np.array([p.count for p in request.phenotypes], dtype=np.float64),
        init_frequencies=None if init is None else np.asarray(init.frequencies, dtype=np.float64),
        standard_errors=request.standard_errors,
    )


def _model(task: AlleleTask) -> AlleleModel:
    genetics = genetics_of(task.alleles, task.phenotype_genotypes, "phenotypes")
    init = None
    if task.init_frequencies is not None:
        init = check_frequencies(task.init_frequencies, len(task.alleles), "init.frequencies")
    return AlleleModel(genetics, task.counts, init)


def check(task: AlleleTask) -> None:
    """Every refusal the model would make: unknown alleles, a genotype in two phenotypes or none, bad init."""
    _model(task)


def solve(task: AlleleTask, hooks: Hooks | None = None) -> AlleleSolution:
    model = _model(task)
    outcome = run_em(model, task.options, hooks)
    solution = AlleleSolution(outcome, model, task.phenotype_names, task.phenotype_genotypes)
    if task.standard_errors:
        solution.uncertainty, solution.uncertainty_maps = model.uncertainty(outcome.params, outcome.converged)
        outcome.warnings.extend(solution.uncertainty.warnings)
    return solution


def render(solution: AlleleSolution, job_id: str) -> bytes:
    """The ``AlleleFitResult`` JSON of a solved fit."""
    model, outcome = solution.model, solution.outcome
    params = model.to_dict(outcome.params)
    genotype_names = model.genetics.genotype_names()
    inside = model.genetics.phenotype_of_genotype
    posteriors = {
        name: {genotype_names[g]: float(np.exp(outcome.log_resp[f, g])) for g in np.flatnonzero(inside == f).tolist()}
        for f, name in enumerate(solution.phenotype_names)
    }
    return dumps(
        {
            "model": "alleles",
            "alleles": model.genetics.alleles,
            "params": params,
            "n_observations": model.n_observations,
            "genotype_posteriors": posteriors,
            **uncertainty_fields(solution.uncertainty, solution.uncertainty_maps or {}, params),
            **common_fields(outcome, job_id),
        }
    )


def summarise(request: AlleleFitRequest) -> dict[str, Any]:
    return {
        "alleles": request.alleles,
        "n_phenotypes": len(request.phenotypes),
        "n_individuals": request.n_individuals,
        **request.options_summary(),
    }


# --- the kept model: frequencies, and the phenotypes they are seen through ---


@dataclass(frozen=True)
class KeptAlleles:
    genetics: Genetics
    frequencies: FloatArray
    phenotype_names: list[str]

    @property
    def n_components(self) -> int:
        """Predictions are over genotypes, in the order of ``genotype_frequencies``."""
        return self.genetics.n_genotypes


def _definitions(names: list[str], genotypes: list[list[tuple[str, str]]]) -> list[dict[str, Any]]:
    return [{"name": name, "genotypes": [list(g) for g in pairs]} for name, pairs in zip(names, genotypes, strict=True)]


def keep(solution: AlleleSolution) -> dict[str, Any]:
    model = solution.model
    return {
        "params": model.to_dict(solution.outcome.params),
        "n_features": None,
        "alleles": model.genetics.alleles,
        "phenotypes": _definitions(solution.phenotype_names, solution.phenotype_genotypes),
        "log_likelihood": solution.outcome.log_likelihood,
    }


def content_of_import(request: AlleleModelImport) -> dict[str, Any]:
    genotypes = _genotypes_of(request.phenotypes)
    genetics = genetics_of(request.alleles, genotypes, "phenotypes")  # a 422 unless they partition the genotypes
    frequencies = check_frequencies(request.params.frequencies, len(request.alleles), "params.frequencies")
    names = [p.name for p in request.phenotypes]
    return {
        "params": {
            "frequencies": frequencies,
            "genotype_frequencies": dict(
                zip(genetics.genotype_names(), genetics.genotype_probabilities(frequencies).tolist(), strict=True)
            ),
        },
        "n_features": None,
        "alleles": request.alleles,
        "phenotypes": _definitions(names, genotypes),
    }


def load(content: dict[str, Any]) -> KeptAlleles:
    definitions = [PhenotypeDefinition.model_validate(p) for p in content["phenotypes"]]
    genetics = genetics_of(content["alleles"], _genotypes_of(definitions), "phenotypes")
    frequencies = check_frequencies(content["params"]["frequencies"], len(content["alleles"]), "params.frequencies")
    return KeptAlleles(genetics, frequencies, [p.name for p in definitions])


def observations(request: ScoreRequest, model: KeptAlleles, dataset: FloatArray | None) -> IntArray:
    """The phenotype of each individual sent, as indices into the model's phenotypes."""
    if request.phenotypes is None:
        raise InvalidParameterError(
            "an alleles model takes phenotypes: the phenotype name of each individual", "phenotypes"
        )
    index = {name: f for f, name in enumerate(model.phenotype_names)}
    unknown = next((i for i, name in enumerate(request.phenotypes) if name not in index), None)
    if unknown is not None:
        raise InvalidParameterError(
            f"phenotypes[{unknown}] is {request.phenotypes[unknown]!r}, not one of the model's phenotypes "
            f"({', '.join(model.phenotype_names)})",
            f"phenotypes.{unknown}",
        )
    return np.array([index[name] for name in request.phenotypes], dtype=np.intp)


def model_log_joint(model: KeptAlleles, phenotypes: IntArray) -> FloatArray:
    return log_joint(model.genetics, model.frequencies, phenotypes)


def sample(model: KeptAlleles, request: SampleRequest, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    genotypes, phenotypes = sample_individuals(model.genetics, model.frequencies, request.n, rng)
    return {"phenotypes": [model.phenotype_names[f] for f in phenotypes.tolist()], "labels": genotypes}


MODEL_USE = ModelUse(
    import_request=AlleleModelImport,
    content_of_import=content_of_import,
    import_size=lambda request: (len(request.alleles) * (len(request.alleles) + 1) // 2, 1),
    load=load,
    observations=observations,
    count=len,
    log_joint=model_log_joint,
    sample=sample,
    sample_size=lambda model, request: request.n,
)

# --- the bootstrap ---


def replicate(task: AlleleTask, fitted: dict[str, Any], rng: np.random.Generator) -> AlleleTask:
    """The individuals resampled with replacement -- the phenotype counts redrawn from a multinomial with the
    observed proportions -- refitted from the fitted allele frequencies."""
    total = round(float(task.counts.sum()))
    counts = rng.multinomial(total, task.counts / task.counts.sum()).astype(np.float64)
    return replace(
        task,
        counts=counts,
        init_frequencies=np.asarray(fitted["frequencies"], dtype=np.float64),
        options=replace(task.options, n_init=1, trace="none"),
        standard_errors=False,
    )


def params_of(solution: AlleleSolution) -> dict[str, Any]:
    return solution.model.to_dict(solution.outcome.params)


def align(params: dict[str, Any], fitted: dict[str, Any], task: AlleleTask) -> dict[str, Any]:
    return params  # alleles are named: no order to match


FAMILY = Family(
    kind="alleles",
    title="allele frequencies from phenotype counts",
    description="Estimate allele frequencies under Hardy-Weinberg equilibrium from counts of phenotypes, each "
    "a set of genotypes (the peppered moth; ABO blood groups), by EM gene counting.",
    request=AlleleFitRequest,
    result=AlleleFitResult,
    examples=ALLELE_EXAMPLES,
    result_examples=load_result_examples("alleles"),
    make_task=make_task,
    check=check,
    summarise=summarise,
    solve=solve,
    render=render,
    keep=keep,
    use=MODEL_USE,
    resampling=Resampling(replicate, align, params_of),
    plot=bars.draw_alleles,
    plot_data=bars.allele_picture_data,
)
