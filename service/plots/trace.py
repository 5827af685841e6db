"""The trace picture: log-likelihood per iteration for every start, the returned start in black."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from service.plots.style import INK, colour, footnote

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_NAMED_STARTS = 8  # starts named in the legend; more are drawn as "other starts"


def returned_start(result: dict[str, Any]) -> int:
    """The start whose parameters the result holds: the first with the best final log-likelihood."""
    finals = [restart["log_likelihood"] for restart in result["restarts"]]
    return int(np.argmax(finals)) if finals else 0


def draw(figure: Figure, result: dict[str, Any], traces: dict[str, NDArray[np.float64]] | None) -> None:
    """Every start's line from the job's kept traces; without them (a job from before pictures were kept), the
    returned start's trace from the result and the other starts' final values as points."""
    ax = figure.subplots()
    best = returned_start(result)
    if traces is not None and traces["start"].size:
        starts = traces["start"].astype(np.int64)
        for start in np.unique(starts):
            mine = starts == start
            returned = int(start) == best
            # Numbered as the events and `restarts` number them, from 0.
            label: str | None = f"start {start} (returned)" if returned else f"start {start}"
            if not returned and start >= _NAMED_STARTS:
                label = "other starts" if start == _NAMED_STARTS else None
            ax.plot(
                traces["iteration"][mine],
                traces["log_likelihood"][mine],
                color=INK if returned else colour(int(start)),
                lw=2.2 if returned else 1.0,
                alpha=1.0 if returned else 0.8,
                label=label,
                zorder=3 if returned else 2,
                marker="." if mine.sum() < 60 else None,
                gid=f"start{start}",
            )
    else:
        trace = result.get("trace") or []
        if trace:
            ax.plot(
                [t["iteration"] for t in trace],
                [t["log_likelihood"] for t in trace],
                color=INK,
                lw=2.2,
                marker="." if len(trace) < 60 else None,
                label=f"start {best + 1} (returned)",
                gid=f"start{best}",
            )
        restarts = result["restarts"]
        ax.plot(
            [r["n_iter"] for r in restarts],
            [r["log_likelihood"] for r in restarts],
            ls="",
            marker="o",
            color=colour(1),
            label="each start's final value",
        )
        footnote(figure, "per-iteration values of the other starts were not kept for this job")
    ax.set_xlabel("iteration")
    ax.set_ylabel("log-likelihood")
    ax.legend(fontsize="small", loc="lower right")
