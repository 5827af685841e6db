"""Request bodies and polling helpers shared by the job tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def long_gaussian_body(n_points: int = 40_000, time_limit_s: float = 60.0) -> dict[str, Any]:
    """A fit that keeps iterating (tol 0, huge max_iter) until cancelled or out of time."""
    points = np.random.default_rng(0).normal(size=(n_points, 3)).round(4).tolist()
    return {
        "points": points,
        "n_components": 6,
        "max_iter": 10_000,
        "tol": 0,
        "time_limit_s": time_limit_s,
        "return_labels": False,
        "seed": 0,
    }


def wait_until(predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def parse_sse(lines: list[str]) -> list[dict[str, str]]:
    """Events of a text/event-stream body: each a dict of its fields (comments dropped)."""
    events, current = [], {}
    for line in lines:
        if not line:
            if current:
                events.append(current)
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            current[name] = value.removeprefix(" ")
    if current:
        events.append(current)
    return events


def finished_job(client: Any, job_id: str) -> dict[str, Any] | None:
    """The job's record once it has ended (succeeded, failed or cancelled), else None: for ``wait_until``."""
    job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    return job if job["status"] in ("succeeded", "failed", "cancelled") else None


async def no_worker_free(fit_id: str, item: Any, keep_as: Any = None) -> None:
    """A job manager's ``run_small_fit`` when no worker can take the fit: the caller solves it, and keeps its model."""
    return None
