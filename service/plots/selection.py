"""The picture of a model selection: the criterion against K, one line per covariance type, the best starred."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.plots.style import INK, colour

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_TYPES = ("full", "tied", "diag", "spherical")  # a fixed colour for each covariance type


def draw(figure: Figure, result: dict[str, Any]) -> None:
    criterion = result["criterion"]
    ax = figure.subplots()
    candidates = result["candidates"]
    marked = False  # the degenerate marker is named in the legend once
    for covariance_type in sorted({c["covariance_type"] for c in candidates}, key=_TYPES.index):
        line = sorted(
            (c for c in candidates if c["covariance_type"] == covariance_type), key=lambda c: c["n_components"]
        )
        ax.plot(
            [c["n_components"] for c in line],
            [c[criterion] for c in line],
            marker="o",
            color=colour(_TYPES.index(covariance_type)),
            label=covariance_type,
            gid=covariance_type,
        )
        degenerate = [c for c in line if c["degenerate"]]
        if degenerate:
            ax.plot(
                [c["n_components"] for c in degenerate],
                [c[criterion] for c in degenerate],
                ls="",
                marker="x",
                ms=10,
                color="#444444",
                label=None if marked else "degenerate (set aside)",
            )
            marked = True
    best = next(
        c
        for c in candidates
        if c["n_components"] == result["best"]["n_components"]
        and c["covariance_type"] == result["best"]["covariance_type"]
    )
    ax.plot(
        [best["n_components"]],
        [best[criterion]],
        marker="*",
        ms=18,
        color=INK,
        ls="",
        gid="best",
        label=f"best: K={best['n_components']}, {best['covariance_type']}",
    )
    ax.set_xlabel("K (components)")
    ax.set_ylabel(f"{criterion.upper()} (lower is better)")
    ax.xaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]
    ax.legend(fontsize="small", title="covariance type")
