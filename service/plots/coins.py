"""The picture of a coin mixture: each coin's bias, over the experiments' head fractions split among the coins by
their responsibilities (a stacked histogram: an experiment 70% likely from coin 1 adds 0.7 to coin 1's bar)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from service.plots.fitted import NO_DATA, Fitted, shown_of, subsample
from service.plots.style import colour, footnote

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def picture_data(task: Any, solution: Any) -> dict[str, NDArray[Any]]:
    """Heads, tails and responsibilities of at most 20,000 experiments."""
    picked = subsample(int(task.heads.size))
    return {
        "heads": np.asarray(task.heads[picked], dtype=np.float64),
        "tails": np.asarray(task.tails[picked], dtype=np.float64),
        "responsibilities": np.asarray(solution.responsibilities[picked], dtype=np.float64),
        "n_total": np.asarray(task.heads.size),
    }


def draw(figure: Figure, fitted: Fitted) -> None:
    biases = np.asarray(fitted.params["biases"], dtype=np.float64)
    weights = np.asarray(fitted.params.get("weights") or np.full(biases.size, 1 / biases.size), dtype=np.float64)
    ax = figure.subplots()
    data = fitted.data
    if "heads" in data:
        flips = data["heads"] + data["tails"]
        fractions = np.divide(data["heads"], flips, out=np.full_like(flips, 0.5), where=flips > 0)
        resp = data["responsibilities"]
        bins = np.linspace(0.0, 1.0, int(np.clip(np.max(flips, initial=1) + 1, 11, 41)) + 1).tolist()
        ax.hist(
            [fractions] * len(biases),
            bins=bins,
            weights=[resp[:, k] for k in range(len(biases))],
            stacked=True,
            color=[colour(k) for k in range(len(biases))],
            alpha=0.55,
            gid="experiments",
            label=[f"experiments, by responsibility for coin {k + 1}" for k in range(len(biases))],
        )
        ax.set_ylabel("experiments (split by responsibility)")
        note = shown_of(data, len(fractions), "experiments")
    else:
        ax.set_ylabel("mixing weight")
        ax.set_ylim(0, 1.05)
        note = NO_DATA
    top = ax.get_ylim()[1]
    for k, bias in enumerate(biases):
        ax.axvline(
            float(bias),
            color=colour(k),
            lw=2.2,
            gid=f"bias{k}",
            label=f"coin {k + 1}: bias {bias:.4g}, weight {weights[k]:.3g}",
        )
        if "heads" not in data:
            ax.plot([bias], [weights[k]], marker="o", color=colour(k), ls="")
    ax.set_ylim(0, top)
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of heads")
    ax.legend(fontsize="small", loc="upper left")
    if note:
        footnote(figure, note)
