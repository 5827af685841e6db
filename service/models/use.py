"""A kept model used on observations: predictions, scores and samples as the API answers them.

Family-neutral: the family's :class:`~service.families.base.ModelUse` says what its model and observations
are; this turns its (n, K) log-joint into labels, responsibilities and log-likelihoods (refusing, as a 422,
observations the model gives no probability at all, rather than answer -inf or NaN).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.em.use import predict
from service.families.base import ModelUse


def predictions(use: ModelUse, model: Any, observations: Any, return_responsibilities: bool) -> dict[str, Any]:
    if use.predict is not None:
        return use.predict(model, observations, return_responsibilities)
    outcome = predict(_log_joint(use, model, observations), responsibilities=return_responsibilities, scores=False)
    return {"labels": outcome.labels, "responsibilities": outcome.responsibilities}


def scores(use: ModelUse, model: Any, observations: Any) -> dict[str, Any]:
    per_observation: NDArray[np.float64] | None
    if use.score is not None:
        per_observation = use.score(model, observations)
    else:
        per_observation = predict(_log_joint(use, model, observations), responsibilities=False).log_likelihood
    assert per_observation is not None
    total = float(np.sum(per_observation))
    return {
        "log_likelihood": total,
        "mean_log_likelihood": total / len(per_observation),
        "per_observation": per_observation,
    }


def sample(use: ModelUse, model: Any, request: Any, seed: int) -> dict[str, Any]:
    return {**use.sample(model, request, seed), "seed": seed}


def _log_joint(use: ModelUse, model: Any, observations: Any) -> Any:
    assert use.log_joint is not None, "a family without log_joint answers predict and score itself"
    with np.errstate(over="ignore", invalid="ignore"):  # far-off points: -inf, refused by predict()
        return use.log_joint(model, observations)
