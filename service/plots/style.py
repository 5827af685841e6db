"""Colours, figures and the words every picture carries (title, notes), in one place.

Colours are Okabe and Ito's palette: told apart by readers with any common colour-vision deficiency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Okabe & Ito (2008), without black (kept for text and the mixture's line): component k is OKABE_ITO[k % 8].
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#999999")
INK = "#000000"  # the whole mixture, the fitted curve every component adds up to
DPI = 100
SIGMA, MU = "\N{GREEK SMALL LETTER SIGMA}", "\N{GREEK SMALL LETTER MU}"


def colour(k: int) -> str:
    """Component (coin, state, candidate type) ``k``'s colour; past eight they repeat."""
    return OKABE_ITO[k % len(OKABE_ITO)]


def new_figure(width_px: int, height_px: int, fixed_layout: bool = False) -> Figure:
    """A figure of exactly ``width_px`` x ``height_px`` pixels on the Agg canvas (no pyplot: no global state).

    Its layout is worked out from what it holds (matplotlib's constrained layout), except with ``fixed_layout``
    (an animation's frames): fixed margins, as the layout costs half of a frame's drawing and would make the axes
    jump from frame to frame anyway.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure, SubplotParams

    if fixed_layout:
        margins = SubplotParams(left=0.1, right=0.97, bottom=0.14, top=0.86, wspace=0.3, hspace=0.45)
        figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, subplotpars=margins)
    else:
        figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def title(figure: Figure, heading: str, outcome: dict[str, Any] | None) -> None:
    """The figure's title: what it shows, then (for a fit) why it stopped and its log-likelihood."""
    lines = [heading]
    if outcome is not None:
        facts = []
        if outcome.get("stop_reason") is not None:
            facts.append(f"stopped: {outcome['stop_reason']}")
        if outcome.get("n_iter") is not None:
            facts.append(f"{outcome['n_iter']} iteration{'' if outcome['n_iter'] == 1 else 's'}")
        if outcome.get("log_likelihood") is not None:
            facts.append(f"log-likelihood {float(outcome['log_likelihood']):.6g}")
        if facts:
            lines.append(", ".join(facts))
    figure.suptitle("\n".join(lines), fontsize="medium")


def footnote(figure: Figure, text: str) -> None:
    """A note under the axes (a subsample, data not kept): said on the picture, not only in the docs."""
    # The figure's bottom label: the layout makes room for it (plain figure text would sit on the axis label).
    figure.supxlabel(text, x=0.01, ha="left", fontsize="small", color="#444444")
