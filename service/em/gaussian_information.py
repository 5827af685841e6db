"""Standard errors of a Gaussian mixture's estimates: the observed information by Louis's identity.

Free parameters, in order: the weights but the last, every component's mean, then the covariance
parameters of the type — full: each component's entries sigma_ab (a <= b); diag: each component's variances;
spherical: each component's variance; tied: the shared entries sigma_ab (a <= b).

Every type's covariance is a sum of symmetric "pair" matrices E_ab = (e_a e_b' + e_b e_a') / (1 + [a = b]),
so the complete-data derivatives are written once, on pairs, and mapped to the type's parameters by a
fixed matrix (diag keeps the diagonal pairs, spherical sums them). With P = Sigma^-1, z = x - mu, u = P z:

    d log N / d mu = u                       d2 / d mu d mu' = -P
    d log N / d s_ab = (u_a u_b - P_ab) / (1 + [a = b])
    d2 / d mu d s_ab = -P E_ab u             d2 / d s_ab d s_cd = tr(E_ab P E_cd P) / 2 - u' E_ab P E_cd u

The responsibility-weighted Hessian needs only N_k, sum r u and sum r u u' per component, read off the
moments sum r, sum r z, sum r z z' (one product per chunk of rows). Louis's correction, the scores' outer
products, needs no (n x parameters) score matrix: a component's scores are one fixed linear map of the
polynomial basis [1, z, z_c z_e] of the point (see ``_ScoreBasis``), so the correction is those maps around
sums of the rows' distinct monomials of degree at most four, weighted per pair of components -- and only over
the pairs of components a point is shared by (weights above ``_NEGLIGIBLE_WEIGHT``): in separated groups two or
three. Points are grouped by their pairs so that each group's sums are a few dense products; the passes run on
the pass threads.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
from numpy.typing import NDArray

from service.em.chunks import map_chunks, row_chunks
from service.em.information import (
    Reported,
    Uncertainty,
    covariance_of_estimates,
    simplex_hessian,
    simplex_map,
    simplex_scores,
)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

# Numbers in a group's block of monomials (rows x distinct monomials): within the cache (measured: 2^18 took 0.65 of
# 2^21's time), and rows per pass over the data (its basis and the pairs' weights, ~25 MB for 8 features, K = 8).
_CHUNK_NUMBERS = 1 << 18
_ROWS_PER_PASS = 1 << 15
# A group of points sharing at most this many pairs takes each pair's (basis x basis) product, this many rows at once.
_FEW_PAIRS = 4
_ROWS_PER_PRODUCT = 4096
# A pair's weight r_k (1[k = l] - r_l) at or below this is left out of a point's correction (see the pass):
# measured on 100,000 x 8, K = 8, the covariance of the estimates moved by 4e-11 of its largest entry (1e-16: 5e-13
# less), while the pass took 0.8 of the time.
_NEGLIGIBLE_WEIGHT = 1e-12


def n_free_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    return (
        n_components
        - 1
        + n_components * n_features
        + _n_covariance_parameters(n_components, n_features, covariance_type)
    )


def _n_covariance_parameters(K: int, d: int, covariance_type: str) -> int:
    per = {"full": K * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": K * d, "spherical": K}
    return per[covariance_type]


class _Pairs:
    """The pairs a <= b of d features, and the map from pair derivatives to a covariance type's parameters."""

    def __init__(self, d: int, covariance_type: str) -> None:
        self.a, self.b = (index.astype(np.intp) for index in np.triu_indices(d))
        self.halved = np.where(self.a == self.b, 0.5, 1.0)  # 1 / (1 + [a = b])
        diagonal = np.flatnonzero(self.a == self.b)
        if covariance_type in ("full", "tied"):
            self.to_type = np.eye(len(self.a))
        elif covariance_type == "diag":
            self.to_type = np.zeros((d, len(self.a)))
            self.to_type[np.arange(d), diagonal] = 1.0
        else:  # spherical: sigma^2 I moves every diagonal entry together
            self.to_type = np.zeros((1, len(self.a)))
            self.to_type[0, diagonal] = 1.0

    def trace_products(self, P: FloatArray, Q: FloatArray) -> FloatArray:
        """tr(E_ab P E_cd Q) for every two pairs, mapped to the type's parameters on both sides."""
        a, b = self.a[:, None], self.b[:, None]
        c, d = self.a[None, :], self.b[None, :]
        pairs = (P[b, c] * Q[d, a] + P[b, d] * Q[c, a] + P[a, c] * Q[d, b] + P[a, d] * Q[c, b]) * np.outer(
            self.halved, self.halved
        )
        return self.to_type @ pairs @ self.to_type.T  # type: ignore[no-any-return]

    def mean_cross(self, P: FloatArray, u_sum: FloatArray) -> FloatArray:
        """sum_i r_i d2 / d mu d s (d x type parameters): -P E_ab (sum r u) for every pair, mapped."""
        pairs = -(P[:, self.a] * u_sum[self.b] + P[:, self.b] * u_sum[self.a]) * self.halved
        cross: FloatArray = pairs @ self.to_type.T
        return cross


def _precisions(covariances: FloatArray, covariance_type: str, K: int, d: int) -> FloatArray:
    if covariance_type == "full":
        return np.asarray(np.linalg.inv(covariances), dtype=np.float64)
    if covariance_type == "tied":
        return np.broadcast_to(np.asarray(np.linalg.inv(covariances), dtype=np.float64), (K, d, d))
    if covariance_type == "diag":
        return np.stack([np.diag(1.0 / c) for c in covariances])
    return np.stack([np.eye(d) / c for c in covariances])


def parameter_names(K: int, d: int, covariance_type: str) -> list[str]:
    names = [f"weights[{k}]" for k in range(K - 1)]
    names += [f"means[{k}][{j}]" for k in range(K) for j in range(d)]
    upper = list(zip(*np.triu_indices(d), strict=True))
    if covariance_type == "full":
        names += [f"covariances[{k}][{a}][{b}]" for k in range(K) for a, b in upper]
    elif covariance_type == "tied":
        names += [f"covariances[{a}][{b}]" for a, b in upper]
    elif covariance_type == "diag":
        names += [f"covariances[{k}][{j}]" for k in range(K) for j in range(d)]
    else:
        names += [f"covariances[{k}]" for k in range(K)]
    return names


def reported_maps(K: int, d: int, covariance_type: str) -> dict[str, Reported]:
    """Each reported parameter (flattened, in the result's shape) as a map of the free ones."""
    start = K - 1 + K * d
    if covariance_type in ("full", "tied"):
        blocks = K if covariance_type == "full" else 1
        n_pairs = d * (d + 1) // 2
        position = np.zeros((d, d), dtype=np.intp)  # entry (a, b) of a block: its pair's index, either order
        upper = np.triu_indices(d)
        position[upper] = np.arange(n_pairs)
        position[upper[1], upper[0]] = np.arange(n_pairs)
        covariances = (start + np.arange(blocks)[:, None, None] * n_pairs + position[None, :, :]).reshape(-1)
    else:
        covariances = np.arange(start, start + (K * d if covariance_type == "diag" else K))
    return {
        "weights": Reported(np.arange(K - 1), simplex_map(K)),
        "means": Reported(np.arange(K - 1, start)),
        "covariances": Reported(covariances.astype(np.intp)),
    }


def gaussian_uncertainty(
    X: FloatArray,
    weights: FloatArray,
    means: FloatArray,
    covariances: FloatArray,
    covariance_type: str,
    resp: FloatArray,
    converged: bool,
) -> Uncertainty:
    """The covariance of the free parameters' estimates at (weights, means, covariances), given the
    responsibilities ``resp`` (n x K) those parameters imply."""
    n, d = X.shape
    K = len(weights)
    names = parameter_names(K, d, covariance_type)
    if np.any(weights <= 0):
        return Uncertainty(names, None, ["standard errors are not given: a component has weight 0 (it is empty)"])
    pairs = _Pairs(d, covariance_type)
    precisions = _precisions(covariances, covariance_type, K, d)
    n_type = len(pairs.to_type)
    tied = covariance_type == "tied"
    mean_start, covariance_start = K - 1, K - 1 + K * d

    def columns_of(k: int) -> IntArray:
        mean = np.arange(mean_start + k * d, mean_start + (k + 1) * d)
        block = 0 if tied else k
        covariance = np.arange(covariance_start + block * n_type, covariance_start + (block + 1) * n_type)
        return np.concatenate([np.arange(K - 1), mean, covariance]).astype(np.intp)

    basis = _ScoreBasis(X, covariance_type in ("full", "tied"))
    weight_scores = simplex_scores(weights)
    score_maps = [
        basis.score_map(weight_scores[k], means[k], precisions[k], pairs) for k in range(K)
    ]  # s_ik = score_maps[k] @ basis(x_i), on columns_of(k)
    first, second = np.triu_indices(K)  # the component pairs k <= l of Louis's correction
    # Per component: sum r, sum r z and sum r z_c z_e (c <= e), in the standardised z of the basis.
    # Rows of a group's monomials at a time: their (monomials x rows) block stays in the cache.
    group_rows = max(64, _CHUNK_NUMBERS // basis.n_monomials)

    def one_pass(rows: slice) -> tuple[FloatArray, FloatArray]:
        """A pass's share of the moments (per component: sum r, sum r z, sum r z_c z_e in the basis's standardised
        z) and of the pairs' monomial sums."""
        r = np.ascontiguousarray(resp[rows].T)  # rows of it are gathered below
        weights_of_pairs = -r[first] * r[second]  # sum_k r_k s_k s_k' - g g' = sum_kl c_kl s_k s_l'
        weights_of_pairs[first == second] += r
        # A point's correction has a term for a pair of components only where both hold some of it. Below
        # _NEGLIGIBLE_WEIGHT the term is that weight times scores that grow only polynomially with the distance
        # that made it so small (r = 1e-12 is ~7.4 standard deviations away, scores ~55^2): below 1e-8 of the
        # point's own terms, and left out. In separated groups a point is shared by two or three components: grouped by
        # which pairs they have, the rows' products are ~5 pairs wide rather than K(K+1)/2.
        order, groups = _rows_by_pattern(np.abs(weights_of_pairs) > _NEGLIGIBLE_WEIGHT)
        # The pass's rows in group order, so that every group's basis and weights are contiguous.
        points, weights_of_pairs = X[rows][order], weights_of_pairs[:, order]
        every_pair = basis.basis(points, all_pairs=True)
        moments = resp[rows][order].T @ every_pair.T
        pair_moments = np.zeros((len(first), basis.n_monomials))
        for group_start, group_stop, used in groups:
            # Few pairs: each pair's weighted (basis x basis) product, read at the monomials; more: the monomials
            # built once and weighed by every pair in one product (measured crossover: 4 to 6 pairs).
            rows_at_once = _ROWS_PER_PRODUCT if len(used) <= _FEW_PAIRS else group_rows
            for part in range(group_start, group_stop, rows_at_once):
                span = slice(part, min(part + rows_at_once, group_stop))
                own = every_pair[:, span] if basis.all_pairs else basis.basis(points[span])
                if len(used) <= _FEW_PAIRS:
                    for pair in used.tolist():
                        pair_moments[pair] += basis.at_monomials((own * weights_of_pairs[pair, span]) @ own.T)
                else:
                    pair_moments[used] += weights_of_pairs[used, span] @ basis.monomials(own).T
        return moments, pair_moments

    # The passes over the pass threads; their sums added in pass order, whichever thread made them.
    passes = map_chunks(one_pass, row_chunks(n, _ROWS_PER_PASS))
    moments = np.sum([part[0] for part in passes], axis=0)
    pair_moments = np.sum([part[1] for part in passes], axis=0)
    counts = moments[:, 0]
    u_sums, u_outer = basis.scaled_moments(moments, means, precisions)

    hessian = np.zeros((len(names), len(names)))
    hessian[: K - 1, : K - 1] = simplex_hessian(weights, counts)
    for k in range(K):
        P = precisions[k]
        mean = np.arange(mean_start + k * d, mean_start + (k + 1) * d)
        block = 0 if tied else k
        covariance = np.arange(covariance_start + block * n_type, covariance_start + (block + 1) * n_type)
        hessian[np.ix_(mean, mean)] -= counts[k] * P
        cross = pairs.mean_cross(P, u_sums[k])
        hessian[np.ix_(mean, covariance)] += cross
        hessian[np.ix_(covariance, mean)] += cross.T
        hessian[np.ix_(covariance, covariance)] += 0.5 * counts[k] * pairs.trace_products(P, P) - pairs.trace_products(
            P, u_outer[k]
        )
    # sum_i sum_kl c_ikl s_ik s_il' = sum_kl S_k (sum_i c_ikl b_i b_i') S_l', the middle read off the monomial sums.
    correction = np.zeros_like(hessian)
    for index, (k, other) in enumerate(zip(first.tolist(), second.tolist(), strict=True)):
        pair_block = score_maps[k] @ basis.outer_products(pair_moments[index]) @ score_maps[other].T
        correction[np.ix_(columns_of(k), columns_of(other))] += pair_block
        if k != other:
            correction[np.ix_(columns_of(other), columns_of(k))] += pair_block.T
    information: FloatArray = -(hessian + correction)
    return covariance_of_estimates((information + information.T) / 2, names, converged)


class _ScoreBasis:
    """A component's complete-data scores as one fixed linear map of a polynomial basis of the point.

    The scores of the weights are constants, the means' are affine in x (u = P(x - mu)) and the covariances'
    quadratic (u_a u_b - P_ab): each is ``S_k b(x)`` for the basis b(x) = [1, z, z_c z_e] of the standardised
    point z = (x - centre) / scale (the pairs c <= e for full and tied covariances, only c = e for diagonal
    and spherical ones). Louis's correction, a sum over points of responsibility-weighted products of scores,
    is then S_k (sum_i c_i b_i b_i') S_l': its middle holds monomials of z of degree at most four, so one
    product of the rows' weights with their distinct monomials gives all of it. For 8 features that is 495
    monomials against 359^2 / 2 entries of the scores' outer product (K = 8, full), a row.
    Standardising keeps the monomials near 1: expanded about the origin of raw coordinates, the scores
    of points far from it would be differences of large terms.
    """

    def __init__(self, X: FloatArray, all_pairs: bool) -> None:
        d = X.shape[1]
        self.centre = X.mean(axis=0)
        spread = X.std(axis=0)
        self.scale = np.where(spread > 0, spread, 1.0)
        self.all_pairs = all_pairs
        self.every_pair = np.triu_indices(d)
        self.quadratic = self.every_pair if all_pairs else (np.arange(d), np.arange(d))
        self.n_basis = 1 + d + len(self.quadratic[0])
        self.n_moments = 1 + d + len(self.every_pair[0])
        self.first, self.second, self.monomial_of = _distinct_monomials(d, all_pairs)
        self.n_monomials = len(self.first)

    def basis(self, X: FloatArray, all_pairs: bool = False) -> FloatArray:
        """(basis x rows): the rows' basis entries, each a contiguous row (the monomials gather whole rows).
        ``all_pairs``: with every z_c z_e (c <= e) whatever the covariance type (the moments' basis)."""
        z = (X.T - self.centre[:, None]) / self.scale[:, None]  # contiguous rows: the pairs below gather them
        d = len(z)
        quadratic = self.every_pair if all_pairs else self.quadratic
        b = np.empty((1 + d + len(quadratic[0]), z.shape[1]))
        b[0] = 1.0
        b[1 : 1 + d] = z
        np.multiply(z[quadratic[0]], z[quadratic[1]], out=b[1 + d :])
        return b

    def monomials(self, b: FloatArray) -> FloatArray:
        """(distinct monomials x rows) from the basis ``b`` of the rows: one product of two entries each."""
        return b[self.first] * b[self.second]

    def scaled_moments(
        self, moments: FloatArray, means: FloatArray, precisions: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """sum_i r_ik u_ik and sum_i r_ik u_ik u_ik' per component (u = P_k (x - mu_k)), from the moments of z:
        with G = P diag(scale) and nu = P (mu - centre), u = G z - nu."""
        K, d = means.shape
        u_sums, u_outer = np.empty((K, d)), np.empty((K, d, d))
        for k in range(K):
            count, first = moments[k, 0], moments[k, 1 : 1 + d]
            second = np.empty((d, d))
            second[self.every_pair] = moments[k, 1 + d :]
            second.T[self.every_pair] = moments[k, 1 + d :]
            G = precisions[k] * self.scale[None, :]
            nu = precisions[k] @ (means[k] - self.centre)
            G_first = G @ first
            u_sums[k] = G_first - count * nu
            u_outer[k] = G @ second @ G.T - np.outer(G_first, nu) - np.outer(nu, G_first) + count * np.outer(nu, nu)
        return u_sums, u_outer

    def at_monomials(self, products: FloatArray) -> FloatArray:
        """The distinct monomials' sums read off a (basis x basis) sum of weighted products b b'."""
        return products[self.first, self.second]

    def outer_products(self, monomial_sums: FloatArray) -> FloatArray:
        """sum_i c_i b_i b_i' (basis x basis) from sum_i c_i m_i over the distinct monomials m."""
        return monomial_sums[self.monomial_of]

    def score_map(self, weight_score: FloatArray, mean: FloatArray, precision: FloatArray, pairs: _Pairs) -> FloatArray:
        """S_k: (the component's columns, see ``columns_of``) x basis. With G = P diag(scale) and
        nu = P (mu - centre), u = G z - nu, so u_a u_b = sum_ce G_ac G_be z_c z_e - nu_a (G z)_b - nu_b (G z)_a
        + nu_a nu_b."""
        d = len(mean)
        G = precision * self.scale[None, :]
        nu = precision @ (mean - self.centre)
        n_weights = len(weight_score)
        rows = np.zeros((n_weights + d + len(pairs.a), self.n_basis))
        rows[:n_weights, 0] = weight_score
        rows[n_weights : n_weights + d, 0] = -nu
        rows[n_weights : n_weights + d, 1 : 1 + d] = G
        a, b = pairs.a[:, None], pairs.b[:, None]
        c, e = self.quadratic[0][None, :], self.quadratic[1][None, :]
        pair_rows = rows[n_weights + d :]
        pair_rows[:, 0] = nu[pairs.a] * nu[pairs.b] - precision[pairs.a, pairs.b]
        pair_rows[:, 1 : 1 + d] = -(nu[pairs.a, None] * G[pairs.b] + nu[pairs.b, None] * G[pairs.a])
        pair_rows[:, 1 + d :] = (G[a, c] * G[b, e] + G[a, e] * G[b, c]) * np.where(c == e, 0.5, 1.0)
        pair_rows *= pairs.halved[:, None]
        type_rows = pairs.to_type @ pair_rows
        return np.vstack([rows[: n_weights + d], type_rows])


def _rows_by_pattern(active: NDArray[np.bool_]) -> tuple[IntArray, list[tuple[int, int, IntArray]]]:
    """The rows (columns of ``active``, pairs x rows) ordered by which pairs they have, and each group that has
    any as (start, stop, its pairs) in that order. Each row's pattern is packed into 64-bit words and the words
    sorted (a sort of byte strings, np.unique over rows, took ten times as long)."""
    n_rows = active.shape[1]
    packed = np.packbits(active, axis=0, bitorder="little")
    padded = np.zeros((-(-len(packed) // 8) * 8, n_rows), dtype=np.uint8)
    padded[: len(packed)] = packed
    words = np.ascontiguousarray(padded.T).view(np.uint64)  # rows x words
    order = np.lexsort(words.T[::-1])
    ordered = words[order]
    starts = np.flatnonzero(np.any(ordered[1:] != ordered[:-1], axis=1)) + 1
    bounds = [0, *starts.tolist(), n_rows]
    groups = []
    for start, stop in itertools.pairwise(bounds):
        used = np.flatnonzero(active[:, order[start]])
        if used.size:
            groups.append((start, stop, used))
    return order, groups


@functools.cache
def _distinct_monomials(d: int, all_pairs: bool) -> tuple[IntArray, IntArray, IntArray]:
    """For the basis [1, z, z_c z_e]: one pair of basis entries (first, second) per distinct monomial of their
    products, and the (basis x basis) index of each product's monomial."""
    a, b = np.triu_indices(d) if all_pairs else (np.arange(d), np.arange(d))
    variables = [(), *((c,) for c in range(d)), *zip(a.tolist(), b.tolist(), strict=True)]
    n_basis = len(variables)
    index: dict[tuple[int, ...], int] = {}
    first: list[int] = []
    second: list[int] = []
    monomial_of = np.empty((n_basis, n_basis), dtype=np.intp)
    for u in range(n_basis):
        for v in range(u, n_basis):
            key = tuple(sorted(variables[u] + variables[v]))
            if key not in index:
                index[key] = len(first)
                first.append(u)
                second.append(v)
            monomial_of[u, v] = monomial_of[v, u] = index[key]
    return np.array(first, dtype=np.intp), np.array(second, dtype=np.intp), monomial_of
