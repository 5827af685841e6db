"""Swagger UI shows a fit's picture inline: open /docs in headless Chromium, run "Draw a job's fit" on a job, and
keep a screenshot of the operation with its picture (docs/swagger-plot.png).

    python scripts/swagger_screenshot.py              # starts the service on a free port, writes docs/swagger-plot.png
    python scripts/swagger_screenshot.py URL [OUT]    # against a running service

Uses Debian's chromium (/usr/bin/chromium, `apt-get install chromium`) through playwright; never downloads a browser.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OPERATION = "#operations-pictures-plot_job_v1_jobs__job_id__plot_get"
# Three 2-D clusters: the picture shows points, ellipses and a legend.
CLUSTERS = {
    "points": [
        [0.1, 0.2], [-0.3, 0.1], [0.4, -0.2], [0.0, 0.5], [-0.2, -0.4], [0.3, 0.3], [-0.5, 0.0], [0.2, -0.5],
        [5.1, 4.9], [4.8, 5.3], [5.4, 5.1], [4.9, 4.6], [5.2, 5.5], [4.6, 5.0], [5.5, 4.8], [5.0, 5.2],
        [0.2, 5.1], [-0.3, 4.8], [0.5, 5.4], [0.0, 4.6], [-0.4, 5.3], [0.3, 4.9], [0.1, 5.6], [-0.1, 4.4],
    ],
    "n_components": 3,
    "seed": 0,
    "trace": "params",
}  # fmt: skip


def submit_fit(base_url: str) -> str:
    """A finished job's id (the three clusters, fitted as a job)."""
    job = httpx.post(f"{base_url}/v1/jobs/gaussian", json=CLUSTERS, timeout=30).json()
    deadline = time.monotonic() + 120  # a bound on a hang, not a speed claim
    while time.monotonic() < deadline:
        status = httpx.get(f"{base_url}/v1/jobs/{job['id']}", timeout=30).json()["status"]
        if status == "succeeded":
            return str(job["id"])
        if status in ("failed", "cancelled"):
            raise RuntimeError(f"the job {status}")
        time.sleep(0.1)
    raise RuntimeError("the job did not finish")


def capture(base_url: str, job_id: str, out: Path) -> dict[str, Any]:
    """Run the plot operation in Swagger UI's "Try it out" for ``job_id``; save the screenshot; describe the <img>."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{base_url}/docs", wait_until="load", timeout=60_000)
            operation = page.locator(OPERATION)
            operation.locator(".opblock-summary").click(timeout=60_000)
            operation.locator("button.try-out__btn").click(timeout=30_000)
            operation.locator('input[placeholder="job_id"]').fill(job_id)
            operation.locator("button.execute").click()
            image = operation.locator(".live-responses-table img").first
            image.wait_for(state="visible", timeout=120_000)
            image.evaluate("img => img.complete || new Promise(done => img.addEventListener('load', done))")
            facts: dict[str, Any] = image.evaluate(
                "img => ({naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight, src: img.src})"
            )
            image.scroll_into_view_if_needed()
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=False)
            return facts
        finally:
            browser.close()


def main(argv: list[str]) -> None:
    out = Path(argv[2]) if len(argv) > 2 else REPO / "docs" / "swagger-plot.png"
    if len(argv) > 1:
        facts = capture(argv[1], submit_fit(argv[1]), out)
    else:
        sys.path.insert(0, str(REPO))
        from tests.live_server import live_server

        with live_server({"EM_LOG_LEVEL": "WARNING"}) as server:
            facts = capture(server.url, submit_fit(server.url), out)
    print(f"wrote {out}: the inline picture is {facts['naturalWidth']} x {facts['naturalHeight']}")


if __name__ == "__main__":
    main(sys.argv)
