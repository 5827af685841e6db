"""The bootstrap of a fit's estimates: B refits of resampled data, spread over the workers, as percentile intervals.

A job asked for ``bootstrap`` first runs its fit as usual. Its result then gives the fitted parameters, and
the replicates are planned from them (:func:`plan`): B seeds, one per replicate, drawn from the request's seed,
split into batches that run as parts on the fit workers. Each replicate resamples the data the family's way
(:class:`Resampling`), refits from the fitted parameters (one start, no extras), and is put in the fit's
component order, so replicate k's "component 0" is the fit's component 0 and not whichever one the resample
happened to number first. :func:`combine` adds the percentile intervals to the fit's result.

Nothing here imports the web layer: batches run in the worker processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from scipy.optimize import linear_sum_assignment

from service.em.errors import EMError
from service.em.loop import Hooks
from service.families.render import dumps
from service.jobs.models import FollowUp, WorkItem

# Batches per fit worker, and the most refits in one: enough batches that progress events come often and a slow
# batch does not leave the other workers idle at the end, few enough that the task (the data, unless it is an
# uploaded dataset's file) is not sent to the workers many more times than there are workers.
_BATCHES_PER_WORKER = 4
_MOST_REFITS_PER_BATCH = 25


@dataclass(frozen=True)
class Resampling:
    """What a family's bootstrap needs. Both are module-level functions (they pickle by reference)."""

    # (the fit's task, its fitted params as the result shows them, a generator) -> a replicate's task: the data
    # resampled, started at the fitted params, one start, nothing computed beyond the parameters.
    replicate: Callable[[Any, dict[str, Any], np.random.Generator], Any]
    # (a replicate's params, the fit's params, the fit's task) -> the replicate's params in the fit's component order
    align: Callable[[dict[str, Any], dict[str, Any], Any], dict[str, Any]]
    params_of: Callable[[Any], dict[str, Any]]  # a solution's params, as the result shows them


@dataclass(frozen=True)
class BootstrapBatch:
    """A part of a bootstrap: the refits of one fit with these ``seeds`` (one each)."""

    task: Any
    fitted: dict[str, Any]
    seeds: list[int]
    resampling: Resampling
    solve: Callable[[Any, Hooks | None], Any]


@dataclass
class BatchSolution:
    replicates: list[dict[str, Any] | None] = field(default_factory=list)  # None: that refit failed
    reasons: list[str] = field(default_factory=list)


class _CancelOnly(Hooks):
    """A replicate's hooks: the job's cancel flag, without an iteration event per replicate iteration."""

    def __init__(self, hooks: Hooks | None) -> None:
        self.hooks = hooks

    def should_cancel(self) -> bool:
        return self.hooks is not None and self.hooks.should_cancel()


def solve_batch(batch: BootstrapBatch, hooks: Hooks | None = None) -> BatchSolution:
    """Refit every replicate of ``batch``; a replicate the solver refuses (a resample with too few distinct
    points, say) is counted as failed, not fatal to the bootstrap."""
    solution = BatchSolution()
    quiet = _CancelOnly(hooks)
    for seed in batch.seeds:
        if quiet.should_cancel():
            break
        try:
            replicate = batch.resampling.replicate(batch.task, batch.fitted, np.random.default_rng(seed))
            solved = batch.solve(replicate, quiet)
        except EMError as exc:
            solution.replicates.append(None)
            solution.reasons.append(exc.message)
            continue
        solution.replicates.append(batch.resampling.align(batch.resampling.params_of(solved), batch.fitted, batch.task))
    return solution


def render_batch(solution: BatchSolution, job_id: str) -> bytes:
    return dumps({"replicates": solution.replicates, "reasons": solution.reasons})


def replicate_seeds(seed: int, replicates: int) -> list[int]:
    """One seed per replicate, the same for the same request whatever the number of workers."""
    states = np.random.SeedSequence(seed).generate_state(replicates, dtype=np.uint64)
    return [int(s) for s in states]


def plan(
    task: Any,
    fitted: dict[str, Any],
    *,
    replicates: int,
    seed: int,
    workers: int,
    resampling: Resampling,
    solve: Callable[[Any, Hooks | None], Any],
    time_limit_s: float,
) -> list[WorkItem]:
    """The bootstrap's parts: batches of replicates, each within ``time_limit_s`` per replicate."""
    seeds = replicate_seeds(seed, replicates)
    n_batches = min(replicates, max(_BATCHES_PER_WORKER * workers, -(-replicates // _MOST_REFITS_PER_BATCH)))
    bounds = np.linspace(0, replicates, n_batches + 1).round().astype(int)
    return [
        WorkItem(
            solve_batch,
            BootstrapBatch(task, fitted, seeds[start:stop], resampling, solve),
            render_batch,
            time_limit_s * (stop - start),
            fit=False,
        )
        for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
        if stop > start
    ]


def follow_up(
    kind: str,
    resampling: Resampling,
    solve: Callable[[Any, Hooks | None], Any],
    task: Any,
    *,
    replicates: int,
    seed: int,
    level: float,
    workers: int,
    time_limit_s: float,
) -> FollowUp:
    """A job's bootstrap, run by the job manager once the job's fit has succeeded."""

    def parts(result: bytes) -> list[WorkItem]:
        fitted = orjson.loads(result)["params"]
        return plan(
            task, fitted, replicates=replicates, seed=seed, workers=workers, resampling=resampling, solve=solve,
            time_limit_s=time_limit_s,
        )  # fmt: skip

    # Running totals: each batch's result is read once as it ends, not every earlier one again.
    totals = {"done": 0, "replicates": replicates, "failed": 0}

    def progress(part: bytes) -> dict[str, Any]:
        batch = orjson.loads(part)["replicates"]
        totals["done"] += len(batch)
        totals["failed"] += sum(params is None for params in batch)
        return dict(totals)

    return FollowUp(
        kind=f"{kind}_bootstrap",
        parts=parts,
        combine=lambda result, done: combine(result, done, replicates=replicates, seed=seed, level=level),
        part_event="replicates",
        progress=progress,
    )


def combine(result: bytes, parts: list[bytes], *, replicates: int, seed: int, level: float) -> bytes:
    """The fit's result with its ``bootstrap`` field: percentile intervals over the replicates that succeeded,
    at ``level``, in the shape of ``params``."""
    fit = orjson.loads(result)
    batches = [orjson.loads(part) for part in parts]
    succeeded = [params for batch in batches for params in batch["replicates"] if params is not None]
    reasons = sorted({reason for batch in batches for reason in batch["reasons"]})
    tail = 100 * (1 - level) / 2
    summary: dict[str, Any] = {
        "replicates": replicates,
        "seed": seed,
        "level": level,
        "succeeded": len(succeeded),
        "lower": None,
        "upper": None,
        "standard_errors": None,
    }
    if len(succeeded) >= 2:
        summary["lower"] = _over_replicates(succeeded, lambda v: np.percentile(v, tail, axis=0))
        summary["upper"] = _over_replicates(succeeded, lambda v: np.percentile(v, 100 - tail, axis=0))
        summary["standard_errors"] = _over_replicates(succeeded, lambda v: np.std(v, axis=0, ddof=1))
    warnings = fit.setdefault("warnings", [])
    if len(succeeded) < replicates:
        failed = replicates - len(succeeded)
        warnings.append(
            f"bootstrap: {failed} of {replicates} refits failed and are left out of the intervals"
            + (f" ({'; '.join(reasons[:3])})" if reasons else "")
        )
    fit["bootstrap"] = summary
    return dumps(fit)


def _over_replicates(replicates: list[dict[str, Any]], statistic: Callable[[np.ndarray], np.ndarray]) -> Any:
    """``statistic`` over the replicates (axis 0) of every parameter, in the parameters' own nesting."""

    def over(values: list[Any]) -> Any:
        if isinstance(values[0], dict):
            return {key: over([value[key] for value in values]) for key in values[0]}
        return statistic(np.asarray(values, dtype=np.float64)).tolist()

    return over(replicates)


def solution_params(solution: Any) -> dict[str, Any]:
    """The ``params_of`` of a family whose solution keeps its params as the result shows them (coins, gaussian)."""
    params: dict[str, Any] = solution.params
    return params


def matched_order(replicate: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """The replicate's components in the fit's order: the assignment of least total squared distance between
    their (K, ...) parameters (Hungarian algorithm). ``order[k]`` is the replicate's match of fitted k."""
    K = len(fitted)
    distance = np.sum((fitted.reshape(K, 1, -1) - replicate.reshape(1, K, -1)) ** 2, axis=2)
    rows, columns = linear_sum_assignment(distance)
    order: np.ndarray = columns[np.argsort(rows)]
    return order
