"""Bar pictures: allele frequencies (with phenotypes observed against expected) and transcript abundances."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from service.em.alleles import genetics_of
from service.plots.fitted import NO_DATA, Fitted
from service.plots.style import colour, footnote

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_BARS = 30  # targets drawn at most: the most abundant, the rest named in a note


def allele_picture_data(task: Any, solution: Any) -> dict[str, NDArray[Any]]:
    """The phenotype counts, to draw against the counts the fitted frequencies expect."""
    return {"counts": np.asarray(task.counts, dtype=np.float64)}


def draw_alleles(figure: Figure, fitted: Fitted) -> None:
    alleles = list(fitted.model["alleles"])
    frequencies = np.asarray(fitted.params["frequencies"], dtype=np.float64)
    left, right = figure.subplots(1, 2, width_ratios=[1, 2])
    _bars(left, alleles, frequencies, [colour(a) for a in range(len(alleles))], "allele frequencies", "frequency")
    left.set_ylim(0, 1)
    phenotypes = fitted.model["phenotypes"]
    names = [p["name"] for p in phenotypes]
    genetics = genetics_of(alleles, [[(g[0], g[1]) for g in p["genotypes"]] for p in phenotypes], "phenotypes")
    expected = np.bincount(
        genetics.phenotype_of_genotype, weights=genetics.genotype_probabilities(frequencies), minlength=len(names)
    )
    x = np.arange(len(names))
    if "counts" in fitted.data:
        observed = fitted.data["counts"]
        total = float(observed.sum())
        right.bar(x - 0.2, observed, 0.4, color="#999999", label="observed", gid="observed")
        right.bar(x + 0.2, expected * total, 0.4, color=colour(0), label="expected from the fit", gid="expected")
        right.set_ylabel("individuals")
        right.set_title(f"phenotypes ({total:,.0f} individuals)", fontsize="medium")
    else:
        right.bar(x, expected, 0.6, color=colour(0), label="expected from the model", gid="expected")
        right.set_ylabel("probability")
        right.set_title("phenotypes", fontsize="medium")
        footnote(figure, NO_DATA)
    right.set_xticks(x, names, rotation=30 if len(names) > 6 else 0)
    right.legend(fontsize="small")


def draw_abundances(figure: Figure, fitted: Fitted) -> None:
    params = fitted.params
    names = list(params["targets"])
    tpm = np.asarray(params["tpm"], dtype=np.float64)
    counts = np.asarray(params["est_counts"], dtype=np.float64)
    shown = np.argsort(-tpm, kind="stable")[:MAX_BARS] if len(names) > MAX_BARS else np.arange(len(names))
    top, bottom = figure.subplots(2, 1, sharex=True)
    labels = [names[t] for t in shown]
    _bars(top, labels, tpm[shown], colour(0), "transcripts per million", "TPM")
    _bars(bottom, labels, counts[shown], colour(1), "estimated reads", "reads")
    bottom.tick_params(axis="x", labelrotation=60 if len(shown) > 8 else 0)
    if len(shown) < len(names):
        footnote(figure, f"the {len(shown)} most abundant of {len(names):,} targets")


def _bars(ax: Axes, labels: list[str], heights: NDArray[np.float64], colours: Any, title: str, unit: str) -> None:
    ax.bar(range(len(labels)), heights, color=colours, gid=title)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_title(title, fontsize="medium")
    ax.set_ylabel(unit)
