"""Gaussian mixtures over points with missing coordinates (NaN): EM on the observed-data likelihood.

No imputation first: a point's density is the marginal of each component over its observed coordinates, and
the M-step takes the expectations of the missing ones given the observed ones and the component (true EM):

    E[x_M | x_O, k]       = mu_M + S_MO S_OO^-1 (x_O - mu_O)
    Cov[x_M | x_O, k]     = S_MM - S_MO S_OO^-1 S_OM

so each component's sums gain, for every point, its conditional mean in place of the missing coordinates
and (in the missing block of the second moments) the conditional covariance. Points are grouped by which
coordinates they miss: every quantity above depends on the pattern, not on the point, except the conditional
mean (one product per pattern and component). A cloud with a few patterns costs a few times a complete one.

Starts, ordering and warnings come from a :class:`GaussianMixture` over the points with each missing
coordinate replaced by its column's mean (a start only: the fit itself never uses those values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.em.errors import DegenerateDataError, InvalidParameterError
from service.em.gaussian import _COVARIANCES, GaussianMixture, GaussianParams, Statistics, precisions_from_covariances

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

_LOG_2PI = float(np.log(2 * np.pi))
# Numbers in a chunk's K x rows x d arrays (the completed rows): about 8 MB.
_CHUNK_NUMBERS = 1 << 20


def check_missing(X: FloatArray) -> None:
    """Refuse what no likelihood can use: a point with nothing observed, a coordinate observed nowhere."""
    missing = np.isnan(X)
    empty_rows = np.flatnonzero(missing.all(axis=1))
    if empty_rows.size:
        more = f" (and {empty_rows.size - 1} more)" if empty_rows.size > 1 else ""
        raise InvalidParameterError(
            f"points[{empty_rows[0]}]{more} has no observed coordinate (every value is null); drop such points",
            f"points.{empty_rows[0]}",
        )
    never = np.flatnonzero(missing.all(axis=0))
    if never.size:
        raise InvalidParameterError(
            f"coordinate {never[0]} is missing (null) in every point: nothing can be estimated for it", "points"
        )
    if np.any(np.isinf(X)):
        raise InvalidParameterError("points must be finite numbers or null (no Infinity)", "points")


@dataclass(frozen=True)
class _PatternTerms:
    means: FloatArray  # K x d, centred
    inverse_factor: FloatArray  # K x |O| x |O|: L^-1 of S_OO = L L^T
    constant: FloatArray  # K: log w_k - (|O| log 2 pi + log det S_OO) / 2
    gain: FloatArray | None  # K x |M| x |O|: S_MO S_OO^-1
    conditional: FloatArray | None  # K x |M| x |M|: S_MM - S_MO S_OO^-1 S_OM


@dataclass(frozen=True)
class _Pattern:
    rows: NDArray[np.intp]
    observed: NDArray[np.intp]
    missing: NDArray[np.intp]


def _patterns(X: FloatArray) -> list[_Pattern]:
    """The points grouped by which coordinates they miss (complete points form one group)."""
    missing = np.isnan(X)
    keys, inverse = np.unique(missing, axis=0, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(keys) + 1))
    return [
        _Pattern(order[bounds[p] : bounds[p + 1]], np.flatnonzero(~key), np.flatnonzero(key))
        for p, key in enumerate(keys)
    ]


def full_covariances(covariances: FloatArray, covariance_type: str, K: int, d: int) -> FloatArray:
    """Every component's d x d covariance, whatever the type stores."""
    if covariance_type == "full":
        return covariances
    if covariance_type == "tied":
        return np.broadcast_to(covariances, (K, d, d))
    if covariance_type == "diag":
        return np.stack([np.diag(c) for c in covariances])
    return np.stack([np.eye(d) * c for c in covariances])


class MissingGaussianMixture:
    """A Gaussian mixture whose points may miss coordinates; fills the hooks of :class:`EMModel`."""

    def __init__(self, X: FloatArray, n_components: int, covariance_type: str, reg_covar: float, **start: Any) -> None:
        X = np.asarray(X, dtype=np.float64)
        check_missing(X)
        self.X, self.n_components, self.covariance_type, self.reg_covar = X, n_components, covariance_type, reg_covar
        self.shift = np.nanmean(X, axis=0)
        self.centred = X - self.shift
        self.patterns = _patterns(X)
        filled = np.where(np.isnan(X), self.shift, X)
        if len(np.unique(filled, axis=0)) < n_components:
            raise DegenerateDataError(
                f"n_components is {n_components} but the points hold fewer distinct values", "n_components"
            )
        # Starts, order, warnings: from the points with column means in the gaps (never used by the fit itself).
        self.filled = GaussianMixture(filled, n_components, covariance_type, reg_covar, **start)  # type: ignore[arg-type]

    @property
    def n_observations(self) -> int:
        return len(self.X)

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    def initialize(self, rng: np.random.Generator) -> GaussianParams:
        return self.filled.initialize(rng)

    # --- the passes: per pattern, every component at once (batched small matrices), rows in chunks ---

    def _pattern_terms(self, params: GaussianParams, pattern: _Pattern) -> _PatternTerms:
        """What the pattern's rows share, for every component: the observed block's whitening and log-determinant,
        the gain S_MO S_OO^-1 and the conditional covariance of the missing block."""
        K, d = self.n_components, self.n_features
        covariances = full_covariances(params.covariances, self.covariance_type, K, d)
        o, m = pattern.observed, pattern.missing
        observed_block = covariances[:, o[:, None], o[None, :]]
        inverse_factor = np.linalg.inv(np.linalg.cholesky(observed_block))  # L^-1, so S_OO^-1 = L^-T L^-1
        log_det = -2 * np.sum(np.log(np.diagonal(inverse_factor, axis1=1, axis2=2)), axis=1)
        with np.errstate(divide="ignore"):
            constant = np.log(params.weights) - 0.5 * (len(o) * _LOG_2PI + log_det)
        gain = conditional = None
        if m.size:
            cross = covariances[:, m[:, None], o[None, :]]  # S_MO
            gain = cross @ np.swapaxes(inverse_factor, 1, 2) @ inverse_factor
            conditional = covariances[:, m[:, None], m[None, :]] - gain @ np.swapaxes(cross, 1, 2)
        return _PatternTerms(params.means - self.shift, inverse_factor, constant, gain, conditional)

    def _chunks(self, pattern: _Pattern) -> list[NDArray[np.intp]]:
        size = max(256, _CHUNK_NUMBERS // (self.n_components * self.n_features))
        return [pattern.rows[start : start + size] for start in range(0, len(pattern.rows), size)]

    def _log_joint(self, terms: _PatternTerms, pattern: _Pattern, rows: NDArray[np.intp]) -> FloatArray:
        """log(w_k N(x_O | mu_kO, S_kOO)) for ``rows`` (rows x K)."""
        o = pattern.observed
        difference = self.centred[np.ix_(rows, o)][None, :, :] - terms.means[:, None, o]  # K x rows x |O|
        whitened = difference @ np.swapaxes(terms.inverse_factor, 1, 2)
        joint: FloatArray = (terms.constant[:, None] - 0.5 * np.sum(whitened**2, axis=2)).T
        return joint

    def _completed(self, terms: _PatternTerms, pattern: _Pattern, rows: NDArray[np.intp]) -> FloatArray:
        """The rows with the missing coordinates at each component's conditional mean: K x rows x d."""
        o, m = pattern.observed, pattern.missing
        x = self.centred[rows]
        completed = np.broadcast_to(x, (self.n_components, *x.shape)).copy()
        if m.size:
            assert terms.gain is not None
            difference = x[:, o][None, :, :] - terms.means[:, None, o]
            completed[:, :, m] = terms.means[:, None, m] + difference @ np.swapaxes(terms.gain, 1, 2)
        return completed

    def e_step(self, params: GaussianParams) -> tuple[float, Statistics]:
        K, d = self.n_components, self.n_features
        nk, first, second = np.zeros(K), np.zeros((K, d)), np.zeros((K, d, d))
        log_likelihood = 0.0
        for pattern in self.patterns:
            terms = self._pattern_terms(params, pattern)
            pattern_counts = np.zeros(K)
            for rows in self._chunks(pattern):
                joint = self._log_joint(terms, pattern, rows)
                top = np.max(joint, axis=1, keepdims=True)
                resp = np.exp(joint - top)
                total = resp.sum(axis=1, keepdims=True)
                log_likelihood += float(np.sum(np.log(total) + top))
                resp /= total
                completed = self._completed(terms, pattern, rows)
                pattern_counts += resp.sum(axis=0)
                first += np.einsum("rk,krd->kd", resp, completed)
                second += np.einsum("krd,kre->kde", completed * resp.T[:, :, None], completed)
            if pattern.missing.size:
                assert terms.conditional is not None
                block = (slice(None), pattern.missing[:, None], pattern.missing[None, :])
                second[block] += pattern_counts[:, None, None] * terms.conditional
            nk += pattern_counts
        return log_likelihood, self._statistics(nk, first, second)

    def _statistics(self, nk: FloatArray, first: FloatArray, second: FloatArray) -> Statistics:
        nk = nk + 10 * np.finfo(np.float64).eps
        if self.covariance_type == "full":
            return Statistics(nk, first, second)
        if self.covariance_type == "tied":
            return Statistics(nk, first, second.sum(axis=0))
        return Statistics(nk, first, np.diagonal(second, axis1=1, axis2=2).copy())

    def m_step(self, stats: Statistics, params: GaussianParams) -> tuple[GaussianParams, list[str]]:
        centred_means = stats.first / stats.nk[:, None]
        covariances = _COVARIANCES[self.covariance_type](stats, centred_means, self.reg_covar)
        covariances, prec_chol, collapsed = precisions_from_covariances(
            covariances, self.covariance_type, self.filled.floor
        )
        weights = stats.nk / stats.nk.sum()
        warnings = self.filled._collapse_warnings(collapsed)
        return GaussianParams(weights, centred_means + self.shift, covariances, prec_chol), warnings

    def log_responsibilities(self, params: GaussianParams) -> FloatArray:
        log_resp = np.empty((self.n_observations, self.n_components))
        for pattern in self.patterns:
            terms = self._pattern_terms(params, pattern)
            for rows in self._chunks(pattern):
                joint = self._log_joint(terms, pattern, rows)
                top = np.max(joint, axis=1, keepdims=True)
                log_resp[rows] = joint - (np.log(np.sum(np.exp(joint - top), axis=1, keepdims=True)) + top)
        return log_resp

    def imputed(self, params: GaussianParams, log_resp: FloatArray) -> FloatArray:
        """Each point with its missing coordinates replaced by their conditional mean under the fitted mixture:
        sum_k P(k | x_O) E[x_M | x_O, k]."""
        completed = self.X.copy()
        resp = np.exp(log_resp)
        for pattern in self.patterns:
            if not pattern.missing.size:
                continue
            terms = self._pattern_terms(params, pattern)
            for rows in self._chunks(pattern):
                per_component = self._completed(terms, pattern, rows)[:, :, pattern.missing]
                expected = np.einsum("rk,krm->rm", resp[rows], per_component)
                completed[np.ix_(rows, pattern.missing)] = expected + self.shift[pattern.missing]
        return completed

    # --- ordering, output and warnings: the filled-in mixture's (they depend on the parameters only) ---

    def diagnose(self, params: GaussianParams) -> list[str]:
        return self.filled.diagnose(params)

    def canonical_order(self, params: GaussianParams) -> NDArray[np.intp]:
        return self.filled.canonical_order(params)

    def permute(self, params: GaussianParams, order: NDArray[np.intp]) -> GaussianParams:
        return self.filled.permute(params, order)

    def to_dict(self, params: GaussianParams) -> dict[str, Any]:
        return self.filled.to_dict(params)

    def collapsed_components(self, params: GaussianParams) -> list[int]:
        return self.filled.collapsed_components(params)
