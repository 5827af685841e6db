"""Checks the container smoke test runs against a live service, with the standard library only.

container_checks.py URL fits            the Do & Batzoglou and a Gaussian fit give the reference numbers
container_checks.py URL submit-job      start the D&B fit as a job, wait for it, print its id
container_checks.py URL check-job ID    the job is still there, succeeded, with the reference biases
"""

from __future__ import annotations

import json
import random
import sys
import time
import urllib.request
from typing import Any

DO_BATZOGLOU = {
    "sequences": ["HTTTHHTHTH", "HHHHTHHHHH", "HTHHHHHTHH", "HTHTTTHHTT", "THHHTHHHTH"],
    "n_coins": 2,
    "init": {"biases": [0.6, 0.5]},
    "tol": 1e-10,
    "max_iter": 1000,
}
PAPER_BIASES = [0.7968, 0.5196]


def call(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.loads(response.read())


def close(actual: list[float], expected: list[float], tolerance: float, what: str) -> None:
    if len(actual) != len(expected) or any(abs(a - e) > tolerance for a, e in zip(actual, expected, strict=True)):
        raise SystemExit(f"FAIL {what}: got {actual}, expected {expected} within {tolerance}")
    print(f"ok   {what}: {[round(a, 4) for a in actual]}")


def check_fits(base: str) -> None:
    status, coins = call("POST", f"{base}/v1/fit/coins", DO_BATZOGLOU)
    assert status == 200, status
    close(coins["params"]["biases"], PAPER_BIASES, 5e-5, "Do & Batzoglou biases")

    rng = random.Random(0)
    points = [rng.gauss(-4.0, 1.0) for _ in range(300)] + [rng.gauss(6.0, 0.5) for _ in range(300)]
    status, gaussian = call("POST", f"{base}/v1/fit/gaussian", {"points": points, "seed": 0})
    assert status == 200, status
    close([m[0] for m in gaussian["params"]["means"]], [-4.0, 6.0], 0.15, "Gaussian means")
    close(gaussian["params"]["stds"], [1.0, 0.5], 0.1, "Gaussian standard deviations")


def submit_job(base: str) -> None:
    status, job = call("POST", f"{base}/v1/jobs/coins", DO_BATZOGLOU)
    assert status == 202, status
    for _ in range(300):
        _, job = call("GET", f"{base}/v1/jobs/{job['id']}")
        if job["status"] == "succeeded":
            print(job["id"])
            return
        time.sleep(0.1)
    raise SystemExit(f"FAIL job {job['id']} did not succeed: {job['status']}")


def check_job(base: str, job_id: str) -> None:
    status, job = call("GET", f"{base}/v1/jobs/{job_id}")
    assert status == 200 and job["status"] == "succeeded", (status, job.get("status"))
    close(job["result"]["params"]["biases"], PAPER_BIASES, 5e-5, f"job {job_id} after restart")


if __name__ == "__main__":
    base_url, command, *rest = sys.argv[1:]
    {
        "fits": lambda: check_fits(base_url),
        "submit-job": lambda: submit_job(base_url),
        "check-job": lambda: check_job(base_url, rest[0]),
    }[command]()
