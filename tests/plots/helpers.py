"""Fits solved here (no server) with what a job would keep for its pictures, and ways to look at a picture."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

import numpy as np
import orjson
from PIL import Image

from service.em.loop import Hooks
from service.families.registry import BY_KIND
from service.jobs.traces import StartTraces
from service.plots.fitted import bundle
from service.plots.render import PictureTask
from service.settings import Settings


class _Recorder(Hooks):
    """What a worker's hooks record of every start, for the trace picture."""

    def __init__(self) -> None:
        self.traces = StartTraces()

    def on_iteration(self, start: int, iteration: int, log_likelihood: float, delta: float) -> None:
        self.traces.add(start, iteration, log_likelihood)


@dataclass
class SolvedJob:
    kind: str
    result_json: bytes
    bundle: bytes
    model_json: bytes
    task: Any
    solution: Any

    @property
    def result(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.result_json)
        return parsed

    def picture(self, view: str = "fit", format: str = "png", width: int = 640, height: int = 480) -> PictureTask:
        return PictureTask(self.kind, view, format, width, height, "job test", self.result_json, self.bundle)  # type: ignore[arg-type]

    def model_picture(self, format: str = "png", width: int = 640, height: int = 480) -> PictureTask:
        return PictureTask(self.kind, "fit", format, width, height, "kept model test", model=self.model_json)  # type: ignore[arg-type]


def solve_job(kind: str, body: dict[str, Any]) -> SolvedJob:
    """``body`` fitted as a job's worker fits it, with the bundle the job would keep."""
    family = BY_KIND[kind]
    settings = Settings.model_construct()
    task = family.make_task(family.request.model_validate(body), settings, 60.0)
    family.check(task)
    hooks = _Recorder()
    solution = family.solve(task, hooks)
    model_json = orjson.dumps(family.keep(solution), option=orjson.OPT_SERIALIZE_NUMPY)
    kept = bundle(family.plot_data, task, solution, model_json, hooks.traces.arrays())
    return SolvedJob(kind, family.render(solution, "job-test"), kept, model_json, task, solution)


def example_body(kind: str, name: str | None = None, **changes: Any) -> dict[str, Any]:
    examples = BY_KIND[kind].examples
    value: dict[str, Any] = dict(examples[name or next(iter(examples))]["value"])
    return value | changes


def decoded(picture: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(picture))
    image.load()
    return image


def not_blank(image: Image.Image) -> bool:
    """More than one colour drawn, and in quantity: a picture, not an empty canvas."""
    pixels = np.asarray(image.convert("L"), dtype=np.float64)
    return float(pixels.var()) > 50.0


def svg_root(picture: bytes) -> ElementTree.Element:
    root = ElementTree.fromstring(picture)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root
