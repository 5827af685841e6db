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

The responsibility-weighted Hessian needs only N_k, sum r u and sum r u u' per component; the scores' outer
products (Louis's correction) take one pass over the rows in chunks, and only over the points that more than
one component shares (to working precision): for the others the correction is zero.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from service.em.information import (
    LouisSums,
    Reported,
    Uncertainty,
    covariance_of_estimates,
    simplex_hessian,
    simplex_map,
    simplex_scores,
)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

# Rows per chunk of the scores' pass: its (rows x parameters) arrays stay within ~16 MB.
_CHUNK_NUMBERS = 1 << 21


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

    def scores(self, u: FloatArray, precision: FloatArray) -> FloatArray:
        """(rows x type parameters) complete-data scores of the covariance parameters."""
        pair_scores = (u[:, self.a] * u[:, self.b] - precision[self.a, self.b]) * self.halved
        scores: FloatArray = pair_scores @ self.to_type.T
        return scores

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
    weight_columns = np.arange(K - 1)

    def columns_of(k: int) -> IntArray:
        mean = np.arange(mean_start + k * d, mean_start + (k + 1) * d)
        block = 0 if tied else k
        covariance = np.arange(covariance_start + block * n_type, covariance_start + (block + 1) * n_type)
        return np.concatenate([weight_columns, mean, covariance]).astype(np.intp)

    weight_scores = simplex_scores(weights)
    sums = LouisSums(len(names))
    counts = resp.sum(axis=0)
    u_sums = np.zeros((K, d))
    u_outer = np.zeros((K, d, d))
    rows_per_chunk = max(64, _CHUNK_NUMBERS // len(names))
    for start in range(0, n, rows_per_chunk):
        rows = slice(start, min(start + rows_per_chunk, n))
        # Louis's correction of a point, sum_k r_k s_k s_k' - g g', vanishes when one component has all of it.
        # Where the largest responsibility rounds to 1 the others are below 1e-16, and the correction is theirs
        # times scores that grow only polynomially with the distance that made them so small: below 1e-10 of
        # the point's own terms. Only the other points enter the (n x p^2) products: in separated groups, few.
        shared = np.flatnonzero(np.max(resp[rows], axis=1) < 1.0) + start
        mean_scores = np.zeros((len(shared), len(names)))
        for k in range(K):
            r = resp[rows, k]
            u = (X[rows] - means[k]) @ precisions[k]
            u_sums[k] += r @ u
            u_outer[k] += u.T @ (u * r[:, None])
            if shared.size:
                u_shared, r_shared = u[shared - start], resp[shared, k]
                scores = np.hstack(
                    [
                        np.broadcast_to(weight_scores[k], (len(shared), K - 1)),
                        u_shared,
                        pairs.scores(u_shared, precisions[k]),
                    ]
                )
                columns = columns_of(k)
                sums.add_component(r_shared, scores, columns)
                mean_scores[:, columns] += r_shared[:, None] * scores
        if shared.size:
            sums.add_mean_scores(mean_scores)

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
    return covariance_of_estimates(sums.information(hessian), names, converged)
