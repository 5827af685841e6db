"""The picture of a hidden Markov model: the first sequence coloured by its Viterbi states (a job's), the
transition matrix, and each state's emissions (symbol probabilities, or mean and one standard deviation)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from service.plots.fitted import NO_DATA, Fitted
from service.plots.style import SIGMA, colour, footnote

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_STEPS = 2_000  # steps of the first sequence drawn at most
_ANNOTATE_STATES = 8  # transition matrices up to this size carry their numbers


def picture_data(task: Any, solution: Any) -> dict[str, NDArray[Any]]:
    """The first sequence's first 2,000 steps, and their Viterbi states when the fit computed them."""
    first = int(task.sequences.lengths[0])
    shown = min(first, MAX_STEPS)
    values = np.asarray(task.sequences.values[:shown])
    data: dict[str, NDArray[Any]] = {"values": values.astype(np.float64), "n_total": np.asarray(first)}
    if solution.labels is not None:
        data["states"] = np.asarray(solution.labels[0][:shown], dtype=np.int16)
    return data


def draw(figure: Figure, fitted: Fitted) -> None:
    params, data = fitted.params, fitted.data
    transitions = np.asarray(params["transitions"], dtype=np.float64)
    if "values" in data:
        panels = figure.subfigures(2, 1, height_ratios=[1, 1.2])
        assert isinstance(panels, np.ndarray)  # two rows: an array of subfigures
        top, bottom = panels
        _sequence(top.subplots(), params, data)
        left, right = bottom.subplots(1, 2)
    else:
        left, right = figure.subplots(1, 2)
        footnote(figure, NO_DATA)
    _transitions(left, transitions)
    _emissions(right, params, fitted.model)


def _sequence(ax: Axes, params: dict[str, Any], data: Any) -> None:
    values = data["values"]
    steps = np.arange(len(values))
    y = values if values.ndim == 1 else values[:, 0]
    symbols = params.get("symbols")
    ax.plot(steps, y, color="#BBBBBB", lw=0.6, zorder=1)
    if "states" in data:
        states = data["states"]
        for k in range(len(params["transitions"])):
            mine = states == k
            ax.scatter(
                steps[mine],
                y[mine],
                s=8,
                color=colour(k),
                label=f"state {k + 1}",
                zorder=2,
                gid=f"state{k}",
                rasterized=len(steps) > 500,
            )
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    else:
        ax.scatter(steps, y, s=8, color=colour(0), zorder=2)
    if symbols is not None:
        ax.set_yticks(range(len(symbols)), [str(s) for s in symbols])
    ax.set_xlabel("step of the first sequence")
    one_number = values.ndim == 1 or values.shape[1] == 1
    ax.set_ylabel("symbol" if symbols is not None else "value" if one_number else "first coordinate")
    total = int(data["n_total"])
    suffix = f" (first {len(values):,} of {total:,} steps)" if total > len(values) else ""
    ax.set_title("Viterbi states" + suffix if "states" in data else "sequence" + suffix, fontsize="medium")


def _transitions(ax: Axes, transitions: NDArray[np.float64]) -> None:
    K = len(transitions)
    image = ax.imshow(transitions, vmin=0, vmax=1, cmap="cividis", gid="transitions")
    if K <= _ANNOTATE_STATES:
        for i in range(K):
            for j in range(K):
                ink = "black" if transitions[i, j] > 0.5 else "white"
                ax.text(j, i, f"{transitions[i, j]:.2f}", ha="center", va="center", color=ink, fontsize="small")
    ticks = [str(k + 1) for k in range(K)]
    ax.set_xticks(range(K), ticks)
    ax.set_yticks(range(K), ticks)
    ax.set_xlabel("to state")
    ax.set_ylabel("from state")
    ax.set_title("transition probabilities", fontsize="medium")
    ax.figure.colorbar(image, ax=ax, shrink=0.8)


def _emissions(ax: Axes, params: dict[str, Any], model: dict[str, Any]) -> None:
    K = len(params["transitions"])
    if "emissions" in params:
        emissions = np.asarray(params["emissions"], dtype=np.float64)
        symbols = [str(s) for s in params.get("symbols") or range(emissions.shape[1])]
        width = 0.8 / K
        for k in range(K):
            x = np.arange(len(symbols)) + (k - (K - 1) / 2) * width
            ax.bar(x, emissions[k], width, color=colour(k), label=f"state {k + 1}", gid=f"emissions{k}")
        ax.set_xticks(range(len(symbols)), symbols)
        ax.set_xlabel("symbol")
        ax.set_ylabel("probability")
        ax.set_title("emission probabilities", fontsize="medium")
    else:
        means = np.asarray(params["means"], dtype=np.float64).reshape(K, -1)
        covariances = np.asarray(params["covariances"], dtype=np.float64)
        variances = covariances[:, 0, 0] if covariances.ndim == 3 else covariances.reshape(K, -1)[:, 0]
        for k in range(K):
            ax.errorbar(
                [k + 1],
                [means[k, 0]],
                yerr=[np.sqrt(variances[k])],
                fmt="o",
                color=colour(k),
                capsize=6,
                label=f"state {k + 1}",
                gid=f"emissions{k}",
            )
        ax.set_xticks(range(1, K + 1), [str(k + 1) for k in range(K)])
        ax.set_xlim(0.5, K + 0.5)
        ax.set_xlabel("state")
        ax.set_ylabel(f"mean ± 1{SIGMA}" + (" (first coordinate)" if means.shape[1] > 1 else ""))
        ax.set_title("emissions", fontsize="medium")
    ax.legend(fontsize="small")
