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
    """What a pattern's points share, per component, stacked so that one product serves all K components."""

    whiten: FloatArray  # K|O| x |O|: [L_1^-1; ...; L_K^-1] stacked, with S_kOO = L_k L_k^T
    whiten_offset: FloatArray  # K|O| x 1: the means' whitened observed parts
    constant: FloatArray  # K x 1: log w_k - (|O| log 2 pi + log det S_kOO) / 2
    gain: FloatArray | None  # K|M| x |O|: S_MO S_OO^-1 of every component, stacked
    gain_offset: FloatArray | None  # K|M| x 1: mu_kM - S_MO S_OO^-1 mu_kO
    conditional: FloatArray | None  # K x |M| x |M|: S_MM - S_MO S_OO^-1 S_OM


@dataclass(frozen=True)
class _Pattern:
    rows: NDArray[np.intp]
    observed: NDArray[np.intp]
    missing: NDArray[np.intp]
    data: FloatArray  # the rows' observed coordinates, centred, long axis last (|O| x rows, contiguous)


def _patterns(centred: FloatArray) -> list[_Pattern]:
    """The points grouped by which coordinates they miss (complete points form one group), each group's observed
    coordinates copied out once (together one copy of the data) so every pass reads them contiguously."""
    missing = np.isnan(centred)
    keys, inverse = np.unique(missing, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(keys) + 1))
    patterns = []
    for p, key in enumerate(keys):
        rows, observed = order[bounds[p] : bounds[p + 1]], np.flatnonzero(~key)
        data = np.ascontiguousarray(centred[np.ix_(rows, observed)].T)
        patterns.append(_Pattern(rows, observed, np.flatnonzero(key), data))
    return patterns


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
        self.patterns = _patterns(self.centred)
        # Patterns grouped by how many coordinates they observe: (their indices, observed, missing index arrays).
        self._groups = []
        for q in sorted({len(p.observed) for p in self.patterns}):
            members = [i for i, p in enumerate(self.patterns) if len(p.observed) == q]
            observed = np.array([self.patterns[i].observed for i in members], dtype=np.intp)
            missing = np.array([self.patterns[i].missing for i in members], dtype=np.intp).reshape(len(members), -1)
            self._groups.append((members, observed, missing))
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

    # --- the passes: per pattern, every component in one product (stacked small matrices), rows in chunks ---

    def _all_terms(self, params: GaussianParams) -> list[_PatternTerms]:
        """Every pattern's terms, in pattern order. Patterns that observe as many coordinates share their shapes:
        each such group's blocks are factorised in one batched call (a call per pattern would cost ~0.3 ms
        apiece, which hundreds of patterns would pay every iteration)."""
        K, d = self.n_components, self.n_features
        covariances = full_covariances(params.covariances, self.covariance_type, K, d)
        means = params.means - self.shift
        with np.errstate(divide="ignore"):
            log_weights = np.log(params.weights)
        terms: list[_PatternTerms | None] = [None] * len(self.patterns)
        for members, o, m in self._groups:  # o: patterns x |O| observed indices, m: patterns x |M| missing ones
            q = o.shape[1]
            observed_block = covariances[:, o[:, :, None], o[:, None, :]]  # K x patterns x |O| x |O|
            inverse_factor = np.linalg.inv(np.linalg.cholesky(observed_block))  # L^-1
            log_det = -2 * np.sum(np.log(np.diagonal(inverse_factor, axis1=2, axis2=3)), axis=2)  # K x patterns
            constant = log_weights[:, None] - 0.5 * (q * _LOG_2PI + log_det)
            observed_means = means[:, o]  # K x patterns x |O|
            whiten_offset = np.einsum("kpo,kpqo->kpq", observed_means, inverse_factor)
            if m.shape[1]:
                cross = covariances[:, m[:, :, None], o[:, None, :]]  # S_MO: K x patterns x |M| x |O|
                gains = cross @ np.swapaxes(inverse_factor, 2, 3) @ inverse_factor  # S_MO S_OO^-1
                gain_offset = means[:, m] - np.einsum("kpmo,kpo->kpm", gains, observed_means)
                conditional = covariances[:, m[:, :, None], m[:, None, :]] - gains @ np.swapaxes(cross, 2, 3)
            for j, index in enumerate(members):
                gain = gain_offset_j = conditional_j = None
                if m.shape[1]:
                    gain = gains[:, j].reshape(-1, q)
                    gain_offset_j = gain_offset[:, j].reshape(-1, 1)
                    conditional_j = conditional[:, j]
                terms[index] = _PatternTerms(
                    inverse_factor[:, j].reshape(-1, q), whiten_offset[:, j].reshape(-1, 1), constant[:, j, None],
                    gain, gain_offset_j, conditional_j,
                )  # fmt: skip
        return terms  # type: ignore[return-value]

    def _chunks(self, pattern: _Pattern) -> list[slice]:
        size = max(256, _CHUNK_NUMBERS // (self.n_components * self.n_features))
        return [slice(start, min(start + size, len(pattern.rows))) for start in range(0, len(pattern.rows), size)]

    def _log_joint(self, terms: _PatternTerms, x: FloatArray) -> FloatArray:
        """log(w_k N(x_O | mu_kO, S_kOO)) for a chunk's observed coordinates ``x`` (|O| x rows): K x rows."""
        whitened = terms.whiten @ x
        whitened -= terms.whiten_offset
        whitened *= whitened
        squares = whitened.reshape(self.n_components, -1, x.shape[1]).sum(axis=1)
        joint: FloatArray = terms.constant - 0.5 * squares
        return joint

    def _conditional_means(self, terms: _PatternTerms, x: FloatArray) -> FloatArray:
        """Each component's conditional means of the missing coordinates: K x |M| x rows (centred)."""
        assert terms.gain is not None and terms.gain_offset is not None
        means = terms.gain @ x
        means += terms.gain_offset
        return means.reshape(self.n_components, -1, x.shape[1])

    def e_step(self, params: GaussianParams) -> tuple[float, Statistics]:
        K, d = self.n_components, self.n_features
        nk, first, second = np.zeros(K), np.zeros((K, d)), np.zeros((K, d, d))
        log_likelihood = 0.0
        for pattern, terms in zip(self.patterns, self._all_terms(params), strict=True):
            o, m = pattern.observed, pattern.missing
            counts, first_o, second_oo = np.zeros(K), np.zeros((K, len(o))), np.zeros((K * len(o), len(o)))
            first_m, second_mo = np.zeros((K, len(m))), np.zeros((K * len(m), len(o)))
            second_mm = np.zeros((K, len(m), len(m)))
            for chunk in self._chunks(pattern):
                x = pattern.data[:, chunk]  # |O| x rows
                resp = self._log_joint(terms, x)  # K x rows: reductions over K are K - 1 row operations
                top = np.max(resp, axis=0)
                resp -= top
                # Floored as the complete-data pass does: exp's slow path near underflow costs 2-5x, and beside
                # each row's best component (1) what e^-100 would add is below rounding.
                np.maximum(resp, -100.0, out=resp)
                np.exp(resp, out=resp)
                total = resp.sum(axis=0)
                log_likelihood += float(np.sum(np.log(total)) + np.sum(top))
                resp /= total
                counts += resp.sum(axis=1)
                first_o += resp @ x.T
                weighted = (resp[:, None, :] * x[None, :, :]).reshape(-1, x.shape[1])  # r_k x, K|O| x rows
                second_oo += weighted @ x.T
                if m.size:
                    conditional_means = self._conditional_means(terms, x)  # K x |M| x rows
                    weighted_means = conditional_means * resp[:, None, :]
                    first_m += weighted_means.sum(axis=2)
                    second_mo += weighted_means.reshape(-1, x.shape[1]) @ x.T
                    second_mm += weighted_means @ np.swapaxes(conditional_means, 1, 2)
            nk += counts
            first[:, o] += first_o
            second[:, o[:, None], o[None, :]] += second_oo.reshape(K, len(o), len(o))
            if m.size:
                assert terms.conditional is not None
                cross = second_mo.reshape(K, len(m), len(o))
                first[:, m] += first_m
                second[:, m[:, None], o[None, :]] += cross
                second[:, o[:, None], m[None, :]] += np.swapaxes(cross, 1, 2)
                second[:, m[:, None], m[None, :]] += second_mm + counts[:, None, None] * terms.conditional
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
        for pattern, terms in zip(self.patterns, self._all_terms(params), strict=True):
            for chunk in self._chunks(pattern):
                joint = self._log_joint(terms, pattern.data[:, chunk])
                top = np.max(joint, axis=0)
                normaliser = np.log(np.sum(np.exp(joint - top), axis=0)) + top
                log_resp[pattern.rows[chunk]] = (joint - normaliser).T
        return log_resp

    def imputed(self, params: GaussianParams, log_resp: FloatArray) -> FloatArray:
        """Each point with its missing coordinates replaced by their conditional mean under the fitted mixture:
        sum_k P(k | x_O) E[x_M | x_O, k]."""
        completed = self.X.copy()
        resp = np.exp(log_resp)
        for pattern, terms in zip(self.patterns, self._all_terms(params), strict=True):
            if not pattern.missing.size:
                continue
            for chunk in self._chunks(pattern):
                rows = pattern.rows[chunk]
                per_component = self._conditional_means(terms, pattern.data[:, chunk])
                expected = np.einsum("rk,kmr->rm", resp[rows], per_component)
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
