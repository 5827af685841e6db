"""Figures to bytes: PNG and SVG of one figure, an animated GIF of many frames."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml", "gif": "image/gif"}

# matplotlib sizes an SVG in points (1/72 in) from the figure's inches; a client asked for pixels.
_SVG_SIZE = re.compile(rb'width="([0-9.]+)pt" height="([0-9.]+)pt"')


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi, metadata={"Software": None})
    return buffer.getvalue()


def svg(figure: Figure, width_px: int, height_px: int) -> bytes:
    """SVG text whose width and height are the pixels asked for (the drawing scales to them by its viewBox)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return _SVG_SIZE.sub(f'width="{width_px}px" height="{height_px}px"'.encode(), buffer.getvalue(), count=1)


def rgb_frame(figure: Figure) -> np.ndarray:
    """The figure drawn as an (h, w, 3) uint8 array: one frame of an animation."""
    figure.canvas.draw()
    rgba = np.asarray(figure.canvas.buffer_rgba())  # type: ignore[attr-defined]  # the Agg canvas has it
    return np.array(rgba[:, :, :3])


def gif(frames: Iterable[np.ndarray], frame_ms: int, last_frame_ms: int) -> bytes:
    """An animated GIF (Pillow) that loops; the last frame (the fit's end) is held longer."""
    from PIL import Image

    images = [Image.fromarray(frame).quantize(colors=128, method=Image.Quantize.MEDIANCUT) for frame in frames]
    durations = [frame_ms] * (len(images) - 1) + [last_frame_ms]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    return buffer.getvalue()
