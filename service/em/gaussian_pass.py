"""One pass of a Gaussian mixture over its data: log-densities, responsibilities and the M-step's sums.

The E-step and the sums the next M-step needs (counts, first and second moments) are taken in the same
pass over row chunks, so no n x K array lives between the two steps and every chunk's temporaries stay
in cache. Two ways to the log-densities, chosen once per model:

- *expanded*, for diagonal covariances (diag, spherical, and every type on 1-D data): the log-density
  is linear in the features ``[1, x, x*x]``, so a chunk's K log-densities are one product
  ``(K x (1+2d)) @ ((1+2d) x n_chunk)``, written into the thread's scratch buffer and normalised there into
  responsibilities, and its sums for the M-step one more product with the same features, still in cache
  (chunks are sized for it). Up to three components, both products go one matrix-vector product per
  component (OpenBLAS packs the long operand of a matrix product first); with two, the E-step takes the
  log-density difference only: one product and one exp per row.
- *whitened*, for full and tied covariances: all K components are whitened by one matrix product,
  ``[P_1 ... P_K]^T (x - mean_k)`` as ``(K d x (d+1)) @ ((d+1) x n_chunk)`` on the features ``[1, x]``.
- *quadratic*, for full covariances with few features (d <= 2K, in double precision): the log-density is
  linear in ``[1, x, x_i x_j (i <= j)]``, the pairwise products the M-step's second moments need anyway.
  A chunk builds those features once in scratch; its log-densities and its sums are then one product each,
  as in the expanded pass (and with two components, one difference per row). Expanding the quadratic form
  cancels terms of the size |m|^2 in the precision's metric, so a pass whitens instead when a component's
  mean is far from the data's centre in that metric (see ``_QUADRATIC_REACH``).

Sums over a whitened chunk's rows (a short output, a long inner axis) with few components are taken by
``np.einsum``, not ``@`` (``chunks.weighted_sums``).
Everything is laid out with the long axis last: features as (width x n), a chunk's log-densities as
(K x n_chunk). Reductions over components are then K - 1 elementwise operations on contiguous rows, and
a product of two features is one contiguous multiply.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from service.em.blocks import row_blocks
from service.em.chunks import chunk_threads, map_chunks, one_blas_thread, row_chunks, sum_of_logs, weighted_sums

FloatArray = NDArray[np.float64]
WorkArray = NDArray[np.floating]  # float64, or float32 when the caller opted in
T = TypeVar("T")
Chunk = TypeVar("Chunk")

_LOG_2PI = np.log(2 * np.pi)
# Elements of a chunk's largest temporary (K d x n_chunk whitened, or K x n_chunk), and the fewest rows
# a chunk may have (below that, products over the rows lose their efficiency). Measured on 2 cores
# over the benchmark grid: larger chunks spill the cache, smaller ones add per-call overhead.
_CHUNK_ELEMENTS = 1 << 18
_MIN_CHUNK_ROWS = 4096
# The quadratic pass's chunks have at least 4 times the least rows (16,384): its per-chunk cost (the pair
# features built in scratch, two short-and-wide products) pays off only over long rows. Measured on an Intel Xeon
# (2 MB L2 a core), one iteration on 10^6 x 8, K = 8: 4,096 rows 231-271 ms, 8,192 176-180, 16,384 167-171,
# 32,768 155-184; on 10^6 x 2, K = 8 (16,384 rows by the element count already) 32,768 rows were slower again.
_QUADRATIC_ROWS_FACTOR = 4
# Expanded pass: a chunk's features (1 + 2d rows) are read twice, by the log-densities' product and by the
# M-step's sums; within this size the second read finds them in the L3 cache (32 MB here), not in memory.
# Measured on 2 shared cores: 4-8 MB chunks beat both cache-sized ones (per-chunk overhead) and whole passes.
_CHUNK_BYTES = 1 << 23
# An expanded pass that fits one chunk is still split over the threads from this much work (n x K x width, the
# products' multiply-adds): measured on 10,000 rows, K = 8, d = 32 (5.2 million) gained 20-30%; d <= 8 (1.4
# million or less) and K = 2 gained nothing or lost (the hand-over outweighs the halved exp and products).
_SPLIT_WORK = 1 << 22
# Up to this many components, the expanded pass's products go one component at a time (see _product).
_GEMV_COMPONENTS = 3
# The quadratic pass computes c - 1/2 x'Px + m'Px for each row: rounding errors of eps (|x|_P + |m|_P)^2 where
# |v|_P = sqrt(v'Pv). A row counts for component k only within ~14 of its mean (e^-100 below the best
# component, the exp's floor), so |x|_P <= |m|_P + 14; with |m|_P <= 1000 the error stays below
# eps (2014)^2 = 1e-9 of a log-density. Farther means (a tight component far from the centre) whiten.
_QUADRATIC_REACH = 1e3


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

    def __init__(
        self,
        X: FloatArray,
        n_components: int,
        covariance_type: str,
        dtype: type[np.floating],
        shift: FloatArray | None = None,
    ) -> None:
        """The design of the rows of ``X - shift`` (X may be a memory-mapped dataset: it is read a block at a time)."""
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
        # The quadratic pass's rounding bound assumes double precision (float32's eps would be 5e8 times it).
        self.quadratic = use_pairs and np.dtype(dtype) == np.float64
        width = 1 + n_features * (2 if self.expanded else 1) + (1 if self.grams else 0)
        self.features: WorkArray = np.empty((width, n_samples), dtype)
        self.features[0] = 1.0
        for rows, block in row_blocks(X):
            centred = block if shift is None else block - shift
            self.features[1 : 1 + n_features, rows] = centred.T
            if self.expanded:
                np.square(centred.T, out=self.features[1 + n_features :, rows])
            elif self.grams:  # |x|^2: its weighted sums are the traces of the components' second moments
                np.sum(centred * centred, axis=1, out=self.features[-1, rows])
        if self.expanded:
            self.chunks = _balanced_chunks(
                n_samples, _expanded_chunk_rows(n_components, width, np.dtype(dtype)), n_components * width
            )
        else:
            rows = max(_MIN_CHUNK_ROWS, _CHUNK_ELEMENTS // (n_components * n_features))
            quadratic_rows = _QUADRATIC_ROWS_FACTOR * _MIN_CHUNK_ROWS
            self.chunks = row_chunks(n_samples, max(rows, quadratic_rows) if self.quadratic else rows)
        self.chunk_grams = map_chunks(self._gram, self.chunks) if self.grams else []
        # Two components, expanded or quadratic: the column sums of the linear features give the sum of a
        # log-density over all rows (quadratic: n, the column sums, and the Gram's upper triangle).
        self.feature_sums: FloatArray | None = None
        # Two components, expanded, in double precision: each chunk's own column sums too, from which the
        # second component's sums are the first's complement (see _two_component_sums).
        self.chunk_feature_sums: list[FloatArray] | None = None
        if n_components == 2 and self.expanded:
            self.feature_sums = np.sum(self.features, axis=1, dtype=np.float64)
            if np.dtype(dtype) == np.float64:
                self.chunk_feature_sums = [np.sum(self.features[:, rows], axis=1) for rows in self.chunks]
        elif n_components == 2 and self.quadratic and self.pairs is not None:
            x = self.features[1 : 1 + n_features]
            gram = x @ x.T
            self.feature_sums = np.concatenate([np.sum(self.features, axis=1), gram[self.pairs]])
        # Every pass's per-chunk arrays live in one scratch buffer per thread, made once and reused by every
        # iteration: a fresh array of a chunk's size each time would cost page faults on every pass.
        self._scratch_of_thread = threading.local()

    def _scratch(self, size: int, name: str = "buffer") -> WorkArray:
        """This thread's scratch buffer ``name``, at least ``size`` elements; what a chunk left in it is overwritten.
        Besides the pass's own ("buffer"), the full pass's rows weighed by a component's sqrt(r_k) ("weighted", see
        _weighted_outer_products): a fresh megabyte for each component of each chunk cost page faults."""
        buffer: WorkArray | None = getattr(self._scratch_of_thread, name, None)
        if buffer is None or buffer.size < size:
            buffer = np.empty(size, self.dtype)
            setattr(self._scratch_of_thread, name, buffer)
        return buffer

    def _gram(self, rows: slice) -> FloatArray:
        x = self.features[1 : 1 + self.n_features, rows]
        return np.dot(x, x.T).astype(np.float64, copy=False)  # type: ignore[no-any-return]

    @property
    def X(self) -> WorkArray:
        """The (centred) data, n x d, as a view into the features."""
        return self.features[1 : 1 + self.n_features].T

    # --- log-densities ---

    def log_density(self, components: Components) -> Callable[[slice, WorkArray], WorkArray]:
        """A function writing a row chunk's K x n_chunk weighted log-densities log(w_k N(x | k)) into ``out``.

        ``out`` is C-contiguous, (K, n_chunk), in the working dtype; the function returns it.
        """
        K, d = self.n_components, self.n_features
        features = self.features
        if self.expanded:
            expanded_weights, absent = self._expanded_weights(components)
            weights = expanded_weights.astype(self.dtype)

            def expanded(rows: slice, out: WorkArray) -> WorkArray:
                _product(weights, features[:, rows], out)
                if absent.size:  # given zero weights, before the first M-step floors every weight above 0
                    out[absent] = -np.inf
                return out

            return expanded

        constant = self._constant(components)
        means = components.means
        prec_chol = np.broadcast_to(components.precisions_cholesky, (K, d, d))
        # Row k*d + j whitens feature j of component k; sqrt(1/2) folds in the -1/2 of the log-density.
        whiten = np.sqrt(0.5) * prec_chol.transpose(0, 2, 1).reshape(K * d, d)
        offsets = np.sqrt(0.5) * np.einsum("kd,kde->ke", means, prec_chol).reshape(K * d, 1)
        unused = np.zeros((K * d, len(features) - 1 - d))  # the |x|^2 row, when present
        stacked = np.hstack([-offsets, whiten, unused]).astype(self.dtype)
        constant_column = constant.astype(self.dtype)[:, None]

        def whitened(rows: slice, out: WorkArray) -> WorkArray:
            y = (stacked @ features[:, rows]).reshape(K, d, -1)
            # The squared norms in one pass over y (squaring in place first would write y back, a second pass)
            np.einsum("kdn,kdn->kn", y, y, out=out)
            return np.subtract(constant_column, out, out=out)

        return whitened

    def _constant(self, components: Components) -> FloatArray:
        """log w_k + log det P_k - d/2 log 2 pi per component: the log-density's terms free of x."""
        d, weights = self.n_features, components.weights
        log_det = _log_det_cholesky(components.precisions_cholesky, self.covariance_type, d)
        # A zero weight is a legal, impossible component: log 0 = -inf (without numpy's divide warning).
        log_weights = np.log(weights, out=np.full(len(weights), -np.inf), where=weights > 0)
        constant: FloatArray = log_det - 0.5 * d * _LOG_2PI + log_weights
        return constant

    def _expanded_weights(self, components: Components) -> tuple[FloatArray, NDArray[np.intp]]:
        """(K x width) weights of the features ``[1, x, x^2]`` (float64), and the components of zero weight.

        -1/2 sum_j p_j (x_j - m_j)^2 + c  =  [c - 1/2 sum_j p_j m_j^2,  p m,  -1/2 p] . [1, x, x^2].
        A zero weight's -inf stays out of the weights (its offset is 0): BLAS kernels also multiply the padding
        zeros of their tiles, and -inf * 0 raises the invalid flag numpy then reports. Its rows are set after.
        """
        d, means = self.n_features, components.means
        precisions = self._diagonal_precisions(components.precisions_cholesky)
        absent = np.flatnonzero(components.weights == 0)
        weights = np.empty((self.n_components, len(self.features)))
        weights[:, 0] = self._constant(components) - 0.5 * np.sum(precisions * means**2, axis=1)
        weights[absent, 0] = 0.0
        np.multiply(precisions, means, out=weights[:, 1 : 1 + d])
        np.multiply(precisions, -0.5, out=weights[:, 1 + d :])
        return weights, absent

    def _diagonal_precisions(self, prec_chol: FloatArray) -> FloatArray:
        K, d = self.n_components, self.n_features
        if self.covariance_type == "diag":
            return prec_chol**2  # (K, d) already
        if self.covariance_type == "spherical":
            return np.repeat((prec_chol**2)[:, None], d, axis=1)
        # full (K, 1, 1) and tied (1, 1) occur here only for 1-D data.
        return np.broadcast_to((prec_chol**2).reshape(-1, d), (K, d)).copy()

    # --- passes ---

    def expectation(self, components: Components) -> tuple[float, Moments]:
        """Total log-likelihood at ``components`` and the responsibility-weighted sums, in one pass."""
        linear = self._linear_weights(components)
        if linear is None:
            return self._whitened_expectation(components)
        weights, absent = linear
        if self.feature_sums is not None and not absent.size:
            return self._two_component_expectation(weights)
        K = self.n_components
        weights = weights.astype(self.dtype)

        def chunk(index: int) -> tuple[float, Moments]:
            rows = self.chunks[index]
            m = rows.stop - rows.start
            # This thread's scratch: the chunk's features (quadratic pass only), its K x m log-densities
            # (then responsibilities), and two rows.
            scratch = self._scratch((self._built_width + K + 2) * m)
            features, rest = self._linear_features(index, scratch)
            resp = rest[: K * m].reshape(K, m)
            _product(weights, features, resp)
            if absent.size:  # given zero weights, before the first M-step floors every weight above 0
                resp[absent] = -np.inf
            column_max, total = rest[K * m : (K + 1) * m], rest[(K + 1) * m : (K + 2) * m]
            log_likelihood = _normalise_to_responsibilities(resp, column_max, total)
            return log_likelihood, self._linear_moments(resp, features)

        parts = self._map_chunks(chunk, range(len(self.chunks)))
        return sum(part[0] for part in parts), self._sum_moments([part[1] for part in parts])

    def _whitened_expectation(self, components: Components) -> tuple[float, Moments]:
        log_density = self.log_density(components)
        K = self.n_components

        def chunk(index: int) -> tuple[float, Moments]:
            rows = self.chunks[index]
            m = rows.stop - rows.start
            scratch = self._scratch((K + 2) * m)
            resp = log_density(rows, scratch[: K * m].reshape(K, m))
            log_likelihood = _normalise_to_responsibilities(
                resp, scratch[K * m : (K + 1) * m], scratch[(K + 1) * m : (K + 2) * m]
            )
            return log_likelihood, self._chunk_moments(resp, index)

        parts = self._map_chunks(chunk, range(len(self.chunks)))
        return sum(part[0] for part in parts), self._sum_moments([part[1] for part in parts])

    def _two_component_expectation(self, weights: FloatArray) -> tuple[float, Moments]:
        """``expectation`` for two components of linear weights ``weights``: one log-density difference per row.

        With l_k the weighted log-densities and t = l_0 - l_1, r_1 = 1 / (1 + e^t), r_0 = e^t r_1, and a row's
        log-likelihood is l_0 + log(1 + e^-t): one product (the difference's weights) and one exp per row (and a
        log per few rows, see ``chunks.sum_of_logs``), where K log-densities would take two exps. The sum of l_0
        over all rows is one dot product with the features' column sums. t is clipped to +-100 (float32: +-87)
        inside the exp: the responsibilities are then those of the general pass's floor, and the log-likelihood
        misses at most e^-100 a row.
        """
        assert self.feature_sums is not None
        difference = (weights[0] - weights[1]).astype(self.dtype)
        bound = -_exp_floor(self.dtype)

        def chunk(index: int) -> tuple[float, Moments]:
            rows = self.chunks[index]
            m = rows.stop - rows.start
            scratch = self._scratch((self._built_width + 2) * m)
            features, rest = self._linear_features(index, scratch)
            resp = rest[: 2 * m].reshape(2, m)
            t = resp[0]
            np.matmul(difference, features, out=t)
            # log(1 + e^-t) = max(-t, -b) + log(1 + e^min(t, b)) to within e^-b, t clipped to [-b, b] in the exp
            np.minimum(t, bound, out=t)
            log_likelihood = -float(np.sum(t, dtype=np.float64))
            np.maximum(t, -bound, out=t)
            np.exp(t, out=t)
            np.add(t, 1.0, out=resp[1])
            log_likelihood += sum_of_logs(resp[1], 1 + np.exp(bound))
            np.reciprocal(resp[1], out=resp[1])
            np.multiply(t, resp[1], out=resp[0])
            if self.chunk_feature_sums is None:
                return log_likelihood, self._linear_moments(resp, features)
            return log_likelihood, self._expanded_moments(
                _two_component_sums(resp, features, self.chunk_feature_sums[index])
            )

        parts = self._map_chunks(chunk, range(len(self.chunks)))
        log_likelihood = float(weights[0] @ self.feature_sums) + sum(part[0] for part in parts)
        return log_likelihood, self._sum_moments([part[1] for part in parts])

    # --- linear features: the expanded pass's [1, x, x^2] and the quadratic pass's [1, x, x_i x_j] ---

    def _linear_weights(self, components: Components) -> tuple[FloatArray, NDArray[np.intp]] | None:
        """(K x width) weights whose product with a chunk's linear features is its log-densities, and the
        components of zero weight; None when this pass whitens."""
        if self.expanded:
            return self._expanded_weights(components)
        if self.quadratic:
            return self._quadratic_weights(components)
        return None

    @property
    def _built_width(self) -> int:
        """Rows of the linear features a quadratic chunk builds in scratch (the expanded pass builds none)."""
        return 0 if self.pairs is None or self.expanded else 1 + self.n_features + len(self.pairs[0])

    def _linear_features(self, index: int, scratch: WorkArray) -> tuple[WorkArray, WorkArray]:
        """Chunk ``index``'s linear features (width x m), and the part of ``scratch`` they leave free."""
        rows = self.chunks[index]
        if self.expanded:
            return self.features[:, rows], scratch
        assert self.pairs is not None
        m, d = rows.stop - rows.start, self.n_features
        width = self._built_width
        features = scratch[: width * m].reshape(width, m)
        features[: 1 + d] = self.features[:, rows]
        _pair_products(features[1 : 1 + d], self.pairs, out=features[1 + d :])
        return features, scratch[width * m :]

    def _linear_moments(self, resp: WorkArray, features: WorkArray) -> Moments:
        """The chunk's sums from one product of its responsibilities with its linear features."""
        if self.expanded:
            return self._expanded_moments(_expanded_sums(resp, features))
        assert self.pairs is not None
        d = self.n_features
        sums = weighted_sums(resp, features)
        return Moments(sums[:, 0], sums[:, 1 : 1 + d], self._symmetric(sums[:, 1 + d :]))

    def _quadratic_weights(self, components: Components) -> tuple[FloatArray, NDArray[np.intp]] | None:
        """Weights of ``[1, x, x_i x_j (i <= j)]``, or None when a mean is beyond ``_QUADRATIC_REACH``.

        -1/2 (x - m)'P(x - m) + c  =  [c - 1/2 m'Pm,  Pm,  -1/2 P_ii and -P_ij (i < j)] . [1, x, x_i x_j].
        """
        assert self.pairs is not None
        d, means = self.n_features, components.means
        prec_chol = components.precisions_cholesky
        whitened_means = np.einsum("kd,kde->ke", means, prec_chol)
        reach = np.sum(whitened_means**2, axis=1)
        if np.max(reach) > _QUADRATIC_REACH**2:
            return None
        precisions = prec_chol @ prec_chol.transpose(0, 2, 1)
        upper, lower = self.pairs
        absent = np.flatnonzero(components.weights == 0)
        weights = np.empty((self.n_components, 1 + d + len(upper)))
        weights[:, 0] = self._constant(components) - 0.5 * reach
        weights[absent, 0] = 0.0  # as in _expanded_weights: their rows are set to -inf after the product
        weights[:, 1 : 1 + d] = np.einsum("kde,ke->kd", precisions, means)
        weights[:, 1 + d :] = np.where(upper == lower, -0.5, -1.0) * precisions[:, upper, lower]
        return weights, absent

    def _map_chunks(self, work: Callable[[Chunk], T], chunks: Sequence[Chunk]) -> list[T]:
        """``map_chunks``; a linear pass of one chunk also runs its products on one BLAS thread.

        Its products are matrix-vector shaped and short (a few hundred microseconds at most): a second BLAS
        thread gains little on them, and loses milliseconds when the other core is busy, waiting for it.
        """
        if len(chunks) == 1 and (self.expanded or self.quadratic):
            with one_blas_thread():
                return [work(chunks[0])]
        return map_chunks(work, chunks)

    def log_responsibilities(self, components: Components) -> FloatArray:
        """The n x K log-responsibilities at ``components`` (a view of a components-major array)."""
        log_density = self.log_density(components)
        K = self.n_components
        out = np.empty((K, self.features.shape[1]))

        def chunk(rows: slice) -> None:
            m = rows.stop - rows.start
            log_prob = log_density(rows, np.empty((K, m), self.dtype)).astype(np.float64, copy=False)
            terms = log_prob.copy()
            column_max = _exp_below_column_max(terms, np.empty(m))
            out[:, rows] = log_prob - (np.log(terms.sum(axis=0)) + column_max)

        self._map_chunks(chunk, self.chunks)
        return out.T

    def labels(self, components: Components) -> NDArray[np.intp]:
        """Each row's most probable component, a chunk at a time: the argmax of its weighted log-densities, which
        the log-responsibilities only shift by a per-row constant (scikit-learn's ``predict`` takes the same)."""
        log_density = self.log_density(components)
        labels = np.empty(self.features.shape[1], dtype=np.intp)

        def chunk(rows: slice) -> None:
            out = np.empty((self.n_components, rows.stop - rows.start), self.dtype)
            labels[rows] = np.argmax(log_density(rows, out), axis=0)

        self._map_chunks(chunk, self.chunks)
        return labels

    def moments(self, resp: FloatArray) -> Moments:
        """The sums for given n x K responsibilities (a start's hard or soft assignment)."""
        resp_kn = np.ascontiguousarray(resp.T, dtype=self.dtype)
        parts = self._map_chunks(
            lambda index: self._chunk_moments(resp_kn[:, self.chunks[index]], index), range(len(self.chunks))
        )
        return self._sum_moments(parts)

    def _chunk_moments(self, resp: WorkArray, index: int) -> Moments:
        d = self.n_features
        features = self.features[:, self.chunks[index]]
        # [nk, first, second diagonal] (expanded) or [nk, first] (whitened, and |x|^2 with the Grams)
        sums = _expanded_sums(resp, features) if self.expanded else weighted_sums(resp, features)
        nk, first = sums[:, 0], sums[:, 1 : 1 + d]
        if self.expanded:
            return self._expanded_moments(sums)
        second: FloatArray | None
        if self.pairs is not None:
            second = self._symmetric(_weighted_pair_sums(resp, features[1:], self.pairs))
        elif self.grams:
            x = features[1 : 1 + d]
            weighted = self._scratch(x.size, "weighted")[: x.size].reshape(x.shape)
            second = _weighted_outer_products(resp, x, self.chunk_grams[index], sums[:, -1], weighted)
        else:
            second = None
        return Moments(nk, first, second)

    def _expanded_moments(self, sums: FloatArray) -> Moments:
        """Moments from an expanded chunk's sums ``[nk, first, second diagonal]``, shaped for the type."""
        d = self.n_features
        second: FloatArray | None = sums[:, 1 + d :]
        if self.covariance_type == "full":
            second = second.reshape(-1, 1, 1)  # type: ignore[union-attr]
        elif self.covariance_type == "tied":
            second = None
        return Moments(sums[:, 0], sums[:, 1 : 1 + d], second)

    def _symmetric(self, pair_sums: FloatArray) -> FloatArray:
        """(K, d, d) symmetric matrices from their upper triangles (K x d(d+1)/2, in ``pairs`` order)."""
        assert self.pairs is not None
        upper, lower = self.pairs
        K, d = len(pair_sums), self.n_features
        second = np.empty((K, d, d))
        second[:, upper, lower] = pair_sums
        second[:, lower, upper] = pair_sums
        return second

    @staticmethod
    def _sum_moments(parts: list[Moments]) -> Moments:
        if len(parts) == 1:
            return parts[0]
        # Summed in chunk order, in float64: the same total whichever thread computed which chunk.
        nk = np.sum([p.nk for p in parts], axis=0)
        first = np.sum([p.first for p in parts], axis=0)
        seconds = [p.second for p in parts if p.second is not None]
        second = np.sum(seconds, axis=0) if seconds else None
        return Moments(nk, first, second)


def _product(weights: WorkArray, features: WorkArray, out: WorkArray) -> None:
    """``weights @ features`` into ``out``: (K x width) by (width x n_chunk), a chunk's K log-densities.

    With few components, one matrix-vector product per component: OpenBLAS's matrix product copies
    (packs) the whole (width x n_chunk) operand first, which for a two-row result costs more than the
    arithmetic; its matrix-vector product streams the operand once.
    """
    if len(weights) <= _GEMV_COMPONENTS:
        for k in range(len(weights)):
            np.matmul(weights[k], features, out=out[k])
    else:
        np.matmul(weights, features, out=out)


def _expanded_sums(resp: WorkArray, features: WorkArray) -> FloatArray:
    """(K x n_chunk) responsibilities times (width x n_chunk) features, summed over the rows: (K x width)."""
    K = len(resp)
    sums = np.empty((K, len(features)), resp.dtype)
    if K <= _GEMV_COMPONENTS:
        for k in range(K):
            np.matmul(features, resp[k], out=sums[k])
    else:
        np.matmul(resp, features.T, out=sums)
    return sums.astype(np.float64, copy=False)


# The second of two components takes its sums as the complement of the first's while it holds at least this share
# of the chunk: rounding of the chunk's whole sums (eps times them) is then at most 64 eps of its own.
_COMPLEMENT_SHARE = 1 / 64


def _two_component_sums(resp: WorkArray, features: WorkArray, feature_sums: FloatArray) -> FloatArray:
    """``_expanded_sums`` for two components whose responsibilities add up to 1, from one read of the features:
    r_1 = 1 - r_0, so the second row is the chunk's column sums less the first (a chunk of 10^4 x 32 points is
    5 MB, beyond the L2 cache: each read of it is a third of the iteration). A second component holding less
    than ``_COMPLEMENT_SHARE`` of the rows is summed directly, where the difference would lose its digits."""
    sums = np.empty((2, len(features)))
    np.matmul(features, resp[0], out=sums[0])
    if resp.shape[1] - sums[0, 0] >= _COMPLEMENT_SHARE * resp.shape[1]:  # features[0] is 1: sums[0, 0] is n_0
        np.subtract(feature_sums, sums[0], out=sums[1])
    else:
        np.matmul(features, resp[1], out=sums[1])
    return sums


def _weighted_pair_sums(resp: WorkArray, x: WorkArray, pairs: tuple[NDArray[np.intp], NDArray[np.intp]]) -> FloatArray:
    """Sum over the chunk of r_k x_i x_j (i <= j, in ``pairs`` order) for every component, from ``x`` as (d x n_chunk).

    The rows' products x_i x_j, one contiguous multiply each, then one product with all K rows of
    responsibilities.
    """
    products = np.empty((len(pairs[0]), x.shape[1]), x.dtype)
    return weighted_sums(resp, _pair_products(x, pairs, out=products))


def _pair_products(x: WorkArray, pairs: tuple[NDArray[np.intp], NDArray[np.intp]], out: WorkArray) -> WorkArray:
    """``out`` row by row: x_i x_j for every pair (i, j) of ``pairs``, from ``x`` as (d x n_chunk)."""
    for row, (i, j) in enumerate(zip(*pairs, strict=True)):
        np.multiply(x[i], x[j], out=out[row])
    return out


def _weighted_outer_products(
    resp: WorkArray, x: WorkArray, gram: FloatArray, traces: FloatArray, weighted: WorkArray
) -> FloatArray:
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
            np.multiply(x, np.sqrt(resp[k]), out=weighted)
            second[k] = np.dot(weighted, weighted.T)
    others = np.delete(second, largest, axis=0)
    second[largest] = gram - others.sum(axis=0)
    return second


def _normalise_to_responsibilities(log_prob: WorkArray, column_max: WorkArray, total: WorkArray) -> float:
    """In place on a K x n chunk of log(w_k N(x | k)): the responsibilities; returns the chunk's log-likelihood.

    One max and one exp over the chunk, and the log of the row sums (see ``chunks.sum_of_logs``); dividing by the row
    sums replaces a second exp. ``column_max`` and ``total`` are scratch rows of n elements.
    """
    _exp_below_column_max(log_prob, column_max)
    np.sum(log_prob, axis=0, out=total)
    # Each row sums its largest term, e^-_HAIR, and K - 1 smaller ones.
    log_likelihood = sum_of_logs(total, len(log_prob)) + float(np.sum(column_max, dtype=np.float64))
    np.reciprocal(total, out=total)
    log_prob *= total
    return log_likelihood


def _exp_below_column_max(log_prob: WorkArray, column_max: WorkArray) -> WorkArray:
    """In place on a K x n chunk: exp(log_prob - shift), the shift ``_HAIR`` above each column's max; the
    shifts go to ``column_max`` (what a log-likelihood adds back).

    A hair above: libm's exp takes a shortcut for arguments within 2^-54 of 0, and with one 0 in every column
    that branch goes unpredictably: measured, exp took a third longer (as in the coins' pass). Arguments are
    floored too (at -100, or float32's smallest normal number): exp takes a slow path, 2 to 5 times slower
    here, for arguments near or past underflow. What the floor adds is invisible: beside each column's largest
    term, about 1, e^-100 is 1e-28 of a rounding step, and summed over even 10^9 rows it stays 1e-20 of the
    10 eps floor the M-step puts under every component's count.
    """
    np.max(log_prob, axis=0, out=column_max)
    column_max[~np.isfinite(column_max)] = 0.0
    column_max += _HAIR
    log_prob -= column_max
    np.maximum(log_prob, _exp_floor(log_prob.dtype), out=log_prob)
    np.exp(log_prob, out=log_prob)
    return column_max


# Any shift works (a log-likelihood adds it back); 1e-6 keeps exp's arguments out of its shortcut near 0 and
# changes each column's terms by a factor e^-1e-6 only.
_HAIR = 1e-6


def _exp_floor(dtype: np.dtype | type[np.floating]) -> float:
    """The least argument exp is given: -100, or the log of float32's smallest normal number (about -87)."""
    return _EXP_FLOORS[np.dtype(dtype)]


_EXP_FLOORS = {np.dtype(t): max(-100.0, float(np.log(np.finfo(t).tiny))) for t in (np.float64, np.float32)}


def _log_det_cholesky(prec_chol: FloatArray, covariance_type: str, n_features: int) -> FloatArray:
    """log det of each precision's Cholesky factor (half the log-determinant of the precision)."""
    if covariance_type == "full":
        return np.sum(np.log(np.diagonal(prec_chol, axis1=1, axis2=2)), axis=1)  # type: ignore[no-any-return]
    if covariance_type == "tied":
        return np.sum(np.log(np.diag(prec_chol)))  # type: ignore[no-any-return]
    if covariance_type == "diag":
        return np.sum(np.log(prec_chol), axis=1)  # type: ignore[no-any-return]
    return n_features * np.log(prec_chol)


def _expanded_chunk_rows(n_components: int, width: int, dtype: np.dtype) -> int:
    """The most rows an expanded chunk may have: its features within ``_CHUNK_BYTES``, its K x n_chunk
    log-densities within ``_CHUNK_ELEMENTS``; never fewer than ``_MIN_CHUNK_ROWS``."""
    return max(_MIN_CHUNK_ROWS, min(_CHUNK_ELEMENTS // n_components, _CHUNK_BYTES // (width * dtype.itemsize)))


def _balanced_chunks(n_rows: int, most_rows: int, work_per_row: int) -> list[slice]:
    """Chunks of at most ``most_rows`` rows, as equal as may be, in a multiple of the pass's threads.

    A pass waits for its last chunk: 100,000 rows as 3 x 32,768 + 1,696 keep one of two threads idle for
    a quarter of it, 4 x 25,000 neither. Rows that fit one chunk stay one unless the pass's work reaches
    ``_SPLIT_WORK``: below that, handing half of the pass to another thread costs more than it saves when
    the cores are shared; above it the exp (one core's work in numpy) and the products are worth halving.
    """
    count = -(-n_rows // most_rows)
    threads = chunk_threads()
    if count > 1 or (n_rows * work_per_row >= _SPLIT_WORK and n_rows >= threads * _MIN_CHUNK_ROWS):
        count = -(-count // threads) * threads
    return row_chunks(n_rows, -(-n_rows // count))
