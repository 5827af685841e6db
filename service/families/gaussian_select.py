"""Model selection for Gaussian mixtures: one fit per K x covariance type, the best by BIC, AIC or ICL.

Each candidate is an ordinary Gaussian fit (its own task, run on any worker, keeping its own model); this module
builds the candidates' tasks from a selection request, renders each candidate's line of the result, and picks the
best. Nothing here imports FastAPI: candidates render in the workers.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import numpy as np
from scipy.special import entr

from service.datasets.parse import as_rows
from service.families import gaussian
from service.families.limits import check_size, em_options
from service.families.render import dumps
from service.schemas.selection import GaussianSelectRequest
from service.settings import Settings

KIND = "gaussian_select"  # the jobs' kind; each candidate is a "gaussian" fit


def candidate_tasks(
    request: GaussianSelectRequest, settings: Settings, default_time_limit_s: float
) -> list[gaussian.GaussianTask]:
    """One task per K x covariance type, by covariance type then K, each with its own seed (derived from the
    request's, so the same request and seed give the same selection)."""
    X = as_rows(request.points_array())
    ks, types = request.k_values(), request.types()
    check_size(settings, field="points", n_observations=X.shape[0], n_features=X.shape[1], n_components=max(ks))
    options = replace(em_options(request, settings, default_time_limit_s), trace="none")
    base_seed = request.seed if request.seed is not None else random.getrandbits(63)
    seeds = np.random.SeedSequence(base_seed).generate_state(len(ks) * len(types), dtype=np.uint64)
    template = gaussian.GaussianTask(
        options=options, X=X, reg_covar=request.reg_covar, dtype=request.dtype, init_method=request.init_method,
        return_labels=False, data_file=request.dataset_file(),
    )  # fmt: skip
    pairs = [(covariance_type, k) for covariance_type in types for k in ks]
    return [
        replace(template, n_components=k, covariance_type=covariance_type, options=replace(options, seed=int(seed)))
        for (covariance_type, k), seed in zip(pairs, seeds, strict=True)
    ]


def check(tasks: list[gaussian.GaussianTask]) -> None:
    """The cheap checks of each covariance type's largest candidate (the smaller ones ask less of the data)."""
    largest: dict[str, gaussian.GaussianTask] = {}
    for task in tasks:
        if task.n_components >= largest.get(task.covariance_type, task).n_components:
            largest[task.covariance_type] = task
    for task in largest.values():
        gaussian.check(task)


def render_candidate(solution: gaussian.GaussianSolution, job_id: str) -> bytes:
    """A candidate's line of the selection result (its model is kept under ``job_id``)."""
    outcome = solution.outcome
    entropy = float(np.sum(entr(np.exp(outcome.log_resp))))
    return dumps(
        {
            "n_components": len(outcome.params.weights),
            "covariance_type": solution.covariance_type,
            "log_likelihood": outcome.log_likelihood,
            "bic": solution.bic,
            "aic": solution.aic,
            "icl": solution.bic + 2 * entropy,
            "n_parameters": solution.n_parameters,
            "converged": outcome.converged,
            "n_iter": outcome.n_iter,
            "stop_reason": outcome.stop_reason,
            "warnings": outcome.warnings,
            "degenerate": bool(solution.collapsed),
            "model_id": job_id,
        }
    )


def result(candidates: list[dict[str, Any]], criterion: str, job_id: str, elapsed_s: float) -> bytes:
    """The selection's result: every candidate, the best by ``criterion`` (the fewer components on a tie).

    A degenerate candidate (a component collapsed onto repeated values: its likelihood is unbounded, so its
    criterion only reflects reg_covar) cannot be best while any other candidate is not degenerate.
    """
    sound = [c for c in candidates if not c["degenerate"]] or candidates
    best = min(sound, key=lambda c: (c[criterion], c["n_components"]))
    warnings = [
        f"K={c['n_components']} {c['covariance_type']} was set aside: a component collapsed onto points that share "
        "one value (its likelihood is unbounded)"
        for c in candidates
        if c["degenerate"] and len(sound) < len(candidates)
    ]
    warnings += [
        f"K={c['n_components']} {c['covariance_type']} stopped before converging ({c['stop_reason']})"
        for c in candidates
        if not c["converged"]
    ]
    return dumps(
        {
            "model": "gaussian_selection",
            "criterion": criterion,
            "best": {k: best[k] for k in ("n_components", "covariance_type", "model_id")},
            "candidates": candidates,
            "warnings": warnings,
            "job_id": job_id,
            "elapsed_ms": elapsed_s * 1000.0,
        }
    )


def summarise(request: GaussianSelectRequest) -> dict[str, Any]:
    X = request.points_array()
    return {
        "n_points": int(X.shape[0]),
        "n_features": int(X.shape[1]) if X.ndim == 2 else 1,
        "n_components": request.k_values(),
        "covariance_types": request.types(),
        "criterion": request.criterion,
        **request.options_summary(),
    }
