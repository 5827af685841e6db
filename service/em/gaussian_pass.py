"""One pass of a Gaussian mixture over its data: log-densities, responsibilities and the M-step's sums.

The E-step and the sums the next M-step needs (counts, first and second moments) are taken in the same
pass over row chunks, so no n x K array lives between the two steps and every chunk's temporaries stay
in cache. Two ways to the log-densities, chosen once per model:

- *expanded*, for diagonal covariances (diag, spherical, and every type on 1-D data): the log-density
  is linear in the features ``[1, x, x*x]``, so a chunk's K log-densities are one matrix product, and its
  sums for the M-step one more product with the same features.
- *whitened*, for full and tied covariances: all K components are whitened by one matrix product,
  ``[P_1 ... P_K]^T (x - mean_k)`` as ``(K d x (d+1)) @ ((d+1) x n_chunk)`` on the features ``[1, x]``.

Sums over a chunk's rows (a short output, a long inner axis) with few components are taken by
``np.einsum``, not ``@``: measured on 2 cores, ``np.matmul`` gains nothing from a second thread for
such shapes, einsum 1.5x; with more components matmul is the faster of the two.
Everything is laid out with the long axis last: features as (width x n), a chunk's log-densities as
(K x n_chunk). Reductions over components are then K - 1 elementwise operations on contiguous rows, and
a product of two features is one contiguous multiply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.em.chunks import map_chunks, row_chunks, weighted_sums

FloatArray = NDArray[np.float64]
WorkArray = NDArray[np.floating]  # float64, or float32 when the caller opted in

_LOG_2PI = np.log(2 * np.pi)
# Elements of a chunk's largest temporary (K d x n_chunk whitened, or K x n_chunk), and the fewest rows
# a chunk may have (below that, products over the rows lose their efficiency). Measured on 2 cores
# over the benchmark grid: larger chunks spill the cache, smaller ones add per-call overhead.
_CHUNK_ELEMENTS = 1 << 18
_MIN_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class Moments:
    """Responsibility-weighted sums over the data (centred coordinates)."""

    nk: FloatArray  # (K,) summed responsibilities
    first: FloatArray  # (K, d) sum of r x
    second: FloatArray | None  # full: (K, d, d) sum of r x x^T; diag/spherical: (K, d) sum of r x^2; tied: None


@dataclass(frozen=True)
class Components:
    """What a pass needs of the parameters: centred means, Cholesky precisions, mixing weights."""

    means: FloatArray
    precisions_cholesky: FloatArray
    weights: FloatArray


class Design:
    """The features of every row, built once per fit in the working dtype, and the row chunks of a pass."""

    def __init__(self, X: FloatArray, n_components: int, covariance_type: str, dtype: type[np.floating]) -> None:
        n_samples, n_features = X.shape
        self.covariance_type = covariance_type
        self.n_components, self.n_features = n_components, n_features
        self.expanded = covariance_type in ("diag", "spherical") or n_features == 1
        self.dtype = dtype
        # Full covariances: a chunk's second moments come from one product with the rows' pairwise products
        # x_i x_j (i <= j) when that is less work than weighing the rows once per component (d <= 2K);
        # otherwise from per-component Gram products, one of which the chunk's own Gram spares (below).
        full_whitened = covariance_type == "full" and not self.expanded
        use_pairs = full_whitened and n_features <= 2 * n_components
        self.pairs = np.triu_indices(n_features) if use_pairs else None
        self.grams = full_whitened and not use_pairs
        width = 1 + n_features * (2 if self.expanded else 1) + (1 if self.grams else 0)
        self.features: WorkArray = np.empty((width, n_samples), dtype)
        self.features[0] = 1.0
        self.features[1 : 1 + n_features] = X.T
        if self.expanded:
            np.square(X.T, out=self.features[1 + n_features :])
        elif self.grams:  # |x|^2: its weighted sums are the traces of the components' second moments
            np.sum(X * X, axis=1, out=self.features[-1])
        widest = n_components * (1 if self.expanded else n_features)
        self.chunks = row_chunks(n_samples, max(_MIN_CHUNK_ROWS, _CHUNK_ELEMENTS // widest))
        self.chunk_grams = map_chunks(self._gram, self.chunks) if self.grams else []

    def _gram(self, rows: slice) -> FloatArray:
        x = self.features[1 : 1 + self.n_features, rows]
        return np.dot(x, x.T).astype(np.float64, copy=False)  # type: ignore[no-any-return]

    @property
    def X(self) -> WorkArray:
        """The (centred) data, n x d, as a view into the features."""
        return self.features[1 : 1 + self.n_features].T

    # --- log-densities ---

    def log_density(self, components: Components) -> Callable[[slice], WorkArray]:
        """A function from a row chunk to its K x n_chunk weighted log-densities log(w_k N(x | k))."""
        K, d = self.n_components, self.n_features
        log_det = _log_det_cholesky(components.precisions_cholesky, self.covariance_type, d)
        with np.errstate(divide="ignore"):  # a zero weight is a legal, impossible component: log 0 = -inf
            constant = log_det - 0.5 * d * _LOG_2PI + np.log(components.weights)
        constant = np.broadcast_to(constant, (K,))
        means = components.means
        if self.expanded:
            precisions = self._diagonal_precisions(components.precisions_cholesky)
            # -1/2 sum_j p_j (x_j - m_j)^2 + c  =  [c - 1/2 sum_j p_j m_j^2,  p m,  -1/2 p] . [1, x, x^2]
            offset = constant - 0.5 * np.sum(precisions * means**2, axis=1)
            # A zero weight's -inf stays out of the product, its rows are set after: BLAS kernels also multiply
            # the padding zeros of their tiles, and -inf * 0 raises the invalid flag numpy then reports.
            absent = np.flatnonzero(components.weights == 0)
            offset[absent] = 0.0
            weights = np.hstack([offset[:, None], precisions * means, -0.5 * precisions]).astype(self.dtype)
            features = self.features

            def expanded(rows: slice) -> WorkArray:
                log_prob: WorkArray = weights @ features[:, rows]
                if absent.size:  # given zero weights, before the first M-step floors every weight above 0
                    log_prob[absent] = -np.inf
                return log_prob

            return expanded

        prec_chol = np.broadcast_to(components.precisions_cholesky, (K, d, d))
        # Row k*d + j whitens feature j of component k; sqrt(1/2) folds in the -1/2 of the log-density.
        whiten = np.sqrt(0.5) * prec_chol.transpose(0, 2, 1).reshape(K * d, d)
        offsets = np.sqrt(0.5) * np.einsum("kd,kde->ke", means, prec_chol).reshape(K * d, 1)
        unused = np.zeros((K * d, len(self.features) - 1 - d))  # the |x|^2 row, when present
        stacked = np.hstack([-offsets, whiten, unused]).astype(self.dtype)
        constant_column = constant.astype(self.dtype)[:, None]
        features = self.features

        def whitened(rows: slice) -> WorkArray:
            y = stacked @ features[:, rows]
            y *= y
            distances = y.reshape(K, d, -1).sum(axis=1)
            return np.subtract(constant_column, distances, out=distances)  # type: ignore[no-any-return]

        return whitened

    def _diagonal_precisions(self, prec_chol: FloatArray) -> FloatArray:
        K, d = self.n_components, self.n_features
        if self.covariance_type == "spherical":
            return np.repeat((prec_chol**2)[:, None], d, axis=1)
        # diag is (K, d) already; full (K, 1, 1) and tied (1, 1) occur here only for 1-D data.
        return np.broadcast_to((prec_chol**2).reshape(-1, d), (K, d)).copy()

    # --- passes ---

    def expectation(self, components: Components) -> tuple[float, Moments]:
        """Total log-likelihood at ``components`` and the responsibility-weighted sums, in one pass."""
        log_density = self.log_density(components)

        def chunk(index: int) -> tuple[float, Moments]:
            resp = log_density(self.chunks[index])
            log_likelihood = _normalise_to_responsibilities(resp)
            return log_likelihood, self._chunk_moments(resp, index)

        parts = map_chunks(chunk, range(len(self.chunks)))
        return sum(part[0] for part in parts), self._sum_moments([part[1] for part in parts])

    def log_responsibilities(self, components: Components) -> FloatArray:
        """The n x K log-responsibilities at ``components`` (a view of a components-major array)."""
        log_density = self.log_density(components)
        out = np.empty((self.n_components, self.features.shape[1]))

        def chunk(rows: slice) -> None:
            log_prob = log_density(rows).astype(np.float64, copy=False)
            terms = log_prob.copy()
            column_max = _exp_below_column_max(terms)
            out[:, rows] = log_prob - (np.log(terms.sum(axis=0)) + column_max)

        map_chunks(chunk, self.chunks)
        return out.T

    def moments(self, resp: FloatArray) -> Moments:
        """The sums for given n x K responsibilities (a start's hard or soft assignment)."""
        resp_kn = np.ascontiguousarray(resp.T, dtype=self.dtype)
        parts = map_chunks(
            lambda index: self._chunk_moments(resp_kn[:, self.chunks[index]], index), range(len(self.chunks))
        )
        return self._sum_moments(parts)

    def _chunk_moments(self, resp: WorkArray, index: int) -> Moments:
        d = self.n_features
        features = self.features[:, self.chunks[index]]
        sums = weighted_sums(resp, features)  # [nk, first] or [nk, first, second diagonal]
        nk, first = sums[:, 0], sums[:, 1 : 1 + d]
        if self.expanded:
            second: FloatArray | None = sums[:, 1 + d :]
            if self.covariance_type == "full":
                second = second.reshape(-1, 1, 1)  # type: ignore[union-attr]
            elif self.covariance_type == "tied":
                second = None
        elif self.pairs is not None:
            second = _weighted_pair_products(resp, features[1:], self.pairs)
        elif self.grams:
            second = _weighted_outer_products(resp, features[1 : 1 + d], self.chunk_grams[index], sums[:, -1])
        else:
            second = None
        return Moments(nk, first, second)

    @staticmethod
    def _sum_moments(parts: list[Moments]) -> Moments:
        # Summed in chunk order, in float64: the same total whichever thread computed which chunk.
        nk = np.sum([p.nk for p in parts], axis=0)
        first = np.sum([p.first for p in parts], axis=0)
        seconds = [p.second for p in parts if p.second is not None]
        second = np.sum(seconds, axis=0) if seconds else None
        return Moments(nk, first, second)


def _weighted_pair_products(
    resp: WorkArray, x: WorkArray, pairs: tuple[NDArray[np.intp], NDArray[np.intp]]
) -> FloatArray:
    """Sum over the chunk of r_k x x^T for every component, (K, d, d), from ``x`` as (d x n_chunk).

    The rows' products x_i x_j (i <= j), one contiguous multiply each, then one product with all K rows of
    responsibilities.
    """
    upper, lower = pairs
    products = np.empty((len(upper), x.shape[1]), x.dtype)
    for row, (i, j) in enumerate(zip(upper, lower, strict=True)):
        np.multiply(x[i], x[j], out=products[row])
    sums = weighted_sums(resp, products)
    K, d = len(resp), len(x)
    second = np.empty((K, d, d))
    second[:, upper, lower] = sums
    second[:, lower, upper] = sums
    return second


def _weighted_outer_products(resp: WorkArray, x: WorkArray, gram: FloatArray, traces: FloatArray) -> FloatArray:
    """Sum over the chunk of r_k x x^T for every component, (K, d, d), from ``x`` as (d x n_chunk).

    Rows weighed by sqrt(r_k), then one Gram product per component (measured faster than syrk: OpenBLAS's
    is slow for small d) -- for all but one. Responsibilities sum to 1, so the component with the largest
    trace sum(r_k |x|^2) is the chunk's Gram ``gram`` minus the others: K - 1 products, not K. As the
    largest, its trace is at least 1/K of the Gram's, so the subtraction loses at most a factor K of
    precision: entries of a sum of positive semi-definite terms are bounded by their traces.
    """
    K, d = len(resp), len(x)
    second = np.empty((K, d, d))
    largest = int(np.argmax(traces))
    for k in range(K):
        if k != largest:
            weighted = x * np.sqrt(resp[k])
            second[k] = np.dot(weighted, weighted.T)
    others = np.delete(second, largest, axis=0)
    second[largest] = gram - others.sum(axis=0)
    return second


def _normalise_to_responsibilities(log_prob: WorkArray) -> float:
    """In place on a K x n chunk of log(w_k N(x | k)): the responsibilities; returns the chunk's log-likelihood.

    One max, one exp over the chunk and one log per row; dividing by the row sums replaces a second exp.
    """
    column_max = _exp_below_column_max(log_prob)
    total = log_prob.sum(axis=0)
    log_likelihood = float(np.sum(np.log(total), dtype=np.float64) + np.sum(column_max, dtype=np.float64))
    log_prob *= np.reciprocal(total)
    return log_likelihood


def _exp_below_column_max(log_prob: WorkArray) -> WorkArray:
    """In place on a K x n chunk: exp(log_prob - its column max); returns the column maxima.

    Arguments are floored first (at -100, or float32's smallest normal number): exp takes a slow path,
    2 to 5 times slower here, for arguments near or past underflow. What the floor adds is invisible:
    beside each column's largest term, 1, e^-100 is 1e-28 of a rounding step, and summed over even 10^9
    rows it stays 1e-20 of the 10 eps floor the M-step puts under every component's count.
    """
    column_max: WorkArray = log_prob.max(axis=0)
    column_max[~np.isfinite(column_max)] = 0.0
    log_prob -= column_max
    np.maximum(log_prob, max(-100.0, float(np.log(np.finfo(log_prob.dtype).tiny))), out=log_prob)
    np.exp(log_prob, out=log_prob)
    return column_max


def _log_det_cholesky(prec_chol: FloatArray, covariance_type: str, n_features: int) -> FloatArray:
    """log det of each precision's Cholesky factor (half the log-determinant of the precision)."""
    if covariance_type == "full":
        return np.sum(np.log(np.diagonal(prec_chol, axis1=1, axis2=2)), axis=1)  # type: ignore[no-any-return]
    if covariance_type == "tied":
        return np.sum(np.log(np.diag(prec_chol)))  # type: ignore[no-any-return]
    if covariance_type == "diag":
        return np.sum(np.log(prec_chol), axis=1)  # type: ignore[no-any-return]
    return n_features * np.log(prec_chol)
