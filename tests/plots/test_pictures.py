"""Every view of every family renders: a valid PNG / SVG / GIF of the size asked for, and not blank."""

from __future__ import annotations

import pytest

from service.families.registry import BY_KIND, FAMILIES
from service.plots.render import MAX_FRAMES, make_picture
from tests.plots.helpers import decoded, example_body, not_blank, solve_job, svg_root

KINDS = [family.kind for family in FAMILIES]
EXAMPLES = [(family.kind, name) for family in FAMILIES for name in family.examples]


@pytest.fixture(scope="module")
def jobs():
    """Each family's examples, solved once with trace "params" (the animation needs it) and three starts."""
    solved = {}
    for kind, name in EXAMPLES:
        body = example_body(kind, name, trace="params")
        solved[kind, name] = solve_job(kind, body)
    return solved


def test_every_family_registers_a_picture():
    assert all(family.plot is not None for family in FAMILIES)


@pytest.mark.parametrize(("kind", "name"), EXAMPLES)
@pytest.mark.parametrize(("width", "height"), [(640, 480), (333, 222)])
def test_fit_and_trace_views_are_pngs_of_the_size_asked_for(jobs, kind, name, width, height):
    for view in ("fit", "trace"):
        image = decoded(make_picture(jobs[kind, name].picture(view, "png", width, height)))
        assert image.format == "PNG"
        assert image.size == (width, height)
        assert not_blank(image), f"{kind}/{name} {view} is blank"


@pytest.mark.parametrize(("kind", "name"), EXAMPLES)
def test_fit_and_trace_views_are_svgs_of_the_size_asked_for(jobs, kind, name):
    for view in ("fit", "trace"):
        root = svg_root(make_picture(jobs[kind, name].picture(view, "svg", 500, 300)))
        assert (root.get("width"), root.get("height")) == ("500px", "300px")
        assert root.get("viewBox") is not None  # the drawing scales to the size given
        assert len(list(root.iter())) > 50  # drawn, not an empty document


@pytest.mark.parametrize("kind", KINDS)
def test_a_kept_model_without_data_is_drawn_and_says_so(jobs, kind):
    job = next(job for (k, _), job in jobs.items() if k == kind)
    image = decoded(make_picture(job.model_picture("png", 400, 300)))
    assert image.size == (400, 300) and not_blank(image)
    if BY_KIND[kind].plot_data is not None:  # abundances draw their parameters alone either way
        assert b"the model alone" in make_picture(job.model_picture("svg"))  # matplotlib keeps each text as a comment


@pytest.mark.parametrize("kind", KINDS)
def test_the_animation_is_a_looping_gif_with_one_frame_per_kept_iteration(jobs, kind):
    job = next(job for (k, _), job in jobs.items() if k == kind)
    entries = [entry for entry in job.result["trace"] if entry.get("params") is not None]
    image = decoded(make_picture(job.picture("animation", "gif", 240, 180)))
    assert image.format == "GIF" and image.size == (240, 180)
    assert image.n_frames == min(len(entries), MAX_FRAMES)  # type: ignore[attr-defined]
    assert image.info.get("loop") == 0
    image.seek(image.n_frames - 1)  # type: ignore[attr-defined]
    assert not_blank(image.convert("RGB"))
