"""K-coin binomial mixture (Do & Batzoglou 2008, generalised): starts, E-step, M-step, log-likelihood.

Each experiment is a run of flips of one unknown coin; we see only its heads and tails counts.
Everything is in log space, so experiments of millions of flips neither underflow nor overflow.

One pass per iteration, as for the Gaussians: log P(experiment, coin) for all coins is one product of the
(K x 3) table ``[log p, log(1 - p), log w]`` with the features ``[heads, tails, 1]`` (3 x n, the long axis
last), then one exp, and the M-step's sums (sum r heads, sum r tails, sum r) one more product with the
same features; no n x K array lives between the steps. Large fits run in row chunks over the cores.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from math import exp, log
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.em.chunks import map_chunks, row_chunks, sum_of_logs, weighted_sums
from service.em.errors import DegenerateDataError, InvalidParameterError
from service.em.information import (
    LouisSums,
    Reported,
    Uncertainty,
    chunked,
    covariance_of_estimates,
    simplex_hessian,
    simplex_map,
    simplex_scores,
)
from service.em.seeding import kmeans_plus_plus

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
# The scalar pass's M-step sums: sum r heads, sum r tails, sum r, one float per coin in each list.
ScalarSums = tuple[list[float], list[float], list[float]]

# Rows per chunk of a pass: a chunk's K x rows temporaries stay in cache, and a fit of fewer rows runs in
# one call with no thread pool. Measured on 2 cores (benchmarks/bench_em.py, n = 10^6, K = 2..5).
_CHUNK_ROWS = 1 << 15
# Fits of at most this many experiments take the small pass: a handful of numpy calls per step. On a few
# rows numpy's per-call overhead is the whole cost, and the chunked pass's tricks (long rows, a shifted exp,
# blocked logs) only pay on long arrays. A Do & Batzoglou fit's E-step: 42 us chunked, 19 us small.
_SMALL_ROWS = 512
# Fits of at most this many experiment x coin cells take the scalar pass: plain Python floats, no numpy call
# inside the loop. A numpy call costs a microsecond or two whatever its size, so on a handful of cells a
# Python loop is cheaper: a Do & Batzoglou iteration (E- and M-step) is ~40 us with the small pass, ~15 us so.
_SCALAR_CELLS = 64


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
        # As minima: three reductions where comparisons would take six passes, and a NaN count fails too.
        # (ufunc reductions called directly: ndarray.min adds a Python wrapper each, a tiny fit's real cost.)
        lowest = np.minimum.reduce
        if not (min(lowest(heads), lowest(tails)) >= 0 and lowest(heads + tails) >= 1):
            raise InvalidParameterError("every experiment needs heads >= 0, tails >= 0 and at least one flip", "counts")
        if n_coins < 1:
            raise InvalidParameterError(f"n_coins must be at least 1, got {n_coins}", "n_coins")
        if n_coins > heads.size:
            raise DegenerateDataError(
                f"n_coins is {n_coins} but there are only {heads.size} experiments; "
                "use at most one coin per experiment",
                "n_coins",
            )
        self.n_coins, self.fit_weights = n_coins, fit_weights
        self._features = np.empty((3, heads.size))  # [heads, tails, 1]: the long axis last
        self._features[0], self._features[1], self._features[2] = heads, tails, 1.0
        self.heads: FloatArray = self._features[0]
        self.tails: FloatArray = self._features[1]
        self._chunks = row_chunks(heads.size, _CHUNK_ROWS)
        # n x 3 rows [heads, tails, 1] for the small pass (None for larger fits)
        self._rows = self._features.T.copy() if heads.size <= _SMALL_ROWS else None
        # (heads, tails) per experiment as Python floats, for the scalar pass (None for larger fits)
        scalar = heads.size * n_coins <= _SCALAR_CELLS
        self._pairs = list(zip(heads.tolist(), tails.tolist(), strict=True)) if scalar else None
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
        if not (np.minimum.reduce(biases) > 0 and np.maximum.reduce(biases) < 1):  # False for a NaN too
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
        proportions = (self.heads + 0.5) / (self.heads + self.tails + 1.0)  # smoothed: never exactly 0 or 1
        return proportions[kmeans_plus_plus(proportions[:, None], self.n_coins, rng, n_trials=1)]

    # --- the EM hooks: one pass over the experiments per iteration ---

    def e_step(self, params: CoinParams) -> tuple[float, FloatArray | ScalarSums]:
        """Log-likelihood and the M-step's sums, (K, 3): sum r heads, sum r tails, sum r, per coin (as three
        lists of floats from the scalar pass)."""
        if self._pairs is not None:
            scalar_pass = _two_coin_pass if self.n_coins == 2 else _scalar_pass
            if (scalar := scalar_pass(self._pairs, params)) is not None:
                return scalar
        if self._rows is not None and (small := _small_log_joint(self._rows, params)) is not None:
            terms, top = small
            np.exp(terms, out=terms)
            total = np.add.reduce(terms, axis=1, keepdims=True)
            log_likelihood = float(np.add.reduce(np.log(total), axis=None) + np.add.reduce(top, axis=None))
            terms /= total
            return log_likelihood, terms.T @ self._rows
        table, impossible = _log_table(params)
        with _quiet_if_impossible(impossible):
            return self._pass(table, impossible)

    def _pass(self, table: FloatArray, impossible: BoolArray | None) -> tuple[float, FloatArray]:
        if len(self._chunks) == 1:  # small fits: no pool, no chunk bookkeeping
            return self._chunk_pass(table, impossible, slice(None))
        parts = map_chunks(partial(self._chunk_pass, table, impossible), self._chunks)
        # Summed in chunk order: the same total whichever thread computed which chunk.
        return sum(part[0] for part in parts), np.sum([part[1] for part in parts], axis=0)

    def _chunk_pass(self, table: FloatArray, impossible: BoolArray | None, rows: slice) -> tuple[float, FloatArray]:
        features = self._features[:, rows]
        resp = _log_joint(table, impossible, features)
        shift = _exp_below_column_max(resp)
        total = _over_coins(np.add, resp)
        resp /= total
        # Each total is the column's largest term, e^-1e-6, plus K - 1 smaller ones.
        log_likelihood = sum_of_logs(total, self.n_coins) + float(shift.sum())
        return log_likelihood, weighted_sums(resp, features)

    def log_responsibilities(self, params: CoinParams) -> FloatArray:
        """The n x K log-responsibilities (a view of a coins-major array), asked once per fit."""
        if self._pairs is not None and (scalar := _scalar_log_responsibilities(self._pairs, params)) is not None:
            return scalar
        if self._rows is not None and (small := _small_log_joint(self._rows, params)) is not None:
            joint = small[0]
            joint -= np.log(np.add.reduce(np.exp(joint), axis=1, keepdims=True))
            return joint
        table, impossible = _log_table(params)
        joint = _log_joint(table, impossible, self._features)
        terms = joint.copy()
        with _quiet_if_impossible(impossible):
            shift = _exp_below_column_max(terms)
            joint -= np.log(_over_coins(np.add, terms)) + shift
        return joint.T

    def m_step(self, sums: FloatArray | ScalarSums, params: CoinParams) -> tuple[CoinParams, list[str]]:
        if isinstance(sums, tuple):
            return self._scalar_m_step(sums, params)
        expected_heads = sums[:, 0]
        expected_flips = sums[:, 0] + sums[:, 1]
        # Fixed weights were normalised once, when checked; fitted ones are the coins' shares of the experiments.
        weights = sums[:, 2] / sums[:, 2].sum() if self.fit_weights else params.weights
        if expected_flips.all():  # sums of non-negative terms: zero only for a coin that explains nothing
            return CoinParams(biases=expected_heads / expected_flips, weights=weights), []
        # A coin no experiment is attributed to keeps its bias: there is no evidence to move it.
        empty = expected_flips == 0
        biases = np.where(empty, params.biases, expected_heads / np.where(empty, 1.0, expected_flips))
        warning = f"coin(s) {np.flatnonzero(empty).tolist()} explain no experiment; their bias was left unchanged"
        return CoinParams(biases=biases, weights=weights), [warning]

    def _scalar_m_step(self, sums: ScalarSums, params: CoinParams) -> tuple[CoinParams, list[str]]:
        """The M-step above, in Python floats, after a scalar pass."""
        heads_of, tails_of, share = sums
        flips = [heads + tails for heads, tails in zip(heads_of, tails_of, strict=True)]
        if not min(flips) > 0:  # a coin that explains nothing: rare, left to the array M-step's rule
            return self.m_step(np.array(sums).T, params)
        if self.fit_weights:
            total = sum(share)
            weights = np.array([s / total for s in share])
        else:
            weights = params.weights
        return CoinParams(np.array([heads / n for heads, n in zip(heads_of, flips, strict=True)]), weights), []

    def diagnose(self, params: CoinParams) -> list[str]:
        # A coin that explains nothing is named by the M-step already, in the iteration it happens.
        return []

    def canonical_order(self, params: CoinParams) -> NDArray[np.intp]:
        return np.argsort(-params.biases, kind="stable")

    def permute(self, params: CoinParams, order: NDArray[np.intp]) -> CoinParams:
        return CoinParams(biases=params.biases[order], weights=params.weights[order])

    def to_dict(self, params: CoinParams) -> dict[str, Any]:
        return {"biases": params.biases.tolist(), "weights": params.weights.tolist()}

    # --- standard errors ---

    def uncertainty(self, params: CoinParams, converged: bool) -> tuple[Uncertainty, dict[str, Reported | None]]:
        """The estimates' covariance from the observed information, and each reported parameter as a linear
        map of the free ones (None: fixed, not estimated). Free: every bias, then all weights but the last
        (when fitted). a_ik = log w_k + heads log b_k + tails log(1 - b_k), less the shared coefficient."""
        K, (biases, weights) = self.n_coins, (params.biases, params.weights)
        n_weights = K - 1 if self.fit_weights else 0
        names = [f"biases[{k}]" for k in range(K)] + [f"weights[{k}]" for k in range(n_weights)]
        weight_map = Reported(np.arange(K, 2 * K - 1), simplex_map(K)) if self.fit_weights else None
        maps: dict[str, Reported | None] = {"biases": Reported(np.arange(K)), "weights": weight_map}
        if np.any((biases <= 0) | (biases >= 1)) or (self.fit_weights and np.any(weights <= 0)):
            boundary = "a bias of 0 or 1" if np.any((biases <= 0) | (biases >= 1)) else "a weight of 0"
            warning = (
                f"standard errors are not given: {boundary} is on the boundary, where the likelihood has no curvature"
            )
            return Uncertainty(names, None, [warning]), maps
        resp = np.exp(self.log_responsibilities(params))
        weight_columns = np.arange(K, K + n_weights)
        weight_scores = simplex_scores(weights) if self.fit_weights else np.zeros((K, 0))
        sums = LouisSums(len(names))
        for rows in chunked(self.n_observations):
            heads, tails, r = self.heads[rows], self.tails[rows], resp[rows]
            mean_scores = np.zeros((len(heads), len(names)))
            for k in range(K):
                columns = np.concatenate([[k], weight_columns]).astype(np.intp)
                scores = np.empty((len(heads), len(columns)))
                scores[:, 0] = heads / biases[k] - tails / (1.0 - biases[k])
                scores[:, 1:] = weight_scores[k]
                sums.add_component(r[:, k], scores, columns)
                mean_scores[:, columns] += r[:, k, None] * scores
            sums.add_mean_scores(mean_scores)
        expected_hessian = np.zeros((len(names), len(names)))
        heads_of, tails_of = resp.T @ self.heads, resp.T @ self.tails
        expected_hessian[np.arange(K), np.arange(K)] = -(heads_of / biases**2 + tails_of / (1.0 - biases) ** 2)
        if self.fit_weights:
            expected_hessian[K:, K:] = simplex_hessian(weights, resp.sum(axis=0))
        return covariance_of_estimates(sums.information(expected_hessian), names, converged), maps


def _scalar_pass(pairs: list[tuple[float, float]], params: CoinParams) -> tuple[float, ScalarSums] | None:
    """The small pass's sums and log-likelihood, in Python floats, for a fit of a few cells; None where the
    small pass would give up too (a coin impossible somewhere, a parameter that is not a number).

    Plain loops over preallocated lists: in Python 3.11 each comprehension is a function call, and per
    experiment those calls cost more than the arithmetic.
    """
    table = _scalar_log_table(params)
    if table is None:
        return None
    coins = range(len(table))
    heads_of, tails_of, share = [0.0] * len(table), [0.0] * len(table), [0.0] * len(table)
    terms = [0.0] * len(table)
    log_likelihood = 0.0
    for heads, tails in pairs:
        top = -math.inf  # shifted by the top, as in the other passes: a long experiment's exp must not underflow
        for k in coins:
            log_p, log_q, log_w = table[k]
            terms[k] = joint = heads * log_p + tails * log_q + log_w
            if joint > top:
                top = joint
        total = 0.0
        for k in coins:
            terms[k] = term = exp(terms[k] - top)
            total += term
        log_likelihood += log(total) + top
        for k in coins:
            r = terms[k] / total
            heads_of[k] += r * heads
            tails_of[k] += r * tails
            share[k] += r
    return log_likelihood, (heads_of, tails_of, share)


def _scalar_log_table(params: CoinParams) -> list[tuple[float, float, float]] | None:
    """``(log p_k, log(1 - p_k), log w_k)`` per coin as Python floats for the scalar passes; None when a coin is
    impossible (a bias of 0 or 1, a weight of 0) or a parameter is not a number (every comparison with NaN fails)."""
    biases, weights = params.biases.tolist(), params.weights.tolist()
    if not all(0 < bias < 1 for bias in biases) or not all(weight > 0 for weight in weights):
        return None
    return [(log(b), log(1.0 - b), log(w)) for b, w in zip(biases, weights, strict=True)]


def _scalar_log_responsibilities(pairs: list[tuple[float, float]], params: CoinParams) -> FloatArray | None:
    """The small pass's n x K log-responsibilities in Python floats, for a fit of a few cells (a handful of numpy
    calls cost more than the arithmetic); None where a coin is impossible or a parameter is not a number."""
    table = _scalar_log_table(params)
    if table is None:
        return None
    rows = []
    for heads, tails in pairs:
        joints = [heads * log_p + tails * log_q + log_w for log_p, log_q, log_w in table]
        top = max(joints)
        shifted = [joint - top for joint in joints]
        log_total = log(sum(exp(term) for term in shifted))
        rows.append([term - log_total for term in shifted])
    return np.array(rows)


def _two_coin_pass(pairs: list[tuple[float, float]], params: CoinParams) -> tuple[float, ScalarSums] | None:
    """:func:`_scalar_pass` for two coins, the commonest fit (Do & Batzoglou's): the same operations in the same
    order, so the same floats to the last bit, with the loops over coins unrolled. A coin loop costs more than its
    arithmetic here: a Do & Batzoglou E-step takes a third of the time it takes in the general loop."""
    (bias_0, bias_1), (weight_0, weight_1) = params.biases.tolist(), params.weights.tolist()
    if not (0 < bias_0 < 1 and 0 < bias_1 < 1 and weight_0 > 0 and weight_1 > 0):  # False for a NaN as well
        return None
    log_p0, log_q0, log_w0 = log(bias_0), log(1.0 - bias_0), log(weight_0)
    log_p1, log_q1, log_w1 = log(bias_1), log(1.0 - bias_1), log(weight_1)
    heads_0 = tails_0 = share_0 = heads_1 = tails_1 = share_1 = log_likelihood = 0.0
    for heads, tails in pairs:
        joint_0 = heads * log_p0 + tails * log_q0 + log_w0
        joint_1 = heads * log_p1 + tails * log_q1 + log_w1
        # Shifted by the top, the top's term is exactly 1 (the general pass takes the first of equal tops).
        if joint_0 >= joint_1:
            other = exp(joint_1 - joint_0)
            total = 1.0 + other
            log_likelihood += log(total) + joint_0
            r_0, r_1 = 1.0 / total, other / total
        else:
            other = exp(joint_0 - joint_1)
            total = other + 1.0
            log_likelihood += log(total) + joint_1
            r_0, r_1 = other / total, 1.0 / total
        heads_0 += r_0 * heads
        tails_0 += r_0 * tails
        share_0 += r_0
        heads_1 += r_1 * heads
        tails_1 += r_1 * tails
        share_1 += r_1
    return log_likelihood, ([heads_0, heads_1], [tails_0, tails_1], [share_0, share_1])


def _small_log_joint(rows: FloatArray, params: CoinParams) -> tuple[FloatArray, FloatArray] | None:
    """For a small fit: log P(experiment, coin) less each experiment's top over the coins (n x K), and the
    tops (n x 1); None when a coin is impossible somewhere (a bias of 0 or 1, a weight of 0: the general pass
    marks those) or a parameter is not a number."""
    # ufunc reductions called directly: ndarray.min/max/sum add a Python wrapper each, a fifth of a call here.
    table = np.array([params.biases, 1.0 - params.biases, params.weights])
    if not np.minimum.reduce(table, axis=None) > 0:
        return None
    joint: FloatArray = rows @ np.log(table)
    top = np.maximum.reduce(joint, axis=1, keepdims=True)
    joint -= top
    return joint, top


def _log_table(params: CoinParams) -> tuple[FloatArray, BoolArray | None]:
    """(K, 3) rows ``[log p_k, log(1 - p_k), log w_k]``, and where they are log 0 (None when nowhere).

    Row k times an experiment's ``[heads, tails, 1]`` is log P(experiment, coin k), up to the binomial
    coefficient, which every coin shares. A log 0 is stored as 0 and marked: 0 * log 0 must be 0 (xlogy),
    which a product with -inf would make NaN.
    """
    table = np.array([params.biases, 1.0 - params.biases, params.weights]).T
    if table.all():  # the common case: every log finite, nothing to mark
        return np.log(table), None
    impossible = table == 0
    table[impossible] = 1.0
    return np.log(table), impossible


def _quiet_if_impossible(impossible: BoolArray | None) -> AbstractContextManager[Any]:
    """-inf (and NaN, for an experiment no coin can produce) are expected once a coin is impossible somewhere;
    anywhere else numpy should still warn."""
    return np.errstate(all="ignore") if impossible is not None else nullcontext()


def _log_joint(table: FloatArray, impossible: BoolArray | None, features: FloatArray) -> FloatArray:
    """K x n_chunk log P(experiment, coin): -inf where a coin cannot produce the experiment at all."""
    joint: FloatArray = table @ features
    if impossible is not None:
        for k, j in np.argwhere(impossible):  # count j * log 0: -inf for a positive count, 0 for none
            joint[k, features[j] > 0] = -np.inf
    return joint


def _exp_below_column_max(joint: FloatArray) -> FloatArray:
    """In place on a K x n chunk: exp(joint - shift), the shift a hair above each column's max; returns it.

    A hair above: exp(0) takes libm's shortcut for tiny arguments, and with one 0 in every column among
    negative numbers that branch goes unpredictably; measured, exp ran at half speed. Any shift works
    (the log-likelihood adds it back); -1e-6 takes the common path. A column with no finite entry (an
    experiment no coin can produce) becomes NaN, and so does the log-likelihood: the driver reports a
    degenerate fit, as it did for logsumexp's -inf.
    """
    shift = _over_coins(np.maximum, joint)
    shift += 1e-6
    joint -= shift
    np.exp(joint, out=joint)
    return shift


def _over_coins(ufunc: np.ufunc, joint: FloatArray) -> FloatArray:
    """``ufunc`` reduced over the K rows of a chunk as K - 1 operations on whole contiguous rows: measured
    twice as fast as numpy's reduction over axis 0, and fewer calls for a small fit."""
    if len(joint) == 1:
        only: FloatArray = joint[0].copy()
        return only
    out: FloatArray = ufunc(joint[0], joint[1])
    for row in joint[2:]:
        ufunc(out, row, out=out)
    return out


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
