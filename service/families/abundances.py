"""The abundances family: transcript abundances from equivalence classes of reads (kallisto's EM)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from service.em.abundances import AbundanceParams, TranscriptAbundances, incidence_from_arrays
from service.em.abundances_use import AbundanceModel
from service.em.errors import DegenerateDataError, InvalidParameterError
from service.em.loop import EMOptions, FitOutcome, Hooks, run_em
from service.families.base import Family, ModelUse
from service.families.limits import Footprint, check_size, em_options
from service.families.render import common_fields, dumps
from service.plots import bars
from service.schemas.abundances import (
    ABUNDANCE_EXAMPLES,
    AbundanceFitRequest,
    AbundanceFitResult,
    AbundanceModelImport,
    ClassOfReads,
    EquivalenceClass,
)
from service.schemas.models import SampleRequest, ScoreRequest
from service.schemas.results import load_result_examples
from service.settings import Settings

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class AbundanceTask:
    options: EMOptions
    names: list[str]
    lengths: FloatArray
    indptr: IntArray  # the incidence matrix's CSR rows: classes x targets
    indices: IntArray
    counts: FloatArray
    init_rho: FloatArray | None = None
    random_starts: bool = False

    @property
    def work_per_iteration(self) -> int:
        return int(self.indices.size + self.counts.size + self.lengths.size)

    @property
    def footprint(self) -> Footprint:
        n_targets, n_classes, n_pairs, options = self.lengths.size, self.counts.size, self.indices.size, self.options
        n_params = 3 * n_targets  # est_counts, tpm, rho
        return Footprint(
            # M and M^T (data, index, row pointers: 8 + 8 + 8 bytes per pair), the fingerprints of M^T's rows,
            # six class vectors (counts, probabilities, logs, ratios, temporaries) and eight target vectors.
            arrays_bytes=8 * (3 * 2 * n_pairs + 2 * (n_classes + n_targets) + 6 * n_classes + 8 * n_targets),
            trace_numbers=options.max_iter * n_params if options.trace == "params" else 0,
            result_numbers=n_params + n_targets,  # + lengths (names are strings of up to 256 characters)
            trace_entries=options.max_iter if options.trace != "none" else 0,
        )


@dataclass
class AbundanceSolution:
    outcome: FitOutcome[AbundanceParams]
    params: dict[str, Any]
    n_reads: int


def target_indices(names: list[str], field: str = "targets") -> dict[str, int]:
    """Name -> position, refusing a name given twice."""
    index: dict[str, int] = {}
    for position, name in enumerate(names):
        if name in index:
            raise InvalidParameterError(
                f"target name {name!r} is given twice (positions {index[name]} and {position}); names must be unique",
                f"{field}.{position}" + (".name" if field == "targets" else ""),
            )
        index[name] = position
    return index


def class_incidence(
    classes: Sequence[EquivalenceClass | ClassOfReads], index: dict[str, int], field: str = "classes"
) -> tuple[IntArray, IntArray]:
    """The CSR row pointers and target indices of ``classes``, each name checked (unknown, repeated)."""
    indptr = np.zeros(len(classes) + 1, dtype=np.int64)
    flat: list[int] = []
    for c, eq_class in enumerate(classes):
        start = len(flat)
        for position, name in enumerate(eq_class.targets):
            t = index.get(name)
            if t is None:
                raise InvalidParameterError(
                    f"classes[{c}] names target {name!r}, which is not among targets", f"{field}.{c}.targets.{position}"
                )
            flat.append(t)
        members = flat[start:]
        if len(set(members)) != len(members):
            repeated = next(name for name in eq_class.targets if eq_class.targets.count(name) > 1)
            raise InvalidParameterError(
                f"classes[{c}] names target {repeated!r} twice; a class is a set of targets", f"{field}.{c}.targets"
            )
        indptr[c + 1] = len(flat)
    return indptr, np.asarray(flat, dtype=np.int64)


def make_task(request: AbundanceFitRequest, settings: Settings, default_time_limit_s: float) -> AbundanceTask:
    """Names to indices and the incidence's index arrays, within the server's caps."""
    # Targets are the components (as a kept model's predictions count them), under their own cap: a transcriptome
    # has tens of thousands. The classes' target lists are the observations a pass reads, capped as points are.
    check_size(
        settings, field="targets", n_observations=1, n_components=len(request.targets), components_field="targets",
        max_components=settings.max_targets,
    )  # fmt: skip
    check_size(settings, field="classes", n_observations=max(len(request.classes), request.n_pairs), n_components=1)
    names = [target.name for target in request.targets]
    index = target_indices(names)
    indptr, indices = class_incidence(request.classes, index)
    counts = np.array([c.count for c in request.classes], dtype=np.float64)
    if not counts.any():
        raise DegenerateDataError("every class count is 0: there are no reads to fit", "classes")
    return AbundanceTask(
        options=em_options(request, settings, default_time_limit_s),
        names=names,
        lengths=np.array([target.length for target in request.targets], dtype=np.float64),
        indptr=indptr,
        indices=indices,
        counts=counts,
        init_rho=None if request.init is None else np.asarray(request.init.rho, dtype=np.float64),
        random_starts=request.n_init > 1 if request.random_start is None else request.random_start,
    )


def _model(task: AbundanceTask) -> TranscriptAbundances:
    incidence = incidence_from_arrays(task.indptr, task.indices, task.lengths.size)
    return TranscriptAbundances(task.lengths, incidence, task.counts, task.init_rho, task.names, task.random_starts)


def check(task: AbundanceTask) -> None:
    """init.rho's length and sum (and that it gives every class with reads a chance), before queueing."""
    if task.init_rho is not None:
        _model(task)  # the model checks init.rho against the classes; building it is one pass over the pairs


def solve(task: AbundanceTask, hooks: Hooks | None = None) -> AbundanceSolution:
    model = _model(task)
    outcome = run_em(model, replace(task.options, canonical_order=False), hooks)
    params = {"targets": task.names, "lengths": task.lengths, **model.to_dict(outcome.params)}
    return AbundanceSolution(outcome, params, round(model.n_reads))


def render(solution: AbundanceSolution, job_id: str) -> bytes:
    """The ``AbundanceFitResult`` JSON of a solved fit."""
    return dumps(
        {
            "model": "abundances",
            "params": solution.params,
            "n_reads": solution.n_reads,
            **common_fields(solution.outcome, job_id),
        }
    )


def summarise(request: AbundanceFitRequest) -> dict[str, Any]:
    return {
        "n_targets": len(request.targets),
        "n_classes": len(request.classes),
        "n_reads": sum(c.count for c in request.classes),
        **request.options_summary(),
    }


# --- the kept model ---


def keep(solution: AbundanceSolution) -> dict[str, Any]:
    return {"params": solution.params, "n_features": None, "log_likelihood": solution.outcome.log_likelihood}


def content_of_import(request: AbundanceModelImport) -> dict[str, Any]:
    params = request.params
    model = AbundanceModel.of(params.targets, params.lengths, params.rho)  # a 422 for unusable parameters
    # est_counts, when sent, only say how many reads the abundances came from.
    n_reads = sum(params.est_counts) if params.est_counts else 1.0
    return {"params": model.to_dict(n_reads), "n_features": None}


def load(content: dict[str, Any]) -> AbundanceModel:
    params = content["params"]
    return AbundanceModel.of(params["targets"], params["lengths"], params["rho"])


def observations(request: ScoreRequest, model: AbundanceModel, dataset: FloatArray | None) -> sp.csr_matrix:
    """The classes sent, as a classes x targets incidence matrix over the model's targets."""
    if request.classes is None:
        raise InvalidParameterError("an abundances model takes classes (lists of target names)", "classes")
    indptr, indices = class_incidence(request.classes, model.index)
    return incidence_from_arrays(indptr, indices, len(model.names))


def sample(model: AbundanceModel, request: SampleRequest, seed: int) -> dict[str, Any]:
    labels = model.sample(request.n, seed)
    return {"targets": [model.names[t] for t in labels], "labels": labels}


MODEL_USE = ModelUse(
    import_request=AbundanceModelImport,
    content_of_import=content_of_import,
    import_size=lambda request: (len(request.params.targets), 1),
    load=load,
    observations=observations,
    count=lambda incidence: int(incidence.shape[0]),
    log_joint=lambda model, incidence: model.log_joint(incidence),
    sample=sample,
    sample_size=lambda model, request: request.n,
    components_cap="max_targets",
)

FAMILY = Family(
    kind="abundances",
    title="transcript abundances",
    description="Estimate each target's share of the reads (est_counts, TPM) from equivalence classes of reads "
    "with counts, by the EM of kallisto and salmon.",
    request=AbundanceFitRequest,
    result=AbundanceFitResult,
    examples=ABUNDANCE_EXAMPLES,
    result_examples=load_result_examples("abundances"),
    make_task=make_task,
    check=check,
    summarise=summarise,
    solve=solve,
    render=render,
    keep=keep,
    use=MODEL_USE,
    plot=bars.draw_abundances,
)
