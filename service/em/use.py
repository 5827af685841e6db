"""Using fitted parameters on new data: log-densities, predictions, per-observation scores and samples.

What a kept model answers (``/v1/models/{id}/predict``, ``/score``, ``/sample``), for both families. The
Gaussian log-densities follow scikit-learn's definitions (``predict``, ``predict_proba``, ``score_samples``)
through the Cholesky factor of each precision; a coin experiment's likelihood includes the binomial
coefficient, so a score is a true log-probability of the counts seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import linalg
from scipy.special import gammaln, logsumexp

from service.em.errors import InvalidParameterError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

_LOG_2PI = np.log(2 * np.pi)


@dataclass(frozen=True)
class Prediction:
    labels: IntArray  # the most probable component of each observation
    responsibilities: FloatArray  # (n, K), rows sum to 1
    log_likelihood: FloatArray  # (n,): log p(observation) under the whole mixture


def predict(log_joint: FloatArray) -> Prediction:
    """From the (n, K) log p(observation, component): labels, responsibilities and per-observation scores."""
    per_observation = logsumexp(log_joint, axis=1)
    responsibilities = np.exp(log_joint - per_observation[:, None])
    return Prediction(np.argmax(log_joint, axis=1), responsibilities, per_observation)


# --- Gaussian mixtures ---


def gaussian_log_joint(
    X: FloatArray, weights: FloatArray, means: FloatArray, covariances: FloatArray, covariance_type: str
) -> FloatArray:
    """(n, K) log(w_k N(x | mean_k, cov_k)) for the four covariance types (shapes as scikit-learn's)."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    n, d = X.shape
    if means.shape[1] != d:
        raise InvalidParameterError(f"the points have {d} dimensions; the model expects {means.shape[1]}", "points")
    precisions_cholesky = _precisions_cholesky(covariances, covariance_type)
    K = len(means)
    log_density = np.empty((n, K))
    if covariance_type in ("full", "tied"):
        for k in range(K):
            chol = precisions_cholesky[k] if covariance_type == "full" else precisions_cholesky
            y = X @ chol - means[k] @ chol
            log_det = np.sum(np.log(np.diag(chol)))
            log_density[:, k] = log_det - 0.5 * (d * _LOG_2PI + np.einsum("ij,ij->i", y, y))
    else:
        chol = precisions_cholesky if covariance_type == "diag" else np.outer(precisions_cholesky, np.ones(d))
        for k in range(K):
            y = (X - means[k]) * chol[k]
            log_density[:, k] = np.sum(np.log(chol[k])) - 0.5 * (d * _LOG_2PI + np.einsum("ij,ij->i", y, y))
    with np.errstate(divide="ignore"):  # a zero weight: an impossible component, log 0 = -inf
        return log_density + np.log(weights)


def _precisions_cholesky(covariances: FloatArray, covariance_type: str) -> FloatArray:
    """The Cholesky factors of the precisions, as scikit-learn computes them (a 422 for a singular covariance)."""
    if covariance_type in ("diag", "spherical"):
        if not np.all(covariances > 0):
            raise InvalidParameterError("every variance must be positive", "params.covariances")
        return 1.0 / np.sqrt(covariances)
    stack = covariances if covariance_type == "full" else covariances[None]
    factors = np.empty_like(stack)
    for k, covariance in enumerate(stack):
        try:
            cov_chol = linalg.cholesky(covariance, lower=True)
        except linalg.LinAlgError:
            where = "the tied covariance" if covariance_type == "tied" else f"the covariance of component {k}"
            raise InvalidParameterError(f"{where} is not positive definite", "params.covariances") from None
        factors[k] = linalg.solve_triangular(cov_chol, np.eye(len(covariance)), lower=True).T
    return factors if covariance_type == "full" else factors[0]


def gaussian_sample(
    n: int, weights: FloatArray, means: FloatArray, covariances: FloatArray, covariance_type: str, seed: int
) -> tuple[FloatArray, IntArray]:
    """``n`` points drawn from the mixture, and the component each came from; the same seed, the same sample."""
    rng = np.random.default_rng(seed)
    K, d = means.shape
    labels = rng.choice(K, size=n, p=weights)
    points = np.empty((n, d))
    for k in range(K):
        members = np.flatnonzero(labels == k)
        if covariance_type == "full":
            factor = np.linalg.cholesky(covariances[k])
        elif covariance_type == "tied":
            factor = np.linalg.cholesky(covariances)
        elif covariance_type == "diag":
            factor = np.diag(np.sqrt(covariances[k]))
        else:
            factor = np.sqrt(covariances[k]) * np.eye(d)
        points[members] = means[k] + rng.standard_normal((len(members), d)) @ factor.T
    return points, labels


# --- coins ---


def coin_log_joint(heads: FloatArray, tails: FloatArray, biases: FloatArray, weights: FloatArray) -> FloatArray:
    """(n, K) log(w_k Binomial(heads | heads + tails, p_k)), the binomial coefficient included."""
    heads, tails = np.asarray(heads, dtype=np.float64), np.asarray(tails, dtype=np.float64)
    log_choose = gammaln(heads + tails + 1) - gammaln(heads + 1) - gammaln(tails + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # xlogy-style: 0 * log 0 is 0 (a coin of bias 1 can show no tails), a positive count times log 0 is -inf.
        log_heads = np.where(heads[:, None] > 0, heads[:, None] * np.log(biases), 0.0)
        log_tails = np.where(tails[:, None] > 0, tails[:, None] * np.log1p(-biases), 0.0)
        log_joint: FloatArray = log_choose[:, None] + log_heads + log_tails + np.log(weights)
    return log_joint


def coin_sample(n: int, flips: int, biases: FloatArray, weights: FloatArray, seed: int) -> tuple[IntArray, IntArray]:
    """``n`` experiments of ``flips`` flips each: heads counts and the coin of each; same seed, same sample."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(biases), size=n, p=weights)
    return rng.binomial(flips, biases[labels]), labels
