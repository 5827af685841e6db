"""Checks the container smoke test runs against a live service, with the standard library only.

container_checks.py URL fits            the Do & Batzoglou and a Gaussian fit give the reference numbers
container_checks.py URL submit-job      start the D&B fit as a job, wait for it, print its id
container_checks.py URL check-job ID    the job is still there, succeeded, with the reference biases

The cluster test (scripts/cluster-test.sh) runs these against the compose profile `cluster`:

container_checks.py URL wait-ready WORKERS     /readyz answers 200 and counts at least WORKERS RQ workers
container_checks.py URL submit-coins           queue the issue's coin job (n_init 3, seed 1), print its id
container_checks.py URL follow ID              read /events until the final event, which must be `succeeded`
container_checks.py URL check-coins ID         GET /v1/jobs/ID: succeeded, with the reference biases
container_checks.py URL wait-job ID            poll GET /v1/jobs/ID until it succeeds (then check-coins)
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
# The cluster test's job: the same data from three random starts (it converges to the same biases at tol 1e-6).
COINS_JOB = {"sequences": DO_BATZOGLOU["sequences"], "n_init": 3, "seed": 1}


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


def wait_ready(base: str, workers: int, timeout_s: float = 180.0) -> None:
    deadline, last = time.monotonic() + timeout_s, "no answer"
    while time.monotonic() < deadline:
        try:
            status, body = call("GET", f"{base}/readyz")
            if status == 200 and int(body.get("workers", 0)) >= workers:
                print(f"ok   {base} ready: {body}")
                return
            last = str(body)
        except OSError as error:  # refused while starting, or a 503 (HTTPError) while Redis/PostgreSQL come up
            last = str(error)
        time.sleep(1)
    raise SystemExit(f"FAIL {base} not ready with {workers} workers after {timeout_s:.0f} s: {last}")


def submit_coins(base: str) -> None:
    status, job = call("POST", f"{base}/v1/jobs/coins", COINS_JOB)
    assert status == 202, status
    print(job["id"])


def follow(base: str, job_id: str, timeout_s: float = 120.0) -> None:
    """Read the Server-Sent Events of the job on ``base`` until the final one (the stream closes after it)."""
    request = urllib.request.Request(f"{base}/v1/jobs/{job_id}/events", headers={"accept": "text/event-stream"})
    deadline, event, iterations = time.monotonic() + timeout_s, None, 0
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        for raw in response:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
                iterations += event == "iteration"
            elif line.startswith("data:") and event in {"succeeded", "failed", "cancelled"}:
                job = json.loads(line.partition(":")[2])
                if event != "succeeded" or job["status"] != "succeeded":
                    raise SystemExit(f"FAIL job {job_id} ended {event}: {job.get('error')}")
                print(f"ok   job {job_id} followed on {base}: {iterations} iteration events, then succeeded")
                return
            if time.monotonic() > deadline:
                break
    raise SystemExit(f"FAIL job {job_id}: no final event on {base} (last event: {event})")


def check_coins(base: str, job_id: str) -> None:
    status, job = call("GET", f"{base}/v1/jobs/{job_id}")
    assert status == 200 and job["status"] == "succeeded", (status, job.get("status"))
    biases = sorted(job["result"]["params"]["biases"], reverse=True)
    close(biases, PAPER_BIASES, 1e-3, f"job {job_id} read on {base}")


def wait_job(base: str, job_id: str, timeout_s: float = 120.0) -> None:
    deadline, status = time.monotonic() + timeout_s, "unknown"
    while time.monotonic() < deadline:
        _, job = call("GET", f"{base}/v1/jobs/{job_id}")
        status = job["status"]
        if status == "succeeded":
            check_coins(base, job_id)
            return
        if status in {"failed", "cancelled"}:
            raise SystemExit(f"FAIL job {job_id} {status}: {job.get('error')}")
        time.sleep(0.5)
    raise SystemExit(f"FAIL job {job_id} still {status} after {timeout_s:.0f} s")


if __name__ == "__main__":
    base_url, command, *rest = sys.argv[1:]
    {
        "fits": lambda: check_fits(base_url),
        "submit-job": lambda: submit_job(base_url),
        "check-job": lambda: check_job(base_url, rest[0]),
        "wait-ready": lambda: wait_ready(base_url, int(rest[0])),
        "submit-coins": lambda: submit_coins(base_url),
        "follow": lambda: follow(base_url, rest[0]),
        "check-coins": lambda: check_coins(base_url, rest[0]),
        "wait-job": lambda: wait_job(base_url, rest[0]),
    }[command]()
