"""Using fitted parameters on new data: log-densities, predictions, per-observation scores and samples.

What a kept model answers (``/v1/models/{id}/predict``, ``/score``, ``/sample``), for both families. A model is
built once from its parameters (validated: a 422 names what is unusable) and then used many times. The
Gaussian log-densities follow scikit-learn's definitions (``predict``, ``predict_proba``, ``score_samples``)
through the Cholesky factor of each precision; a coin experiment's likelihood includes the binomial
coefficient, so a score is a true log-probability of the counts seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import linalg
from scipy.special import gammaln

from service.em.blocks import row_blocks
from service.em.coins import check_weights
from service.em.errors import InvalidParameterError
from service.em.gaussian_checks import COVARIANCE_TYPES, CovarianceType, as_float_array, shape_covariances

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

_LOG_2PI = np.log(2 * np.pi)


# Rows per block of a log-density pass: a (rows x K*d) product stays within a few MB of cache-friendly memory.
_BLOCK_ROWS = 16_384


@dataclass(frozen=True)
class Prediction:
    labels: IntArray  # the most probable component of each observation
    responsibilities: FloatArray | None  # (n, K), rows sum to 1 (when asked for)
    log_likelihood: FloatArray | None  # (n,): log p(observation) under the whole mixture (when asked for)


class ImpossibleObservation(InvalidParameterError):
    """An observation the model gives probability 0 (or one too small to represent)."""


def predict(log_joint: FloatArray, responsibilities: bool = True, scores: bool = True) -> Prediction:
    """From the (n, K) log p(observation, component), which it overwrites: labels, and when asked the
    responsibilities and per-observation log-likelihoods (each computed only if asked: at 10^6 x K the
    exponentials cost more than the labels)."""
    labels = np.argmax(log_joint, axis=1)
    top = log_joint[np.arange(len(labels)), labels]
    if not np.all(np.isfinite(top)):
        first = int(np.flatnonzero(~np.isfinite(top))[0])
        raise ImpossibleObservation(
            f"observation {first} has probability 0 under the model (or lies too far from it to compute one)",
            "points",
        )
    if not (responsibilities or scores):
        return Prediction(labels, None, None)
    shifted = np.subtract(log_joint, top[:, None], out=log_joint)  # <= 0, the top of each row exactly 0
    np.exp(shifted, out=shifted)
    total = shifted.sum(axis=1)
    per_observation = top + np.log(total) if scores else None
    if responsibilities:
        shifted /= total[:, None]
    return Prediction(labels, shifted if responsibilities else None, per_observation)


# --- Gaussian mixtures ---


@dataclass(frozen=True)
class GaussianModel:
    """A Gaussian mixture's parameters in scikit-learn's shapes, with the Cholesky factors of the precisions."""

    weights: FloatArray  # (K,)
    means: FloatArray  # (K, d)
    covariances: FloatArray  # full (K, d, d), diag (K, d), spherical (K,), tied (d, d)
    covariance_type: CovarianceType
    precisions_cholesky: FloatArray

    @classmethod
    def of(cls, weights: Any, means: Any, covariances: Any, covariance_type: str) -> GaussianModel:
        """Checked parameters (an InvalidParameterError naming ``params.<field>`` otherwise)."""
        if covariance_type not in COVARIANCE_TYPES:
            raise InvalidParameterError(f"unknown covariance_type {covariance_type!r}", "covariance_type")
        kind: CovarianceType = covariance_type  # narrowed by the check above
        means_array = as_float_array(means, "params.means")
        if means_array.ndim == 1:  # 1-D data: a flat list of K means
            means_array = means_array[:, None]
        if means_array.ndim != 2 or means_array.size == 0:
            raise InvalidParameterError("params.means must be K rows of d numbers", "params.means")
        K, d = means_array.shape
        weights_array = check_weights(as_float_array(weights, "params.weights"), K, "params.weights")
        shaped = shape_covariances(covariances, K, d, kind, "params.covariances")
        return cls(weights_array, means_array, shaped, kind, _precisions_cholesky(shaped, kind))

    @property
    def n_features(self) -> int:
        return int(self.means.shape[1])

    def log_joint(self, X: FloatArray) -> FloatArray:
        """(n, K) log(w_k N(x | mean_k, cov_k))."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        n, d = X.shape
        if d != self.n_features:
            raise InvalidParameterError(
                f"the points have {d} dimensions; the model expects {self.n_features}", "points"
            )
        K, chol_all = len(self.means), self.precisions_cholesky
        log_density = np.empty((n, K))
        if self.covariance_type in ("full", "tied"):
            # y_k = (x - mean_k) @ chol_k for every k at once: one (rows x d) @ (d x K*d) product per block of
            # rows, then the squares summed per component (scikit-learn's arithmetic, in K times fewer passes).
            stack = chol_all if self.covariance_type == "full" else np.broadcast_to(chol_all, (K, d, d))
            factors = np.ascontiguousarray(stack.transpose(1, 0, 2).reshape(d, K * d))
            shifts = np.einsum("kd,kde->ke", self.means, stack).reshape(K * d)
            constants = np.sum(np.log(np.diagonal(stack, axis1=1, axis2=2)), axis=1) - 0.5 * d * _LOG_2PI
            for rows, block in row_blocks(X, _BLOCK_ROWS):  # an uploaded dataset's pages are handed back
                y = block @ factors
                y -= shifts
                np.square(y, out=y)
                log_density[rows] = constants - 0.5 * y.reshape(len(y), K, d).sum(axis=2)
        else:
            chol_rows = chol_all if self.covariance_type == "diag" else np.outer(chol_all, np.ones(d))
            for k in range(K):
                y = (X - self.means[k]) * chol_rows[k]
                log_density[:, k] = np.sum(np.log(chol_rows[k])) - 0.5 * (d * _LOG_2PI + np.einsum("ij,ij->i", y, y))
        with np.errstate(divide="ignore"):  # a zero weight: an impossible component, log 0 = -inf
            return log_density + np.log(self.weights)

    def sample(self, n: int, seed: int) -> tuple[FloatArray, IntArray]:
        """``n`` points drawn from the mixture, and the component each came from; same seed, same sample."""
        rng = np.random.default_rng(seed)
        K, d = self.means.shape
        labels = rng.choice(K, size=n, p=self.weights)
        points = np.empty((n, d))
        for k in range(K):
            members = np.flatnonzero(labels == k)
            if self.covariance_type == "full":
                factor = np.linalg.cholesky(self.covariances[k])
            elif self.covariance_type == "tied":
                factor = np.linalg.cholesky(self.covariances)
            elif self.covariance_type == "diag":
                factor = np.diag(np.sqrt(self.covariances[k]))
            else:
                factor = np.sqrt(self.covariances[k]) * np.eye(d)
            points[members] = self.means[k] + rng.standard_normal((len(members), d)) @ factor.T
        return points, labels


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


def gaussian_log_joint(
    X: FloatArray, weights: FloatArray, means: FloatArray, covariances: FloatArray, covariance_type: str
) -> FloatArray:
    """(n, K) log(w_k N(x | mean_k, cov_k)) for the four covariance types (shapes as scikit-learn's)."""
    return GaussianModel.of(weights, means, covariances, covariance_type).log_joint(X)


def gaussian_sample(
    n: int, weights: FloatArray, means: FloatArray, covariances: FloatArray, covariance_type: str, seed: int
) -> tuple[FloatArray, IntArray]:
    return GaussianModel.of(weights, means, covariances, covariance_type).sample(n, seed)


# --- coins ---


@dataclass(frozen=True)
class CoinModel:
    biases: FloatArray  # (K,) P(heads) of each coin, in [0, 1]
    weights: FloatArray  # (K,)

    @classmethod
    def of(cls, biases: Any, weights: Any | None) -> CoinModel:
        biases_array = as_float_array(biases, "params.biases")
        if biases_array.ndim != 1 or biases_array.size == 0:
            raise InvalidParameterError("params.biases must be a list of K numbers", "params.biases")
        if np.any(biases_array < 0) or np.any(biases_array > 1):
            raise InvalidParameterError("params.biases must each lie in [0, 1]", "params.biases")
        K = biases_array.size
        given = np.full(K, 1.0 / K) if weights is None else as_float_array(weights, "params.weights")
        return cls(biases_array, check_weights(given, K, "params.weights"))

    def log_joint(self, heads: FloatArray, tails: FloatArray) -> FloatArray:
        return coin_log_joint(heads, tails, self.biases, self.weights)

    def sample(self, n: int, flips: int, seed: int) -> tuple[NDArray[np.bool_], IntArray]:
        """``n`` experiments of ``flips`` flips each (True = heads), and the coin of each."""
        rng = np.random.default_rng(seed)
        labels = rng.choice(len(self.biases), size=n, p=self.weights)
        return rng.random((n, flips)) < self.biases[labels, None], labels


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
    outcomes, labels = CoinModel.of(biases, weights).sample(n, flips, seed)
    return outcomes.sum(axis=1), labels
