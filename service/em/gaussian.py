"""Gaussian mixture: four covariance types, Cholesky precisions, k-means / k-means++ / random starts.

The M-step follows scikit-learn's ``GaussianMixture`` exactly (``reg_covar`` on the diagonal, a tiny
floor on component counts), so from the same start both walk the same path. Everything is in log
space; the passes over the data (E-step and the M-step's sums together) live in ``gaussian_pass``.
"""

from __future__ import annotations

import warnings as pywarnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import linalg
from scipy.cluster.vq import kmeans2

from service.em.coins import check_weights
from service.em.gaussian_checks import (
    MAX_SPREAD,
    CovarianceType,
    InitMethod,
    WorkingDtype,
    check_enough_distinct_points,
    check_options,
    check_spread,
    column_variances,
    floor_of,
    not_positive_definite,
    shape_covariances,
    shape_means,
)
from service.em.gaussian_pass import Components, Design, Moments
from service.em.seeding import kmeans_plus_plus, squared_distances

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class GaussianParams:
    weights: FloatArray  # (K,)
    means: FloatArray  # (K, d)
    covariances: FloatArray  # full (K,d,d), diag (K,d), spherical (K,), tied (d,d)
    precisions_cholesky: FloatArray  # same shape; precision = P @ P.T (full/tied) or P**2


# --- M-step: covariances from accumulated moments, one function per type ---
#
# The responsibilities are reduced (in the E-step's pass) to counts, first moments and second moments of
# the (centred) data; every covariance type is then a few K x d x d operations. The results equal
# scikit-learn's per-component sums of r (x - mean)(x - mean)^T: centring the data once keeps the
# second-moment form free of cancellation.


@dataclass(frozen=True)
class Statistics:
    """What the M-step needs of the responsibilities (taken in the E-step's pass over the data)."""

    nk: FloatArray  # (K,) summed responsibilities, plus scikit-learn's 10 eps floor
    first: FloatArray  # (K, d) sum of r x
    second: FloatArray  # full: (K, d, d) sum of r x x^T; diag/spherical: (K, d) sum of r x^2; tied: X^T X


def _covariances_full(m: Statistics, means: FloatArray, reg: float) -> FloatArray:
    centre = m.first / m.nk[:, None]
    # sum r (x - a)(x - a)^T / nk = second / nk - centre a^T - a centre^T + a a^T  (a = the means used)
    cross = np.einsum("ki,kj->kij", centre, means)
    covariances: FloatArray = (
        m.second / m.nk[:, None, None] - cross - cross.transpose(0, 2, 1) + np.einsum("ki,kj->kij", means, means)
    )
    covariances = (covariances + covariances.transpose(0, 2, 1)) / 2
    covariances[:, np.arange(means.shape[1]), np.arange(means.shape[1])] += reg
    return covariances


def _covariances_tied(m: Statistics, means: FloatArray, reg: float) -> FloatArray:
    cross = m.first.T @ means
    covariance: FloatArray = (m.second - cross - cross.T + (m.nk * means.T) @ means) / m.nk.sum()
    covariance = (covariance + covariance.T) / 2
    covariance.flat[:: len(covariance) + 1] += reg
    return covariance


def _covariances_diag(m: Statistics, means: FloatArray, reg: float) -> FloatArray:
    centre = m.first / m.nk[:, None]
    return m.second / m.nk[:, None] - 2 * centre * means + means**2 + reg


def _covariances_spherical(m: Statistics, means: FloatArray, reg: float) -> FloatArray:
    return _covariances_diag(m, means, reg).mean(axis=1)  # type: ignore[no-any-return]


_COVARIANCES: dict[str, Callable[[Statistics, FloatArray, float], FloatArray]] = {
    "full": _covariances_full,
    "tied": _covariances_tied,
    "diag": _covariances_diag,
    "spherical": _covariances_spherical,
}


# --- components that coincide ---

# Two components whose means (against the data's extent) and covariances (against their own size) agree to
# this are one group fitted twice: EM keeps identical components identical, so they never separate.
_COINCIDE_RTOL = 1e-6


def _largest_coordinate(X: FloatArray) -> float:
    """The largest |coordinate| of the (centred) data: the scale means are compared on. No n x d temporary,
    and no squares, which would underflow for data of scale 1e-300."""
    return float(max(np.max(X.max(axis=0)), -np.min(X.min(axis=0))))


def _coincident_groups(means: FloatArray, covariances: FloatArray | None, extent: float) -> list[list[int]]:
    """Groups (of two or more) of components with equal means and covariances; ``None``: shared (tied)."""
    groups: list[list[int]] = []
    placed: set[int] = set()
    for i in range(len(means)):
        group = [j for j in range(i, len(means)) if j not in placed and _same(means, covariances, extent, i, j)]
        if len(group) > 1:
            groups.append(group)
            placed.update(group)
    return groups


def _same(means: FloatArray, covariances: FloatArray | None, extent: float, i: int, j: int) -> bool:
    if not np.max(np.abs(means[i] - means[j])) <= _COINCIDE_RTOL * extent:
        return False
    if covariances is None:
        return True
    scale = max(np.max(np.abs(covariances[i])), np.max(np.abs(covariances[j])))
    return bool(np.max(np.abs(covariances[i] - covariances[j])) <= _COINCIDE_RTOL * scale)


# --- precisions: Cholesky factors of the inverse covariances, with a floor for collapsed components ---


def _cholesky_precision(covariance: FloatArray, floor: float) -> FloatArray | None:
    """The precision's Cholesky factor, or None when the covariance is singular *or nearly so*.

    Nearly: a conditional variance (a squared Cholesky pivot) below ``floor``. Such a component sits on
    a single point or a line; its density, and so the likelihood, is then ruled by rounding noise.
    """
    try:
        cov_chol = linalg.cholesky(covariance, lower=True)
    except linalg.LinAlgError:
        return None
    if np.min(np.diag(cov_chol)) ** 2 < floor:
        return None
    inverse, info = linalg.lapack.dtrtri(cov_chol, lower=1)  # triangular inverse: what solve_triangular(L, I) gives
    if info != 0:
        return None
    result: FloatArray = inverse.T
    return result


def _regularise_until_pd(covariance: FloatArray, floor: float) -> tuple[FloatArray, FloatArray]:
    bump = floor
    covariance = covariance.copy()
    covariance = (covariance + covariance.T) / 2
    while True:
        covariance.flat[:: len(covariance) + 1] += bump
        prec_chol = _cholesky_precision(covariance, floor)
        if prec_chol is not None:
            return covariance, prec_chol
        bump *= 10


def precisions_from_covariances(
    covariances: FloatArray, covariance_type: str, floor: float
) -> tuple[FloatArray, FloatArray, list[int]]:
    """Cholesky precisions; components whose covariance is singular are lifted by ``floor`` (and named)."""
    collapsed: list[int] = []
    if covariance_type == "full":
        covariances = covariances.copy()
        prec = np.empty_like(covariances)
        for k, cov in enumerate(covariances):
            chol = _cholesky_precision(cov, floor)
            if chol is None:
                collapsed.append(k)
                covariances[k], chol = _regularise_until_pd(cov, floor)
            prec[k] = chol
        return covariances, prec, collapsed
    if covariance_type == "tied":
        chol = _cholesky_precision(covariances, floor)
        if chol is None:
            collapsed.append(0)
            covariances, chol = _regularise_until_pd(covariances, floor)
        return covariances, chol, collapsed
    bad = ~(covariances >= floor) if covariance_type == "spherical" else np.any(~(covariances >= floor), axis=1)
    if np.any(bad):
        collapsed = np.flatnonzero(bad).tolist()
        covariances = np.maximum(covariances, floor)
    return covariances, 1.0 / np.sqrt(covariances), collapsed


def n_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Free parameters, scikit-learn's count (for BIC/AIC)."""
    covariance_params = {
        "full": n_components * n_features * (n_features + 1) / 2,
        "diag": n_components * n_features,
        "tied": n_features * (n_features + 1) / 2,
        "spherical": n_components,
    }[covariance_type]
    return int(covariance_params + n_components * n_features + n_components - 1)


@dataclass(frozen=True)
class DataSummary:
    """What a Gaussian mixture knows of its data besides its passes over the rows (taken once, in one pass or two)."""

    n_observations: int
    n_features: int
    shift: FloatArray  # the points' mean: the passes see the points centred on it
    column_variances: FloatArray  # each dimension's variance about ``shift``
    extent: float  # the largest |centred coordinate|: the scale coinciding means are compared on
    gram: FloatArray | None  # tied covariance only: the centred points' Gram matrix X^T X


class GaussianMixtureRules:
    """The hooks of a Gaussian mixture that need only a :class:`DataSummary` of its data, never its rows.

    The M-step, starting arrays a caller gave, the returned fit's warnings, ordering and output. A subclass
    adds the passes over the rows: :class:`GaussianMixture` in this process, ``service.distributed`` on a Dask
    cluster. Both then take every step from the same code, so from the same start they walk the same path.
    """

    def __init__(
        self,
        summary: DataSummary,
        n_components: int,
        covariance_type: CovarianceType = "full",
        reg_covar: float = 1e-6,
        init_method: InitMethod = "kmeans",
        init_means: Any = None,
        init_covariances: Any = None,
        init_weights: Any = None,
        dtype: WorkingDtype = "float64",
    ) -> None:
        self.summary = summary
        self.n_components, self.covariance_type = n_components, covariance_type
        self.reg_covar, self.init_method = reg_covar, init_method
        self.shift = summary.shift
        self.column_variances = summary.column_variances
        self.floor = floor_of(self.column_variances) if summary.n_observations > 1 else 1e-10
        self._gram = summary.gram
        # Caller-given starting arrays, checked now so a bad shape fails before any work.
        K, d = n_components, summary.n_features
        self.given_means = None if init_means is None else shape_means(init_means, K, d, self.shift, MAX_SPREAD[dtype])
        self.given_covariances = (
            None if init_covariances is None else shape_covariances(init_covariances, K, d, covariance_type)
        )
        self.given_weights = None if init_weights is None else check_weights(init_weights, n_components, "init.weights")
        if self.given_covariances is not None:
            _, _, collapsed = precisions_from_covariances(self.given_covariances, covariance_type, self.floor)
            if collapsed:
                raise not_positive_definite(collapsed, self.floor)

    @property
    def n_observations(self) -> int:
        return self.summary.n_observations

    @property
    def n_features(self) -> int:
        return self.summary.n_features

    # --- starts ---

    def initialize(self, rng: np.random.Generator) -> GaussianParams:
        """A start: caller-given arrays as given, the rest filled from the responsibilities they imply.

        Given means: each point goes to its nearest given mean; otherwise the init method assigns points.
        ``reg_covar`` is not added to given covariances (as scikit-learn's ``precisions_init``).
        """
        means, covariances, weights = self.given_means, self.given_covariances, self.given_weights
        if means is None or covariances is None or weights is None:
            centred_means = None if means is None else means - self.shift
            moments = self._statistics(self.start_moments(rng, centred_means))
            if centred_means is None:
                centred_means = moments.first / moments.nk[:, None]
            if covariances is None:
                covariances = _COVARIANCES[self.covariance_type](moments, centred_means, self.reg_covar)
            if weights is None:
                weights = moments.nk / moments.nk.sum()
            means = centred_means + self.shift
        covariances, prec_chol, _ = precisions_from_covariances(covariances, self.covariance_type, self.floor)
        return GaussianParams(weights, means, covariances, prec_chol)

    def start_moments(self, rng: np.random.Generator, centred_means: FloatArray | None) -> Moments:
        """The sums over the rows of a start's responsibilities: each point to its nearest of ``centred_means``
        when given, otherwise as the init method assigns them (drawing from ``rng``)."""
        raise NotImplementedError

    # --- the EM hooks that need no rows ---

    def m_step(self, moments: Statistics, params: GaussianParams) -> tuple[GaussianParams, list[str]]:
        centred_means = moments.first / moments.nk[:, None]
        covariances = _COVARIANCES[self.covariance_type](moments, centred_means, self.reg_covar)
        covariances, prec_chol, collapsed = precisions_from_covariances(covariances, self.covariance_type, self.floor)
        weights = moments.nk / moments.nk.sum()
        return GaussianParams(weights, centred_means + self.shift, covariances, prec_chol), self._collapse_warnings(
            collapsed
        )

    def components(self, params: GaussianParams) -> Components:
        """What a pass over the (centred) rows needs of ``params``."""
        return Components(params.means - self.shift, params.precisions_cholesky, params.weights)

    def _statistics(self, moments: Moments) -> Statistics:
        """scikit-learn's floor on the counts (an empty component divides by ~0, not 0); tied: the data's Gram."""
        nk = moments.nk + 10 * np.finfo(np.float64).eps
        second = self._gram if self.covariance_type == "tied" else moments.second
        assert second is not None  # every other type's pass takes its second moments
        return Statistics(nk, moments.first, second)

    def _collapse_warnings(self, collapsed: list[int]) -> list[str]:
        if not collapsed:
            return []
        what = "the tied covariance" if self.covariance_type == "tied" else f"component(s) {collapsed}"
        return [
            f"{what} collapsed (singular covariance); regularised by adding at least {self.floor:.3g} "
            "to the diagonal — consider fewer components or a larger reg_covar"
        ]

    # --- the returned fit's own warnings ---

    def _extent(self) -> float:
        """The largest |centred coordinate| (see :class:`DataSummary`)."""
        return self.summary.extent

    def diagnose(self, params: GaussianParams) -> list[str]:
        """Components that explain no data, that collapsed onto repeated values, and that coincide (one group
        fitted twice)."""
        return [*self._empty_warnings(params), *self._collapsed_warnings(params), *self._coincidence_warnings(params)]

    def collapsed_components(self, params: GaussianParams) -> list[int]:
        """Components with data whose own variance is nil in some dimension (all they explain shares one value
        there): only reg_covar holds them up, and the likelihood grows without bound as it shrinks, so such a
        fit's log-likelihood (and BIC) says more about reg_covar than about the data."""
        if self.covariance_type == "tied":  # a pooled covariance collapses only with the data itself
            return []
        covariances = params.covariances
        if self.covariance_type == "full":
            variances = np.diagonal(covariances, axis1=1, axis2=2)
        elif self.covariance_type == "diag":
            variances = covariances
        else:
            variances = np.repeat(covariances[:, None], self.n_features, axis=1)
        own = variances - self.reg_covar
        nil = (own <= 1e-8 * self.column_variances) & (self.column_variances > 0)
        explains_data = params.weights * self.n_observations >= 1  # empty ones have their own warning
        return np.flatnonzero(np.any(nil, axis=1) & explains_data).tolist()

    def _collapsed_warnings(self, params: GaussianParams) -> list[str]:
        collapsed = self.collapsed_components(params)
        if not collapsed:
            return []
        return [
            f"component(s) {collapsed} collapsed onto points that share one value in some dimension (their variance "
            "there is only reg_covar): the likelihood is unbounded there, so this fit's log-likelihood and BIC are "
            "not comparable with other fits' — consider fewer components or a larger reg_covar"
        ]

    def _empty_warnings(self, params: GaussianParams) -> list[str]:
        # Less than one point's share: its mean and covariance come from the floors, not from data.
        empty = np.flatnonzero(params.weights * self.n_observations < 1).tolist()
        if not empty:
            return []
        return [
            f"component(s) {empty} ended with (near) zero weight (at most {np.max(params.weights[empty]):.3g}, "
            f"less than one point's share): they explain no data — consider fewer components or other starts"
        ]

    def _coincidence_warnings(self, params: GaussianParams) -> list[str]:
        extent = self._extent()
        covariances = None if self.covariance_type == "tied" else params.covariances
        groups = _coincident_groups(params.means - self.shift, covariances, extent)
        # Squares of such data underflow: every point looks alike to every component.
        advice = f"rescale the data (they span only {extent:.3g})" if extent < 1e-150 else "consider fewer components"
        return [
            f"components {group} coincide (means and covariances equal to {_COINCIDE_RTOL:g} relative): they fit "
            f"one group twice — {advice}"
            for group in groups
        ]

    # --- ordering and output ---

    def canonical_order(self, params: GaussianParams) -> NDArray[np.intp]:
        # np.lexsort sorts by the last key first: feed the columns reversed for lexicographic order.
        return np.lexsort(params.means.T[::-1])

    def permute(self, params: GaussianParams, order: NDArray[np.intp]) -> GaussianParams:
        if self.covariance_type == "tied":
            return GaussianParams(
                params.weights[order], params.means[order], params.covariances, params.precisions_cholesky
            )
        return GaussianParams(
            params.weights[order],
            params.means[order],
            params.covariances[order],
            params.precisions_cholesky[order],
        )

    def to_dict(self, params: GaussianParams) -> dict[str, Any]:
        out: dict[str, Any] = {
            "weights": params.weights.tolist(),
            "means": params.means.tolist(),
            "covariances": params.covariances.tolist(),
        }
        if self.n_features == 1:
            out["stds"] = np.sqrt(self.component_variances_1d(params)).tolist()
        return out

    def component_variances_1d(self, params: GaussianParams) -> FloatArray:
        covariances = params.covariances
        if self.covariance_type == "tied":
            return np.full(self.n_components, float(covariances.reshape(-1)[0]))
        return covariances.reshape(self.n_components)


class GaussianMixture(GaussianMixtureRules):
    """A Gaussian mixture over the rows of ``X``; fills the hooks of :class:`service.em.loop.EMModel`.

    Parameters are always in the caller's coordinates; internally the data are centred on their mean
    (a shift the likelihood does not see), so second moments lose no precision far from the origin.
    ``dtype="float32"`` runs the passes over the data in single precision (half the memory traffic);
    the parameters and every sum across chunks stay in double precision.
    """

    def __init__(
        self,
        X: FloatArray,
        n_components: int,
        covariance_type: CovarianceType = "full",
        reg_covar: float = 1e-6,
        init_method: InitMethod = "kmeans",
        init_means: Any = None,
        init_covariances: Any = None,
        init_weights: Any = None,
        dtype: WorkingDtype = "float64",
    ) -> None:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[:, None]
        # The same checks the API process ran before queueing the fit (see gaussian_checks).
        check_options(X, n_components, covariance_type, reg_covar, dtype)
        check_enough_distinct_points(X, n_components)
        shift = check_spread(X, dtype)
        # The design centres X as it copies it in (a block at a time: no centred copy of the whole data)
        self._design = Design(X, n_components, covariance_type, np.dtype(dtype).type, shift=shift)
        # In double precision the design holds the centred data already: keep one copy, not two.
        self.X: FloatArray = self._design.X if dtype == "float64" else X - shift  # type: ignore[assignment]
        summary = DataSummary(
            n_observations=int(self.X.shape[0]),
            n_features=int(self.X.shape[1]),
            shift=shift,
            column_variances=column_variances(self.X) if len(self.X) > 1 else np.zeros(self.X.shape[1]),
            extent=np.nan,  # taken when asked (see _extent): only the returned fit's warnings need it
            gram=self.X.T @ self.X if covariance_type == "tied" else None,
        )
        super().__init__(
            summary, n_components, covariance_type, reg_covar, init_method, init_means, init_covariances,
            init_weights, dtype,
        )  # fmt: skip

    # --- starts ---

    def start_moments(self, rng: np.random.Generator, centred_means: FloatArray | None) -> Moments:
        resp = self._initial_resp(rng) if centred_means is None else self._nearest_resp(centred_means)
        return self._design.moments(resp)

    def _initial_resp(self, rng: np.random.Generator) -> FloatArray:
        n_samples, K = self.n_observations, self.n_components
        resp = np.zeros((n_samples, K))
        if self.init_method == "random":
            resp = rng.uniform(size=(n_samples, K))
            resp /= resp.sum(axis=1, keepdims=True)
        elif self.init_method == "random_from_data":
            resp[rng.choice(n_samples, size=K, replace=False), np.arange(K)] = 1
        elif self.init_method == "kmeans++":
            resp[kmeans_plus_plus(self.X, K, rng), np.arange(K)] = 1
        else:
            resp[np.arange(n_samples), self._kmeans_labels(rng)] = 1
        return resp

    def _kmeans_labels(self, rng: np.random.Generator) -> NDArray[np.intp]:
        seeds = self.X[kmeans_plus_plus(self.X, self.n_components, rng)]
        with pywarnings.catch_warnings():
            # An emptied cluster keeps its seed; its component then starts small and is regularised.
            pywarnings.simplefilter("ignore")
            _, labels = kmeans2(self.X, seeds, iter=20, minit="matrix", missing="warn")
        return labels  # type: ignore[no-any-return]

    def _nearest_resp(self, centred_means: FloatArray) -> FloatArray:
        resp = np.zeros((self.n_observations, self.n_components))
        resp[np.arange(self.n_observations), np.argmin(squared_distances(self.X, centred_means), axis=1)] = 1
        return resp

    # --- the EM hooks ---

    def e_step(self, params: GaussianParams) -> tuple[float, Statistics]:
        """Log-likelihood at ``params`` and the sums the M-step needs, in one pass over the data."""
        log_likelihood, moments = self._design.expectation(self.components(params))
        return log_likelihood, self._statistics(moments)

    def log_responsibilities(self, params: GaussianParams) -> FloatArray:
        return self._design.log_responsibilities(self.components(params))

    def labels(self, params: GaussianParams) -> NDArray[np.intp]:
        """Each point's most probable component, without the n x K log-responsibilities."""
        return self._design.labels(self.components(params))

    def _extent(self) -> float:
        return _largest_coordinate(self.X)
