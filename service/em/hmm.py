"""Hidden Markov models by Baum-Welch over several sequences: categorical or Gaussian (diag, full) emissions.

Fills the hooks of :class:`service.em.loop.EMModel`: an observation is one time step (``tol`` is per step). The
E-step is one blocked forward-backward (:mod:`service.em.hmm_pass`) and hands the M-step sums only (expected
starts, transitions, and per state the posterior mass, sum of x and of x x^T or symbol counts), as hmmlearn's
``_accumulate_sufficient_statistics``; the M-step is plain maximum likelihood (``reg_covar`` added if asked),
so from the same start the path is hmmlearn's with its priors off.

Starts without ``init`` (every random choice from the start's seed): start probabilities uniform; each
transition row half "stay" and half a Dirichlet(1) draw; categorical emission rows half the symbols' overall
frequencies and half a Dirichlet(1) draw; Gaussian means k-means++ seeds among the steps, each state's
covariance the data's (diagonal or full). Without ``init`` states come in a canonical order (Gaussian: by mean,
lexicographically; categorical: by emission row, lexicographically descending), so a seed always gives the
same answer; with ``init`` the caller's order is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.em.chunks import one_blas_thread
from service.em.errors import DegenerateDataError
from service.em.hmm_data import (
    Emission,
    HmmCovarianceType,
    Sequences,
    check_covariances,
    check_enough_steps,
    check_means,
    check_probabilities,
)
from service.em.hmm_pass import BlockLayout, choose_block_length, forward_backward, make_layout, viterbi
from service.em.seeding import kmeans_plus_plus

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

_LOG_2PI = float(np.log(2 * np.pi))
_SEEDING_ROWS = 10_000  # k-means++ seeds are drawn among at most this many steps (a random subset)
_DENSITY_ROWS = 1 << 16  # rows per block of a full-covariance log-density (bounds the (rows, K, d) temporary)


@dataclass(frozen=True)
class HmmParams:
    start: FloatArray  # (K,)
    transitions: FloatArray  # (K, K), rows sum to 1
    emissions: FloatArray | None = None  # categorical: (K, S) over the symbols
    means: FloatArray | None = None  # gaussian: (K, d)
    covariances: FloatArray | None = None  # gaussian: diag (K, d), full (K, d, d)


@dataclass(frozen=True)
class HmmInit:
    """Whatever of a start the caller gave (the rest is drawn); arrays not yet checked."""

    start: Any = None
    transitions: Any = None
    emissions: Any = None
    means: Any = None
    covariances: Any = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.start, self.transitions, self.emissions, self.means, self.covariances))


@dataclass
class HmmStats:
    """The E-step's sums (no T x K array)."""

    start: FloatArray  # (K,)
    transitions: FloatArray  # (K, K)
    post: FloatArray  # (K,) posterior mass per state
    obs: FloatArray  # categorical (K, S) symbol counts; gaussian (K, d) sum of x (centred)
    obs2: FloatArray | None  # gaussian: (K, d) sum of x^2, or (K, d, d) sum of x x^T (centred)


class Emissions:
    """Per-step emission densities for every state, in the block layout ((L, K, n_blocks), as the passes take
    them), their posterior-weighted sums, and the M-step of their parameters."""

    def __init__(self, sequences: Sequences, layout: BlockLayout, n_states: int, emission: Emission,
                 covariance_type: HmmCovarianceType, reg_covar: float) -> None:  # fmt: skip
        self.kind, self.covariance_type, self.reg_covar = emission, covariance_type, reg_covar
        self.real = layout.real
        self.n_states = K = n_states
        if emission == "categorical":
            assert sequences.symbols is not None
            self.n_symbols = S = len(sequences.symbols)
            self.codes = sequences.values[layout.source]  # (L, n_blocks)
            # One gather makes every step's (K,) probabilities: index k * S + symbol into the flattened K x S
            # table, with one slot past its end (probability 1, log 0) for the padding.
            index = np.arange(K)[None, :, None] * S + self.codes[:, None, :]
            self.index = np.where(layout.real[:, None, :], index, K * S)
            return
        X = np.asarray(sequences.values, dtype=np.float64)
        # Centred once: the quadratic expansions below then lose no digits to a far-off origin.
        self.center = X.mean(axis=0)
        self.n_features = d = X.shape[1]
        rows = (X - self.center)[layout.source]  # (L, n_blocks, d)
        rows[~layout.real] = 0.0
        self.rows = rows
        self.squares = (
            rows**2
            if covariance_type == "diag"
            else (rows[..., :, None] * rows[..., None, :]).reshape(*rows.shape[:2], d * d)
        )

    def log_density(self, params: HmmParams) -> FloatArray:
        """(L, K, n_blocks) log b_t(k); 0 on padding."""
        if self.kind == "categorical":
            assert params.emissions is not None
            with np.errstate(divide="ignore"):
                log_table = np.log(np.append(params.emissions.ravel(), 1.0))
            gathered: FloatArray = log_table[self.index]
            return gathered
        L, n_blocks = self.real.shape
        per_row = self._gaussian(params).reshape(L, n_blocks, self.n_states)
        per_row[~self.real] = 0.0
        return np.ascontiguousarray(per_row.transpose(0, 2, 1))

    def scaled(self, params: HmmParams) -> tuple[FloatArray, float]:
        """(L, K, n_blocks) b_t(k) / exp(m_t), 1 on padding, and the sum of the factors m_t taken out."""
        if self.kind == "categorical":
            assert params.emissions is not None
            table = np.append(params.emissions.ravel(), 1.0)
            probabilities: FloatArray = table[self.index]  # probabilities are <= 1 already: no factor
            return probabilities, 0.0
        log_b = self.log_density(params)
        top = log_b.max(axis=1, keepdims=True)
        log_b -= top
        np.exp(log_b, out=log_b)
        return log_b, float(top.sum())

    def _gaussian(self, params: HmmParams) -> FloatArray:
        """(L * n_blocks, K) log-densities of every row of the layout (padding rows too: the caller masks them)."""
        assert params.means is not None and params.covariances is not None
        means = params.means - self.center
        d, K = self.n_features, self.n_states
        rows = self.rows.reshape(-1, d)
        if self.covariance_type == "diag":
            precisions = 1.0 / params.covariances  # (K, d)
            # -1/2 sum_i (x_i - m_i)^2 / v_i as one product of [x^2, x] with a (2d, K) table
            coefficients = np.concatenate([-0.5 * precisions, means * precisions], axis=1).T
            constant = -0.5 * (
                d * _LOG_2PI + np.log(params.covariances).sum(axis=1) + (means**2 * precisions).sum(axis=1)
            )
            out: FloatArray = self.squares.reshape(-1, d) @ coefficients[:d] + rows @ coefficients[d:]
            out += constant
            return out
        chol = np.linalg.cholesky(np.linalg.inv(params.covariances))  # precision = chol chol^T
        factors = np.ascontiguousarray(chol.transpose(1, 0, 2).reshape(d, K * d))
        shifts = np.einsum("kd,kde->ke", means, chol).reshape(K * d)
        constant = np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1) - 0.5 * d * _LOG_2PI
        out = np.empty((len(rows), K))
        for begin in range(0, len(rows), _DENSITY_ROWS):
            y = rows[begin : begin + _DENSITY_ROWS] @ factors
            y -= shifts
            out[begin : begin + _DENSITY_ROWS] = constant - 0.5 * np.square(y).reshape(len(y), K, d).sum(axis=2)
        return out

    def sums(self, gamma: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray | None]:
        """Posterior mass per state, and the emission's sums weighted by the posteriors (gamma: 0 on padding)."""
        K = gamma.shape[1]
        post = gamma.sum(axis=(0, 2))
        if self.kind == "categorical":
            codes = self.codes.reshape(-1)
            counts = np.stack(
                [np.bincount(codes, weights=gamma[:, k, :].reshape(-1), minlength=self.n_symbols) for k in range(K)]
            ).astype(np.float64)
            return post, counts, None
        obs = np.tensordot(gamma, self.rows, axes=([0, 2], [0, 1]))
        obs2 = np.tensordot(gamma, self.squares, axes=([0, 2], [0, 1]))
        if self.covariance_type == "full":
            obs2 = obs2.reshape(K, self.n_features, self.n_features)
        return post, obs, obs2

    def m_step(self, stats: HmmStats, params: HmmParams, empty: NDArray[np.bool_]) -> HmmParams:
        """New emission parameters; states with no posterior mass keep theirs."""
        keep = empty[:, None]
        if self.kind == "categorical":
            assert params.emissions is not None
            totals = stats.obs.sum(axis=1, keepdims=True)
            emissions = np.where(keep, params.emissions, stats.obs / np.where(keep, 1.0, totals))
            return replace(params, emissions=emissions)
        assert params.means is not None and params.covariances is not None and stats.obs2 is not None
        post = np.where(empty, 1.0, stats.post)
        means = stats.obs / post[:, None]  # centred
        if self.covariance_type == "diag":
            # hmmlearn's arithmetic: (sum x^2 - 2 m sum x + m^2 n) / n
            covariances = (stats.obs2 - 2 * means * stats.obs + means**2 * post[:, None]) / post[:, None]
            covariances += self.reg_covar
            covariances = np.where(keep, params.covariances, covariances)
            if not np.all(covariances > 0):
                raise _collapsed(int(np.argwhere(~(covariances > 0))[0][0]))
        else:
            cross = stats.obs[:, :, None] * means[:, None, :]
            covariances = (
                stats.obs2
                - cross
                - cross.transpose(0, 2, 1)
                + means[:, :, None] * means[:, None, :] * post[:, None, None]
            ) / post[:, None, None]
            covariances += self.reg_covar * np.eye(self.n_features)
            covariances = np.where(empty[:, None, None], params.covariances, covariances)
            for k, matrix in enumerate(covariances):
                try:
                    np.linalg.cholesky(matrix)
                except np.linalg.LinAlgError:
                    raise _collapsed(k) from None
        means = np.where(keep, params.means, means + self.center)
        return replace(params, means=means, covariances=covariances)


def _collapsed(state: int) -> DegenerateDataError:
    return DegenerateDataError(
        f"state {state} collapsed onto too few distinct values (its covariance is singular); use fewer states, "
        "or set reg_covar > 0",
        "reg_covar",
    )


class HiddenMarkovModel:
    """Baum-Welch over several sequences; fills the hooks of :class:`service.em.loop.EMModel`."""

    def __init__(
        self,
        sequences: Sequences,
        n_states: int,
        emission: Emission = "categorical",
        covariance_type: HmmCovarianceType = "diag",
        reg_covar: float = 0.0,
        init: HmmInit | None = None,
        block_length: int | None = None,
        require_enough_steps: bool = True,  # a fit needs a step per state; using a fitted model does not
    ) -> None:
        if require_enough_steps:
            check_enough_steps(sequences.n_steps, n_states)
        self.sequences, self.n_states, self.emission = sequences, n_states, emission
        self.covariance_type = covariance_type
        L = block_length or choose_block_length(sequences.lengths, n_states)
        self.layout = make_layout(sequences.lengths, L)
        self.emissions = Emissions(sequences, self.layout, n_states, emission, covariance_type, reg_covar)
        self.given = check_init(init or HmmInit(), n_states, sequences, emission, covariance_type)

    @property
    def n_observations(self) -> int:
        return self.sequences.n_steps

    # --- starts ---

    def initialize(self, rng: np.random.Generator) -> HmmParams:
        K, given = self.n_states, self.given
        start = given.start if given.start is not None else np.full(K, 1.0 / K)
        transitions = given.transitions
        if transitions is None:
            transitions = 0.5 * np.eye(K) + 0.5 * rng.dirichlet(np.ones(K), size=K)
        if self.emission == "categorical":
            emissions = given.emissions
            if emissions is None:
                S = self.emissions.n_symbols
                frequencies = np.bincount(self.sequences.values, minlength=S) / self.sequences.n_steps
                emissions = 0.5 * frequencies + 0.5 * rng.dirichlet(np.ones(S), size=K)
            return HmmParams(start, transitions, emissions=emissions)
        X = np.asarray(self.sequences.values, dtype=np.float64)
        means = given.means
        if means is None:
            pool = X if len(X) <= _SEEDING_ROWS else X[rng.choice(len(X), _SEEDING_ROWS, replace=False)]
            means = pool[kmeans_plus_plus(pool, K, rng)]
        covariances = given.covariances
        if covariances is None:
            covariances = self._data_covariances()
        return HmmParams(start, transitions, means=means, covariances=covariances)

    def _data_covariances(self) -> FloatArray:
        X = np.asarray(self.sequences.values, dtype=np.float64)
        K, d = self.n_states, X.shape[1]
        reg = self.emissions.reg_covar
        if self.covariance_type == "diag":
            variances = X.var(axis=0) + reg
            if not np.all(variances > 0):
                raise DegenerateDataError(
                    "the sequences do not vary in every dimension; a Gaussian needs them to", "sequences"
                )
            return np.tile(variances, (K, 1))
        covariance = np.atleast_2d(np.cov(X.T, bias=True)) + reg * np.eye(d)
        try:
            np.linalg.cholesky(covariance)
        except np.linalg.LinAlgError:
            raise DegenerateDataError(
                "the sequences' covariance is singular (a dimension is constant or a combination of others)",
                "sequences",
            ) from None
        return np.tile(covariance, (K, 1, 1))

    # --- the EM hooks ---

    def e_step(self, params: HmmParams) -> tuple[float, HmmStats]:
        # Every product here is tall and thin ((T, d) @ (d, K)) or tiny (K x K steps): threaded BLAS only adds
        # hand-offs (measured: (10^5, 4) @ (4, 2) took 45 ms threaded on 2 busy cores, 2 ms on one thread).
        with one_blas_thread():
            return self._e_step(params)

    def _e_step(self, params: HmmParams) -> tuple[float, HmmStats]:
        emission, factors = self.emissions.scaled(params)
        with np.errstate(divide="ignore", invalid="ignore"):
            passed = forward_backward(self.layout, params.start, params.transitions, emission)
        log_likelihood = float(passed.block_log_likelihood.sum()) + factors
        if not np.isfinite(log_likelihood):
            raise DegenerateDataError(
                "the sequences have probability 0 under the parameters (a symbol or transition they need has "
                "probability 0 in every state that could produce it); give every needed probability a positive value",
                "init",
            )
        post, obs, obs2 = self.emissions.sums(passed.gamma)
        return log_likelihood, HmmStats(passed.start, passed.transitions, post, obs, obs2)

    def m_step(self, stats: HmmStats, params: HmmParams) -> tuple[HmmParams, list[str]]:
        warnings: list[str] = []
        start = stats.start / stats.start.sum()
        rows = stats.transitions.sum(axis=1, keepdims=True)
        unvisited = rows[:, 0] <= 0
        transitions = np.where(
            unvisited[:, None], params.transitions, stats.transitions / np.where(unvisited[:, None], 1.0, rows)
        )
        if unvisited.any():
            warnings.append(
                f"state(s) {np.flatnonzero(unvisited).tolist()} are never left in any sequence; their transition rows "
                "were left unchanged"
            )
        empty = stats.post <= 0
        if empty.any():
            warnings.append(
                f"state(s) {np.flatnonzero(empty).tolist()} explain no step; their emissions were left unchanged"
            )
        updated = self.emissions.m_step(stats, replace(params, start=start, transitions=transitions), empty)
        return updated, warnings

    def log_responsibilities(self, params: HmmParams) -> FloatArray:
        """(T, K) log posterior state probabilities per step, in the order of the concatenated sequences."""
        emission, _ = self.emissions.scaled(params)
        with np.errstate(divide="ignore", invalid="ignore"), one_blas_thread():
            gamma = forward_backward(self.layout, params.start, params.transitions, emission, want_xi=False).gamma
        posteriors = np.empty((self.sequences.n_steps, self.n_states))
        posteriors[self.layout.source[self.layout.real]] = gamma.transpose(0, 2, 1)[self.layout.real]
        with np.errstate(divide="ignore"):
            return np.log(posteriors)

    def viterbi(self, params: HmmParams) -> IntArray:
        """The most probable state path, one state per step of the concatenated sequences."""
        with np.errstate(divide="ignore"):
            path = viterbi(
                self.layout,
                np.log(params.start),
                np.log(params.transitions),
                np.ascontiguousarray(self.emissions.log_density(params).transpose(0, 2, 1)),
            )
        labels = np.empty(self.sequences.n_steps, dtype=np.intp)
        labels[self.layout.source[self.layout.real]] = path[self.layout.real]
        return labels

    def sequence_log_likelihoods(self, params: HmmParams) -> FloatArray:
        """log p(sequence) for every sequence."""
        emission, _ = self.emissions.scaled(params)
        with np.errstate(divide="ignore", invalid="ignore"), one_blas_thread():
            passed = forward_backward(self.layout, params.start, params.transitions, emission, want_xi=False)
        log_b = self.emissions.log_density(params) if self.emission == "gaussian" else None
        per_block = passed.block_log_likelihood
        if log_b is not None:  # the factors taken out of the emissions, per block
            per_block = per_block + log_b.max(axis=1).sum(axis=0)
        per_sequence = np.bincount(self.layout.block_sequence, weights=per_block, minlength=len(self.sequences.lengths))
        return per_sequence.astype(np.float64)

    def diagnose(self, params: HmmParams) -> list[str]:
        return []

    def canonical_order(self, params: HmmParams) -> IntArray:
        if params.means is not None:
            return np.lexsort(params.means.T[::-1]).astype(np.intp)
        assert params.emissions is not None
        return np.lexsort((-params.emissions).T[::-1]).astype(np.intp)

    def permute(self, params: HmmParams, order: IntArray) -> HmmParams:
        return permute(params, order)

    def to_dict(self, params: HmmParams) -> dict[str, Any]:
        return params_dict(params, self.sequences.symbols)


def permute(params: HmmParams, order: IntArray) -> HmmParams:
    return HmmParams(
        start=params.start[order],
        transitions=params.transitions[np.ix_(order, order)],
        emissions=None if params.emissions is None else params.emissions[order],
        means=None if params.means is None else params.means[order],
        covariances=None if params.covariances is None else params.covariances[order],
    )


def params_dict(params: HmmParams, symbols: list[Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"start": params.start.tolist(), "transitions": params.transitions.tolist()}
    if params.emissions is not None:
        out |= {"symbols": symbols, "emissions": params.emissions.tolist()}
    else:
        assert params.means is not None and params.covariances is not None
        out |= {"means": params.means.tolist(), "covariances": params.covariances.tolist()}
    return out


def check_init(
    init: HmmInit,
    n_states: int,
    sequences: Sequences,
    emission: Emission,
    covariance_type: HmmCovarianceType,
    prefix: str = "init",
) -> HmmInit:
    """The given parts of a start (or an imported model's params, ``prefix="params"``), checked against K, the
    symbols and the dimension (each a 422 naming its field)."""
    K = n_states
    start = None if init.start is None else check_probabilities(init.start, (K,), f"{prefix}.start")
    transitions = (
        None if init.transitions is None else check_probabilities(init.transitions, (K, K), f"{prefix}.transitions")
    )
    if emission == "categorical":
        assert sequences.symbols is not None
        emissions = None
        if init.emissions is not None:
            emissions = check_probabilities(init.emissions, (K, len(sequences.symbols)), f"{prefix}.emissions")
        return HmmInit(start, transitions, emissions=emissions)
    d = int(np.asarray(sequences.values).shape[1])
    means = None if init.means is None else check_means(init.means, K, d, f"{prefix}.means")
    covariances = None
    if init.covariances is not None:
        covariances = check_covariances(init.covariances, K, d, covariance_type, f"{prefix}.covariances")
    return HmmInit(start, transitions, means=means, covariances=covariances)
