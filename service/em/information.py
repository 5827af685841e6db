"""Standard errors of EM estimates from the observed information (Louis's identity, exact).

For a latent-class model the observed-data log-likelihood of observation i is log sum_k exp(a_ik), with
a_ik = log p(x_i, z_i = k | theta) the complete-data log-likelihood. Its Hessian is exactly

    d2 l_i = sum_k r_ik (d2 a_ik + s_ik s_ik^T) - g_i g_i^T,   s_ik = d a_ik,  g_i = sum_k r_ik s_ik

(Louis 1982, observation by observation), so the observed information -sum_i d2 l_i needs the complete-data
scores and the responsibility-weighted complete-data Hessian, both in closed form per family: no finite
differences, no step to guess. Parameters are the *free* ones (weights on the simplex lose their last
entry, which is 1 minus the others); the covariance of the estimates is the information's inverse, and
reported quantities that are linear in the free ones (the last weight) get theirs by the same map.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import linalg

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

# The information is singular (to working precision) when its smallest eigenvalue is below this fraction of
# its largest: the inverse's entries would then be noise of order 1 / (eps * condition).
_SINGULAR_RATIO = 1e-12


@dataclass(frozen=True)
class Reported:
    """Reported quantities as a linear map of some of the free parameters: ``matrix @ theta[columns]``, or
    (no matrix) the free parameters at ``columns`` themselves. Kept this small on purpose: a dense map over every
    free parameter would hold (reported x free) numbers, gigabytes for a large full-covariance mixture."""

    columns: IntArray
    matrix: FloatArray | None = None


@dataclass(frozen=True)
class Uncertainty:
    """Covariance of the free parameters' estimates (None when undefined, with the reason in ``warnings``)."""

    names: list[str]
    covariance: FloatArray | None
    warnings: list[str]

    def errors_of(self, reported: Reported) -> FloatArray | None:
        """Standard errors of the ``reported`` quantities."""
        if self.covariance is None:
            return None
        if reported.matrix is None:
            variances = np.diagonal(self.covariance)[reported.columns]
        else:
            block = self.covariance[np.ix_(reported.columns, reported.columns)]
            variances = np.einsum("rp,pq,rq->r", reported.matrix, block, reported.matrix)
        errors: FloatArray = np.sqrt(np.maximum(variances, 0.0))
        return errors


@dataclass
class LouisSums:
    """Running sums of Louis's identity over row chunks: sum_i sum_k r s s^T and sum_i g g^T."""

    n_parameters: int

    def __post_init__(self) -> None:
        self.outer = np.zeros((self.n_parameters, self.n_parameters))
        self.mean_outer = np.zeros((self.n_parameters, self.n_parameters))

    def add_component(self, resp: FloatArray, scores: FloatArray, columns: IntArray) -> None:
        """One component's rows: responsibilities (m,) and complete-data scores (m, len(columns)) on ``columns``."""
        self.outer[np.ix_(columns, columns)] += scores.T @ (scores * resp[:, None])

    def add_mean_scores(self, mean_scores: FloatArray) -> None:
        """The rows' g_i = sum_k r_ik s_ik, (m, n_parameters)."""
        self.mean_outer += mean_scores.T @ mean_scores

    def information(self, expected_hessian: FloatArray) -> FloatArray:
        """-sum_i d2 l_i from the sums and sum_i sum_k r_ik d2 a_ik."""
        information: FloatArray = -(expected_hessian + self.outer - self.mean_outer)
        return (information + information.T) / 2


def covariance_of_estimates(information: FloatArray, names: list[str], converged: bool) -> Uncertainty:
    """The inverse of the observed information, or None and a warning saying why it has none.

    A fit that did not converge is not at a maximum: the curvature there says nothing about the estimate's
    spread, so no errors are given. A singular or indefinite information (a parameter on its boundary, an
    empty component, a flat direction of the likelihood) has no inverse worth reporting either.
    """
    if not converged:
        return Uncertainty(
            names, None, ["standard errors are not given: the fit did not converge, so its parameters are not "
                          "a maximum of the likelihood (raise max_iter, or tol)"]
        )  # fmt: skip
    if not np.all(np.isfinite(information)):
        return Uncertainty(names, None, ["standard errors are not given: the observed information is not finite"])
    eigenvalues = np.linalg.eigvalsh(information)
    largest = float(np.max(np.abs(eigenvalues))) if eigenvalues.size else 0.0
    smallest = float(eigenvalues[0]) if eigenvalues.size else 0.0
    if largest == 0 or smallest <= _SINGULAR_RATIO * largest:
        kind = "indefinite" if smallest < -_SINGULAR_RATIO * largest else "singular"
        return Uncertainty(
            names, None, [f"standard errors are not given: the observed information is {kind} (smallest "
                          f"eigenvalue {smallest:.3g}, largest {largest:.3g}): a parameter on its boundary, an "
                          "empty component or a direction the data do not determine"]
        )  # fmt: skip
    factor = linalg.cho_factor(information, lower=True)
    covariance: FloatArray = linalg.cho_solve(factor, np.eye(len(information)))
    return Uncertainty(names, (covariance + covariance.T) / 2, [])


def simplex_scores(weights: FloatArray) -> FloatArray:
    """d log w_k / d(free weights) for every k: (K, K-1). The free weights are w_0..w_{K-2}, w_{K-1} = 1 - sum."""
    K = len(weights)
    scores = np.zeros((K, K - 1))
    scores[np.arange(K - 1), np.arange(K - 1)] = 1.0 / weights[: K - 1]
    scores[K - 1, :] = -1.0 / weights[K - 1]
    return scores


def simplex_hessian(weights: FloatArray, counts: FloatArray) -> FloatArray:
    """sum_k N_k d2 log w_k over the free weights, (K-1, K-1), for expected counts N_k = sum_i r_ik."""
    K = len(weights)
    hessian = np.full((K - 1, K - 1), -counts[K - 1] / weights[K - 1] ** 2)
    hessian[np.arange(K - 1), np.arange(K - 1)] -= counts[: K - 1] / weights[: K - 1] ** 2
    return hessian


def simplex_map(n_weights: int) -> FloatArray:
    """The K reported weights as a linear map of the K-1 free ones (the constant 1 aside): (K, K-1)."""
    linear = np.zeros((n_weights, n_weights - 1))
    linear[np.arange(n_weights - 1), np.arange(n_weights - 1)] = 1.0
    linear[n_weights - 1, :] = -1.0
    return linear


def chunked(n_rows: int, rows_per_chunk: int = 8192) -> Iterable[slice]:
    return (slice(start, min(start + rows_per_chunk, n_rows)) for start in range(0, n_rows, rows_per_chunk))
