"""Jobs through a real uvicorn process and real HTTP: streaming, cancellation, crashes, restarts, liveness."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import DO_BATZOGLOU
from tests.jobs.helpers import long_gaussian_body, parse_sse, wait_until
from tests.live_server import live_server

FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture
def server(tmp_path):
    with live_server({"EM_DATA_DIR": str(tmp_path / "data"), "EM_WORKERS": "2"}) as running:
        yield running


def _job(url: str, job_id: str) -> dict:
    return httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()


def _final(url: str, job_id: str) -> dict | None:
    job = _job(url, job_id)
    return job if job["status"] in FINAL else None


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (the forkserver and the workers it forked), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _busy_workers(server_pid: int) -> list[int]:
    """Descendants that are burning CPU right now: the workers running a fit."""
    pids = _descendants(server_pid)
    before = {pid: _cpu_ticks(pid) for pid in pids}
    time.sleep(0.5)
    return [pid for pid in pids if _cpu_ticks(pid) - before[pid] >= 10]  # >= 0.1 s of CPU in 0.5 s


def test_live_events_arrive_in_order_and_the_job_equals_the_sync_fit(server):
    body = dict(long_gaussian_body(n_points=20_000), max_iter=150)
    job = httpx.post(f"{server.url}/v1/jobs/gaussian", json=body, timeout=30).json()
    with httpx.stream("GET", f"{server.url}/v1/jobs/{job['id']}/events", timeout=60) as stream:
        events = parse_sse(list(stream.iter_lines()))
    iterations = [json.loads(e["data"]) for e in events if e["event"] == "iteration"]
    assert [e["iteration"] for e in iterations] == list(range(1, 151))
    assert [e["event"] for e in events[-1:]] == ["succeeded"]
    result = json.loads(events[-1]["data"])["result"]
    assert [e["log_likelihood"] for e in iterations] == [t["log_likelihood"] for t in result["trace"]]
    sync = httpx.post(f"{server.url}/v1/fit/gaussian", json=body, timeout=60).json()
    assert sync["params"] == result["params"] and sync["trace"] == result["trace"]


def _events(url: str, job_id: str, last_event_id: int) -> list[dict[str, str]]:
    # 10 s: a stream left waiting would see its first ping only at 15 s, so it times out instead.
    headers = {"Last-Event-ID": str(last_event_id)}
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", headers=headers, timeout=10) as stream:
        assert stream.status_code == 200
        return parse_sse(list(stream.iter_lines()))


def test_events_past_the_last_event_id_still_end_with_the_final_event(server):
    # Both jobs are followed from memory: one finished within the replay window, one still running.
    done = httpx.post(f"{server.url}/v1/jobs/coins", json={"sequences": DO_BATZOGLOU}, timeout=30).json()
    wait_until(lambda: _final(server.url, done["id"]))
    final_id = int(_events(server.url, done["id"], 0)[-1]["id"])
    for last_event_id in (final_id, final_id + 1, 999_999):
        events = _events(server.url, done["id"], last_event_id)
        assert [(e["event"], e["id"]) for e in events] == [("succeeded", str(final_id))]

    running = httpx.post(f"{server.url}/v1/jobs/gaussian", json=long_gaussian_body(), timeout=30).json()
    wait_until(lambda: _job(server.url, running["id"])["progress"])
    followed: list[dict[str, str]] = []

    def follow() -> None:
        with contextlib.suppress(httpx.HTTPError):
            followed.extend(_events(server.url, running["id"], 999_999))

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    time.sleep(0.5)  # the follower is waiting on the running job
    assert httpx.delete(f"{server.url}/v1/jobs/{running['id']}", timeout=10).status_code == 202
    follower.join(15)
    assert [e["event"] for e in followed] == ["cancelled"]


def test_cancelling_a_million_point_fit_ends_it_within_two_seconds(server):
    points = np.random.default_rng(1).normal(size=1_000_000).round(5).tolist()
    body = {"points": points, "n_components": 4, "max_iter": 10_000, "tol": 0, "return_labels": False, "seed": 0}
    job = httpx.post(f"{server.url}/v1/jobs/gaussian", json=body, timeout=120).json()
    wait_until(lambda: _job(server.url, job["id"])["progress"], timeout_s=120)  # mid-run: iterating
    requested = time.monotonic()
    assert httpx.delete(f"{server.url}/v1/jobs/{job['id']}", timeout=10).status_code == 202
    done = wait_until(lambda: _final(server.url, job["id"]), timeout_s=10)
    took = time.monotonic() - requested
    print(f"cancel of a 10^6-point fit took {took:.2f} s")
    assert took < 2.0
    assert done["status"] == "cancelled"
    # The pool is healthy afterwards.
    response = httpx.post(f"{server.url}/v1/fit/coins", json={"sequences": DO_BATZOGLOU}, timeout=30)
    assert response.status_code == 200


def test_killing_a_worker_fails_only_its_job(server):
    doomed = httpx.post(f"{server.url}/v1/jobs/gaussian", json=long_gaussian_body(), timeout=30).json()
    wait_until(lambda: _job(server.url, doomed["id"])["progress"])
    [doomed_pid] = wait_until(lambda: _busy_workers(server.process.pid))
    bystander_body = dict(long_gaussian_body(n_points=20_000), max_iter=150)
    bystander = httpx.post(f"{server.url}/v1/jobs/gaussian", json=bystander_body, timeout=30).json()
    wait_until(lambda: _job(server.url, bystander["id"])["progress"])

    os.kill(doomed_pid, signal.SIGKILL)
    failed = wait_until(lambda: _final(server.url, doomed["id"]), timeout_s=10)
    assert failed["status"] == "failed" and failed["error"]["type"] == "worker_died"
    assert "SIGKILL" in failed["error"]["message"]
    assert wait_until(lambda: _final(server.url, bystander["id"]), timeout_s=60)["status"] == "succeeded"
    assert httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200
    assert httpx.post(f"{server.url}/v1/fit/coins", json={"sequences": DO_BATZOGLOU}, timeout=30).status_code == 200


def test_after_a_crash_and_restart_finished_jobs_are_served_and_interrupted_ones_failed(tmp_path):
    env = {"EM_DATA_DIR": str(tmp_path / "data"), "EM_WORKERS": "1"}
    with live_server(env) as first:
        finished = httpx.post(f"{first.url}/v1/jobs/coins", json={"sequences": DO_BATZOGLOU}, timeout=30).json()
        before = wait_until(lambda: _final(first.url, finished["id"]))
        interrupted = httpx.post(f"{first.url}/v1/jobs/gaussian", json=long_gaussian_body(), timeout=30).json()
        wait_until(lambda: _job(first.url, interrupted["id"])["status"] == "running")
        first.process.kill()  # a crash: no shutdown hook runs
        first.process.wait()
    with live_server(env) as second:
        after = _job(second.url, finished["id"])
        assert after["status"] == "succeeded" and after["result"] == before["result"]
        stuck = _job(second.url, interrupted["id"])
        assert stuck["status"] == "failed" and stuck["error"]["type"] == "interrupted"
        assert stuck["finished_at"] is not None
        with httpx.stream("GET", f"{second.url}/v1/jobs/{finished['id']}/events", timeout=10) as stream:
            events = parse_sse(list(stream.iter_lines()))
        assert events[-1]["event"] == "succeeded"
        assert len(events) - 1 == len(before["result"]["trace"])


def test_healthz_stays_fast_while_every_worker_is_busy(server):
    jobs = [
        httpx.post(f"{server.url}/v1/jobs/gaussian", json=long_gaussian_body(), timeout=30).json() for _ in range(2)
    ]
    for job in jobs:
        wait_until(lambda job=job: _job(server.url, job["id"])["progress"])
    assert httpx.get(f"{server.url}/readyz", timeout=5).json()["busy_workers"] == 2
    latencies = []
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for _ in range(200):
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
    p99 = float(np.percentile(latencies, 99))
    print(f"/healthz p99 with all workers busy: {p99 * 1000:.1f} ms")
    assert p99 < 0.100
    for job in jobs:
        httpx.delete(f"{server.url}/v1/jobs/{job['id']}", timeout=5)


def _follow(url: str, job_id: str, events: list[dict[str, str]]) -> None:
    with contextlib.suppress(httpx.HTTPError), httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", timeout=60) as s:
        events.extend(parse_sse(list(s.iter_lines())))


def test_graceful_shutdown_finishes_sync_fits_and_leaves_jobs_recoverable(tmp_path):
    env = {"EM_DATA_DIR": str(tmp_path / "data"), "EM_WORKERS": "2"}
    with live_server(env) as first:
        running = httpx.post(f"{first.url}/v1/jobs/gaussian", json=long_gaussian_body(), timeout=30).json()
        wait_until(lambda: _job(first.url, running["id"])["progress"])
        # A follower keeps a stream open; shutdown must not wait for the hour-long job to end.
        followed: list[dict[str, str]] = []
        follower = threading.Thread(target=_follow, args=(first.url, running["id"], followed), daemon=True)
        follower.start()
        sync_body = dict(long_gaussian_body(n_points=20_000), max_iter=60)
        answers: list[httpx.Response] = []
        in_flight = threading.Thread(
            target=lambda: answers.append(httpx.post(f"{first.url}/v1/fit/gaussian", json=sync_body, timeout=60))
        )
        in_flight.start()
        time.sleep(0.5)
        first.process.send_signal(signal.SIGTERM)
        in_flight.join(60)
        assert first.process.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
        follower.join(10)
    assert answers and answers[0].status_code == 200 and answers[0].json()["n_iter"] == 60
    with live_server(env) as second:
        after = _job(second.url, running["id"])
        assert after["status"] == "failed" and after["error"]["type"] == "interrupted"
