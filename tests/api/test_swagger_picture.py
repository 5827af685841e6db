"""Swagger UI shows a job's picture inline on "Try it out": headless Chromium (Debian's) against a live server."""

from __future__ import annotations

import pytest

from scripts.swagger_screenshot import capture, submit_fit
from tests.live_server import live_server


@pytest.mark.slow
def test_swagger_ui_renders_the_plot_response_as_an_image(tmp_path):
    with live_server({"EM_LOG_LEVEL": "WARNING", "EM_DATA_DIR": str(tmp_path / "data")}) as server:
        job_id = submit_fit(server.url)
        facts = capture(server.url, job_id, tmp_path / "swagger.png")
    assert facts["src"].startswith("blob:")  # Swagger UI made the PNG response an object URL for an <img>
    assert (facts["naturalWidth"], facts["naturalHeight"]) == (800, 600)  # loaded and decoded: the picture's size
    assert (tmp_path / "swagger.png").stat().st_size > 10_000
