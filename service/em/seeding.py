"""k-means++ seeding (Arthur & Vassilvitskii 2007), shared by every model that starts from its data.

Seeds far apart start EM near distinct groups; a blind start can leave a component owning nothing,
from which EM never recovers when the responsibilities are nearly 0/1.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def kmeans_plus_plus(
    points: FloatArray, n_seeds: int, rng: np.random.Generator, n_trials: int | None = None
) -> NDArray[np.intp]:
    """Indices of ``n_seeds`` rows of the n x d ``points``, each drawn with probability ~ its squared distance
    to the nearest row chosen so far.

    Greedy, as scikit-learn: of ``n_trials`` draws per seed (default 2 + log K) keep the one that leaves the
    smallest total squared distance; ``n_trials=1`` is the plain algorithm. When every row already sits on
    a chosen one (identical rows, or distances that underflow), there is nothing to weigh by: the rest are
    drawn uniformly, and may repeat.
    """
    n = len(points)
    trials = 2 + int(np.log(n_seeds)) if n_trials is None else n_trials
    chosen = [int(rng.integers(n))]
    closest = np.sum((points - points[chosen[0]]) ** 2, axis=1)
    for _ in range(1, n_seeds):
        potential = closest.sum()
        if potential <= 0:
            chosen.append(int(rng.integers(n)))
            continue
        # side="right": a draw never lands on a row of zero weight (what Generator.choice(p=...) does too).
        candidates = np.searchsorted(np.cumsum(closest), rng.uniform(size=trials) * potential, side="right")
        candidates = np.minimum(candidates, n - 1)  # the cumulative sum may round below the potential
        to_candidates = np.minimum(closest, squared_distances(points, points[candidates]).T)
        best = int(np.argmin(to_candidates.sum(axis=1)))
        chosen.append(int(candidates[best]))
        closest = to_candidates[best]
    return np.asarray(chosen, dtype=np.intp)


def squared_distances(points: FloatArray, centres: FloatArray) -> FloatArray:
    """n x m squared distances: exact differences for one feature; otherwise the expanded form, one matrix
    product instead of an n x m x d temporary (clipped at 0 against its rounding)."""
    if points.shape[1] == 1:
        return np.square(points - centres.T)
    distances: FloatArray = (
        np.sum(points**2, axis=1)[:, None] - 2 * points @ centres.T + np.sum(centres**2, axis=1)[None, :]
    )
    np.maximum(distances, 0, out=distances)
    return distances
