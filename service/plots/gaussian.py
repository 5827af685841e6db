"""The picture of a Gaussian mixture: 1-D a histogram under each component's density and the mixture's; 2-D the
points coloured by component with 1 and 2 sigma ellipses; d > 2 the same on the mixture's first two principal axes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from service.em.blocks import has_nan, take_rows
from service.em.gaussian_missing import full_covariances
from service.plots.fitted import NO_DATA, Fitted, shown_of, subsample
from service.plots.style import INK, MU, SIGMA, colour, footnote

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FloatArray = NDArray[np.float64]
_GRID = 800  # points of each density line
_MAX_LEGEND = 8  # components named in the legend; more are drawn, the legend says how many


def components(params: dict[str, Any], covariance_type: str) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Weights (K,), means (K, d) and every component's full covariance (K, d, d)."""
    weights = np.asarray(params["weights"], dtype=np.float64)
    means = np.asarray(params["means"], dtype=np.float64).reshape(len(weights), -1)
    K, d = means.shape
    covariances = np.asarray(params["covariances"], dtype=np.float64)
    if d == 1:
        covariances = covariances.reshape(-1)[: 1 if covariance_type == "tied" else K]
        covariances = np.broadcast_to(covariances, (K,)).reshape(K, 1, 1)
        return weights, means, covariances
    return weights, means, np.asarray(full_covariances(covariances, covariance_type, K, d))


def principal_axes(weights: FloatArray, means: FloatArray, covariances: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The mixture's centre and its covariance's two leading eigenvectors (d x 2): the plane of a d > 2 picture.

    Taken from the fitted parameters, so a kept model without data has the same plane as its job's points.
    """
    centre = weights @ means
    spread = np.einsum("k,kij->ij", weights, covariances) + np.einsum(
        "k,ki,kj->ij", weights, means - centre, means - centre
    )
    values, vectors = np.linalg.eigh(spread)
    order = np.argsort(values)[::-1][:2]
    axes = vectors[:, order]
    axes *= np.where(axes.sum(axis=0) < 0, -1.0, 1.0)  # a fixed sign: the same fit always faces the same way
    return centre, axes


def picture_data(task: Any, solution: Any) -> dict[str, NDArray[Any]]:
    """What a job keeps to draw its points: 1-D a histogram of all of them; d-D at most 20,000 complete points
    (projected on the principal plane when d > 2) and each one's most probable component."""
    X = task.X
    n, d = X.shape
    if d == 1:
        values = np.asarray(X[:, 0], dtype=np.float64)
        values = values[np.isfinite(values)]
        bins = int(np.clip(np.sqrt(values.size), 10, 100))
        counts, edges = np.histogram(values, bins=bins)
        return {"hist_counts": counts.astype(np.float64), "hist_edges": edges, "n_total": np.asarray(values.size)}
    complete = np.flatnonzero(~np.isnan(X).any(axis=1)) if has_nan(X) else np.arange(n)
    picked = complete[subsample(complete.size)]
    points = np.asarray(take_rows(X, picked), dtype=np.float64)  # an uploaded dataset: read a block at a time
    if solution.labels is not None:  # the fit's own, when it reported them
        labels = solution.labels[picked].astype(np.int16)
    else:
        labels = np.argmax(solution.outcome.log_resp[picked], axis=1).astype(np.int16)
    data: dict[str, NDArray[Any]] = {"labels": labels, "n_total": np.asarray(complete.size)}
    if d > 2:
        centre, axes = principal_axes(*components(solution.params, solution.covariance_type))
        points = (points - centre) @ axes
        data |= {"centre": centre, "axes": axes}
    data["points"] = points.astype(np.float32)
    if complete.size < n:
        data["n_incomplete"] = np.asarray(n - complete.size)
    return data


def draw(figure: Figure, fitted: Fitted) -> None:
    weights, means, covariances = components(fitted.params, fitted.model.get("covariance_type", "full"))
    if means.shape[1] == 1:
        _draw_1d(figure.subplots(), weights, means[:, 0], covariances[:, 0, 0], fitted.data)
    else:
        _draw_points(figure, figure.subplots(), weights, means, covariances, fitted.data)
    notes = [shown_of(fitted.data, len(fitted.data["points"]), "points")] if "points" in fitted.data else []
    if "n_incomplete" in fitted.data:
        notes.append(f"{int(fitted.data['n_incomplete']):,} points with missing coordinates are not drawn")
    if not fitted.data:
        notes.append(NO_DATA)
    if any(notes):
        footnote(figure, "; ".join(note for note in notes if note))


def _draw_1d(ax: Axes, weights: FloatArray, means: FloatArray, variances: FloatArray, data: Any) -> None:
    stds = np.sqrt(variances)
    low, high = float(np.min(means - 4 * stds)), float(np.max(means + 4 * stds))
    if "hist_edges" in data:
        edges, counts = data["hist_edges"], data["hist_counts"]
        density = counts / max(float(counts.sum()), 1.0) / np.diff(edges)
        ax.stairs(density, edges, fill=True, color="#DDDDDD", label=f"data ({int(counts.sum()):,} points)")
        low, high = min(low, float(edges[0])), max(high, float(edges[-1]))
    # The means are on the grid: each component's line peaks exactly at its mean.
    grid = np.union1d(np.linspace(low, high, _GRID), means)
    densities = (
        weights[:, None]
        * np.exp(-0.5 * ((grid - means[:, None]) / stds[:, None]) ** 2)
        / (np.sqrt(2 * np.pi) * stds[:, None])
    )
    for k in range(len(weights)):
        label = f"component {k + 1}: w={weights[k]:.3g}, {MU}={means[k]:.4g}, {SIGMA}={stds[k]:.3g}"
        ax.plot(grid, densities[k], color=colour(k), lw=1.6, label=label if k < _MAX_LEGEND else None, gid=f"c{k}")
    ax.plot(grid, densities.sum(axis=0), color=INK, lw=1.2, ls="--", label="mixture", gid="mixture")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.legend(fontsize="small", title=_more(len(weights)))


def _draw_points(
    figure: Figure, ax: Axes, weights: FloatArray, means: FloatArray, covariances: FloatArray, data: Any
) -> None:
    from matplotlib.patches import Ellipse

    d = means.shape[1]
    if d > 2:
        centre, axes = (data["centre"], data["axes"]) if "axes" in data else principal_axes(weights, means, covariances)
        means = (means - centre) @ axes
        covariances = np.einsum("ia,kij,jb->kab", axes, covariances, axes)
        ax.set_xlabel("principal axis 1")
        ax.set_ylabel("principal axis 2")
    else:
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
    if "points" in data:
        points, labels = data["points"], data["labels"]
        ax.scatter(
            points[:, 0],
            points[:, 1],
            s=4 if len(points) > 2000 else 16,  # a few points are seen; many would cover one another
            c=[colour(int(k)) for k in labels],
            alpha=0.5,
            lw=0,
            rasterized=True,
            gid="points",
        )
    for k in range(len(weights)):
        values, vectors = np.linalg.eigh(covariances[k][:2, :2])
        angle = float(np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1])))
        for sigmas, style in ((1, "-"), (2, "--")):
            width, height = 2 * sigmas * np.sqrt(np.maximum(values[::-1], 0.0))
            ax.add_patch(
                Ellipse(
                    (float(means[k, 0]), float(means[k, 1])),
                    float(width),
                    float(height),
                    angle=angle,
                    fill=False,
                    ec=colour(k),
                    lw=1.8 if sigmas == 1 else 1.2,
                    ls=style,
                    gid=f"c{k}-{sigmas}sigma",
                )
            )
        label = f"component {k + 1}: w={weights[k]:.3g}" if k < _MAX_LEGEND else None
        ax.plot(means[k, 0], means[k, 1], marker="X", ms=9, mec="white", color=colour(k), ls="", label=label)
    ax.plot([], [], color=INK, ls="-", label=f"1{SIGMA} ellipse")
    ax.plot([], [], color=INK, ls="--", label=f"2{SIGMA} ellipse")
    ax.autoscale_view()
    ax.legend(fontsize="small", title=_more(len(weights)), loc="best")


def _more(K: int) -> str | None:
    return f"first {_MAX_LEGEND} of {K} components" if K > _MAX_LEGEND else None
