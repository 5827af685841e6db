"""K-coin binomial mixture (Do & Batzoglou 2008, generalised): starts, E-step, M-step, log-likelihood.

Each experiment is a run of flips of one unknown coin; we see only its heads and tails counts.
Everything is in log space, so experiments of millions of flips neither underflow nor overflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import logsumexp, xlogy

from service.em.errors import DegenerateDataError, InvalidParameterError
from service.em.seeding import kmeans_plus_plus

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class CoinParams:
    biases: FloatArray  # P(heads) per coin, shape (K,)
    weights: FloatArray  # mixing weights, shape (K,), sum 1


def parse_sequences(sequences: list[str]) -> tuple[FloatArray, FloatArray]:
    """Heads and tails counts per experiment from ``"HTTH"``-style strings (any case, spaces ignored)."""
    heads = np.empty(len(sequences))
    tails = np.empty(len(sequences))
    for i, raw in enumerate(sequences):
        flips = raw.replace(" ", "").upper()
        n_heads, n_tails = flips.count("H"), flips.count("T")
        if n_heads + n_tails != len(flips):
            bad = next(c for c in flips if c not in "HT")
            position = raw.upper().index(bad)
            raise InvalidParameterError(
                f"sequences[{i}] has {bad!r} at position {position}; only H and T (any case) and spaces are allowed",
                f"sequences.{i}",
            )
        if not flips:
            raise InvalidParameterError(f"sequences[{i}] has no flips", f"sequences.{i}")
        heads[i], tails[i] = n_heads, n_tails
    return heads, tails


class CoinMixture:
    """Binomial mixture over experiments; fills the hooks of :class:`service.em.loop.EMModel`."""

    def __init__(
        self,
        heads: FloatArray,
        tails: FloatArray,
        n_coins: int,
        fit_weights: bool = False,
        weights: FloatArray | None = None,
        biases: FloatArray | None = None,
    ) -> None:
        heads = np.asarray(heads, dtype=np.float64)
        tails = np.asarray(tails, dtype=np.float64)
        if heads.ndim != 1 or heads.shape != tails.shape or heads.size == 0:
            raise InvalidParameterError("heads and tails must be equal-length, non-empty 1-D arrays", "counts")
        if np.any(heads < 0) or np.any(tails < 0) or np.any(heads + tails < 1):
            raise InvalidParameterError("every experiment needs heads >= 0, tails >= 0 and at least one flip", "counts")
        if n_coins < 1:
            raise InvalidParameterError(f"n_coins must be at least 1, got {n_coins}", "n_coins")
        if n_coins > heads.size:
            raise DegenerateDataError(
                f"n_coins is {n_coins} but there are only {heads.size} experiments; "
                "use at most one coin per experiment",
                "n_coins",
            )
        self.heads, self.tails, self.n_coins, self.fit_weights = heads, tails, n_coins, fit_weights
        self.flips = heads + tails
        self.fixed_weights = (
            np.full(n_coins, 1.0 / n_coins) if weights is None else check_weights(weights, n_coins, "init.weights")
        )
        self.given_biases = None if biases is None else self._check_biases(biases)

    @property
    def n_observations(self) -> int:
        return int(self.heads.size)

    def _check_biases(self, biases: FloatArray) -> FloatArray:
        biases = np.asarray(biases, dtype=np.float64)
        if biases.shape != (self.n_coins,):
            raise InvalidParameterError(
                f"init.biases has {biases.size} values, expected n_coins = {self.n_coins}", "init.biases"
            )
        if not np.all((biases > 0) & (biases < 1)):
            raise InvalidParameterError("init.biases must each lie strictly between 0 and 1", "init.biases")
        return biases

    def initialize(self, rng: np.random.Generator) -> CoinParams:
        if self.given_biases is not None:
            return CoinParams(biases=self.given_biases, weights=self.fixed_weights)
        return CoinParams(biases=self._seed_biases(rng), weights=self.fixed_weights)

    def _seed_biases(self, rng: np.random.Generator) -> FloatArray:
        """k-means++ over the experiments' head proportions: starts near distinct groups of experiments.

        A blind uniform start can leave a coin owning no experiment when experiments are long (the
        responsibilities are then nearly 0/1) and EM never recovers; seeds drawn from the data do not.
        One draw per seed (the plain algorithm) keeps the random stream, and so every seed's fit, of the
        coins' own seeder before it was shared. Experiments with fewer distinct proportions than coins
        now start the surplus coins on repeated proportions (they used to start at a random bias).
        """
        proportions = (self.heads + 0.5) / (self.flips + 1.0)  # smoothed: never exactly 0 or 1
        return proportions[kmeans_plus_plus(proportions[:, None], self.n_coins, rng, n_trials=1)]

    def _log_joint(self, params: CoinParams) -> FloatArray:
        # log P(experiment i, coin k); xlogy makes 0 * log 0 = 0 for a coin at bias 0 or 1.
        log_heads = xlogy(self.heads[:, None], params.biases[None, :])
        log_tails = xlogy(self.tails[:, None], 1.0 - params.biases[None, :])
        with np.errstate(divide="ignore"):  # a zero weight is a legal, impossible coin: log 0 = -inf
            return log_heads + log_tails + np.log(params.weights)[None, :]  # type: ignore[no-any-return]

    def e_step(self, params: CoinParams) -> tuple[float, FloatArray]:
        """Log-likelihood and the n x K log-responsibilities (small enough to hand to the M-step whole)."""
        log_joint = self._log_joint(params)
        log_norm = logsumexp(log_joint, axis=1)
        return float(log_norm.sum()), log_joint - log_norm[:, None]

    def log_responsibilities(self, params: CoinParams) -> FloatArray:
        return self.e_step(params)[1]

    def m_step(self, log_resp: FloatArray, params: CoinParams) -> tuple[CoinParams, list[str]]:
        resp = np.exp(log_resp)
        expected_heads = resp.T @ self.heads
        expected_flips = resp.T @ self.flips
        warnings: list[str] = []
        empty = expected_flips <= 0
        if np.any(empty):
            # A coin no experiment is attributed to keeps its bias: there is no evidence to move it.
            warnings.append(
                f"coin(s) {np.flatnonzero(empty).tolist()} explain no experiment; their bias was left unchanged"
            )
        biases = np.where(empty, params.biases, expected_heads / np.where(empty, 1.0, expected_flips))
        weights = resp.mean(axis=0) if self.fit_weights else params.weights
        return CoinParams(biases=biases, weights=weights / weights.sum()), warnings

    def canonical_order(self, params: CoinParams) -> NDArray[np.intp]:
        return np.argsort(-params.biases, kind="stable")

    def permute(self, params: CoinParams, order: NDArray[np.intp]) -> CoinParams:
        return CoinParams(biases=params.biases[order], weights=params.weights[order])

    def to_dict(self, params: CoinParams) -> dict[str, Any]:
        return {"biases": params.biases.tolist(), "weights": params.weights.tolist()}


def check_weights(weights: FloatArray, n_components: int, field: str) -> FloatArray:
    """Mixing weights of the right length, non-negative, summing to 1 (renormalised within 1e-6)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_components,):
        raise InvalidParameterError(f"{field} has {w.size} values, expected {n_components}", field)
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise InvalidParameterError(f"{field} must be finite and >= 0", field)
    if abs(w.sum() - 1.0) > 1e-6:
        raise InvalidParameterError(f"{field} must sum to 1, they sum to {w.sum():.6g}", field)
    normalised: FloatArray = w / w.sum()
    return normalised
