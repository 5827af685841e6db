"""One picture request, drawn: what a worker process runs for ``GET .../plot``.

:class:`PictureTask` carries everything (the job's result, its kept bundle, or a kept model's content), so the
worker reads no store. :func:`figure_of` builds the matplotlib figure of a fit or trace view without encoding it
(tests read the figure's data); :func:`make_picture` encodes it, or draws and encodes an animation's frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson

from service.em.loop import Hooks
from service.plots import encode, selection, style, trace
from service.plots.fitted import Fitted, KeptPicture, unpack

if TYPE_CHECKING:
    from matplotlib.figure import Figure

View = Literal["fit", "trace", "animation"]
Format = Literal["png", "svg", "gif"]
Draw = Callable[["Figure", Fitted], None]

SELECTION_KIND = "gaussian_select"
MAX_FRAMES = 20  # an animation's frames at most: iterations evenly spaced from the first to the last
FRAME_MS, LAST_FRAME_MS = 150, 1500

_HEADINGS = {
    "coins": "coin mixture",
    "gaussian": "Gaussian mixture",
    "alleles": "allele frequencies",
    "abundances": "transcript abundances",
    "hmm": "hidden Markov model",
}


@dataclass(frozen=True)
class PictureTask:
    kind: str  # a family's kind, or gaussian_select
    view: View
    format: Format
    width: int
    height: int
    source: str  # what is drawn, for the title: "job <id>", "kept model <id>"
    result: bytes | None = None  # a job's result JSON
    bundle: bytes | None = None  # what the job kept for pictures (service.plots.fitted.pack)
    model: bytes | None = None  # a kept model's content (JSON), when there is no bundle: parsed in the worker


def draw_of(kind: str) -> Draw:
    """The family's picture function (from its registration): imported here, in the worker, not at module load."""
    from service.families.registry import BY_KIND

    draw = BY_KIND[kind].plot
    if draw is None:
        raise LookupError(f"the {kind} family registers no picture")
    return draw


def _inputs(task: PictureTask) -> tuple[dict[str, Any] | None, KeptPicture | None, dict[str, Any]]:
    """The result (jobs), the bundle (jobs that kept one) and the model content."""
    result = None if task.result is None else orjson.loads(task.result)
    kept = None if task.bundle is None else unpack(task.bundle)
    model = kept.model if kept is not None else None if task.model is None else orjson.loads(task.model)
    if model is None:
        model = {"params": result["params"]} if result is not None and "params" in result else {}
    return result, kept, model


def _heading(task: PictureTask, what: str) -> str:
    return f"{_HEADINGS.get(task.kind, task.kind)}{what}, {task.source}"


def _outcome(result: dict[str, Any] | None, model: dict[str, Any]) -> dict[str, Any] | None:
    """What the title says of how the fit ended: a job's result, or the log-likelihood a kept model recorded."""
    if result is not None:
        return result
    return {"log_likelihood": model["log_likelihood"]} if model.get("log_likelihood") is not None else None


def figure_of(task: PictureTask) -> Figure:
    """The figure of a ``fit`` or ``trace`` view (an animation is many: see :func:`animation_frames`)."""
    result, kept, model = _inputs(task)
    figure = style.new_figure(task.width, task.height)
    if task.kind == SELECTION_KIND:
        assert result is not None
        selection.draw(figure, result)
        best = result["best"]
        figure.suptitle(
            f"model selection by {result['criterion'].upper()}, {task.source}\n"
            f"best: K={best['n_components']}, {best['covariance_type']} covariances",
            fontsize="medium",
        )
    elif task.view == "trace":
        assert result is not None
        trace.draw(figure, result, None if kept is None else kept.traces)
        style.title(figure, _heading(task, ": log-likelihood per iteration"), result)
    else:
        data = {} if kept is None else kept.data
        params = result["params"] if result is not None else model["params"]
        draw_of(task.kind)(figure, Fitted(params, model, data))
        style.title(figure, _heading(task, ""), _outcome(result, model))
    return figure


def frame_indices(n_entries: int, limit: int = MAX_FRAMES) -> list[int]:
    """At most ``limit`` trace entries, evenly spaced, always the first and the last."""
    if n_entries <= limit:
        return list(range(n_entries))
    return sorted({round(i) for i in np.linspace(0, n_entries - 1, limit)})


def animation_frames(task: PictureTask) -> Iterator[Figure]:
    """One figure per chosen iteration of the trace's parameters (the returned start's)."""
    result, kept, model = _inputs(task)
    assert result is not None
    entries = [entry for entry in result["trace"] if entry.get("params") is not None]
    draw = draw_of(task.kind)
    data = {} if kept is None else kept.data
    for i in frame_indices(len(entries)):
        entry = entries[i]
        figure = style.new_figure(task.width, task.height, fixed_layout=True)
        # A snapshot may hold only what changes (abundances' rho, not the target names): the rest is the model's.
        draw(figure, Fitted({**model.get("params", {}), **entry["params"]}, model, data))
        style.title(
            figure,
            _heading(task, f": iteration {entry['iteration']} of {entries[-1]['iteration']}"),
            {"log_likelihood": entry["log_likelihood"]},
        )
        yield figure


def make_picture(task: PictureTask, hooks: Hooks | None = None) -> bytes:
    """The encoded picture (PNG, SVG or, for an animation, GIF). Runs in a worker process."""
    if task.view == "animation":
        frames = (encode.rgb_frame(figure) for figure in animation_frames(task))
        return encode.gif(frames, FRAME_MS, LAST_FRAME_MS)
    figure = figure_of(task)
    if task.format == "svg":
        return encode.svg(figure, task.width, task.height)
    return encode.png(figure)


def as_is(picture: bytes, job_id: str) -> bytes:
    """A picture job's "render" step: the picture is already its answer."""
    return picture
