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
# Timeouts here bound a hang; none is a claim about speed (benchmarks/latency.py measures that). A busy
# machine can make any step take seconds, so each gets far more than it needs.
HANG_S = 120.0


@pytest.fixture
def server(tmp_path):
    with live_server({"EM_DATA_DIR": str(tmp_path / "data"), "EM_WORKERS": "2"}) as running:
        yield running
        log = running.log_text()
    # A thread of the server that died (the pool's reader, say) leaves jobs waiting forever while every
    # request still answers: the symptom is a timeout somewhere else. Name the cause instead.
    if "Traceback (most recent call last)" in log:
        at = log.index("Traceback (most recent call last)")
        pytest.fail(f"the server logged an exception:\n{log[max(0, at - 300) : at + 4000]}")


def _job(url: str, job_id: str) -> dict:
    return httpx.get(f"{url}/v1/jobs/{job_id}", timeout=HANG_S).json()


def _readiness(url: str) -> dict:
    return httpx.get(f"{url}/readyz", timeout=HANG_S).json()


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


def _bytes_read(pid: int) -> int:
    """Bytes the process has read so far (``rchar`` of /proc/<pid>/io: pipes and sockets included)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no rchar in /proc/{pid}/io")


def _pool_runs_a_job(url: str) -> bool:
    """A job always runs on a worker (a tiny synchronous fit may be solved in the API process instead)."""
    job = httpx.post(f"{url}/v1/jobs/coins", json={"sequences": DO_BATZOGLOU}, timeout=HANG_S).json()
    return wait_until(lambda: _final(url, job["id"]), timeout_s=HANG_S)["status"] == "succeeded"


def test_live_events_arrive_in_order_and_the_job_equals_the_sync_fit(server):
    body = dict(long_gaussian_body(n_points=20_000), max_iter=150)
    job = httpx.post(f"{server.url}/v1/jobs/gaussian", json=body, timeout=HANG_S).json()
    with httpx.stream("GET", f"{server.url}/v1/jobs/{job['id']}/events", timeout=HANG_S) as stream:
        events = parse_sse(list(stream.iter_lines()))
    iterations = [json.loads(e["data"]) for e in events if e["event"] == "iteration"]
    assert [e["iteration"] for e in iterations] == list(range(1, 151))
    assert [e["event"] for e in events[-1:]] == ["succeeded"]
    result = json.loads(events[-1]["data"])["result"]
    assert [e["log_likelihood"] for e in iterations] == [t["log_likelihood"] for t in result["trace"]]
    sync = httpx.post(f"{server.url}/v1/fit/gaussian", json=body, timeout=HANG_S).json()
    assert sync["params"] == result["params"] and sync["trace"] == result["trace"]


def _events(url: str, job_id: str, last_event_id: int) -> list[dict[str, str]]:
    # 10 s: a stream left waiting would see its first ping only at 15 s, so it times out instead.
    headers = {"Last-Event-ID": str(last_event_id)}
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", headers=headers, timeout=10) as stream:
        assert stream.status_code == 200
        return parse_sse(list(stream.iter_lines()))


def test_events_past_the_last_event_id_still_end_with_the_final_event(server):
    # Both jobs are followed from memory: one finished within the replay window, one still running.
    done = httpx.post(f"{server.url}/v1/jobs/coins", json={"sequences": DO_BATZOGLOU}, timeout=HANG_S).json()
    wait_until(lambda: _final(server.url, done["id"]), timeout_s=HANG_S)
    final_id = int(_events(server.url, done["id"], 0)[-1]["id"])
    for last_event_id in (final_id, final_id + 1, 999_999):
        events = _events(server.url, done["id"], last_event_id)
        assert [(e["event"], e["id"]) for e in events] == [("succeeded", str(final_id))]

    running = httpx.post(f"{server.url}/v1/jobs/gaussian", json=long_gaussian_body(), timeout=HANG_S).json()
    wait_until(lambda: _job(server.url, running["id"])["progress"], timeout_s=HANG_S)
    followed: list[dict[str, str]] = []

    def follow() -> None:
        with contextlib.suppress(httpx.HTTPError):
            followed.extend(_events(server.url, running["id"], 999_999))

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    time.sleep(0.5)  # the follower is waiting on the running job
    assert httpx.delete(f"{server.url}/v1/jobs/{running['id']}", timeout=HANG_S).status_code == 202
    follower.join(15)
    assert [e["event"] for e in followed] == ["cancelled"]


def test_cancelling_a_million_point_fit_ends_it_cancelled(server):
    # How soon it ends is benchmarks/latency.py's to measure; here, only that it ends, and how.
    points = np.random.default_rng(1).normal(size=1_000_000).round(5).tolist()
    body = {"points": points, "n_components": 4, "max_iter": 10_000, "tol": 0, "return_labels": False, "seed": 0}
    job = httpx.post(f"{server.url}/v1/jobs/gaussian", json=body, timeout=HANG_S).json()
    wait_until(lambda: _job(server.url, job["id"])["progress"], timeout_s=HANG_S)  # mid-run: iterating
    assert httpx.delete(f"{server.url}/v1/jobs/{job['id']}", timeout=HANG_S).status_code == 202
    done = wait_until(lambda: _final(server.url, job["id"]), timeout_s=HANG_S)
    assert done["status"] == "cancelled"
    # The pool is healthy afterwards.
    assert _pool_runs_a_job(server.url)


def test_killing_a_worker_fails_only_its_job(server):
    # The doomed job's worker is told by what it has read (the job's points, ~1 MB, through its pipe),
    # not by how busy it looks: a worker runs at nice 5 and, beside other work, may get little CPU.
    doomed_body = long_gaussian_body(n_points=40_000)
    points_bytes = 40_000 * 3 * 4  # at least that, as float32; a worker that has run no job read ~40 KB
    read_before = {pid: _bytes_read(pid) for pid in _descendants(server.process.pid)}
    doomed = httpx.post(f"{server.url}/v1/jobs/gaussian", json=doomed_body, timeout=HANG_S).json()
    wait_until(lambda: _job(server.url, doomed["id"])["progress"], timeout_s=HANG_S)  # it has its data
    [doomed_pid] = [
        pid for pid in _descendants(server.process.pid) if _bytes_read(pid) - read_before.get(pid, 0) >= points_bytes
    ]
    # The other worker is free: the bystander runs there, beside the doomed job, when the kill comes.
    bystander_body = dict(long_gaussian_body(n_points=20_000), max_iter=150)
    bystander = httpx.post(f"{server.url}/v1/jobs/gaussian", json=bystander_body, timeout=HANG_S).json()
    wait_until(lambda: _job(server.url, bystander["id"])["progress"], timeout_s=HANG_S)

    os.kill(doomed_pid, signal.SIGKILL)
    failed = wait_until(lambda: _final(server.url, doomed["id"]), timeout_s=HANG_S)
    assert failed["status"] == "failed" and failed["error"]["type"] == "worker_died"
    assert "SIGKILL" in failed["error"]["message"]
    assert wait_until(lambda: _final(server.url, bystander["id"]), timeout_s=HANG_S)["status"] == "succeeded"
    assert httpx.get(f"{server.url}/readyz", timeout=HANG_S).status_code == 200
    assert _pool_runs_a_job(server.url)


def test_after_a_crash_and_restart_finished_jobs_are_served_and_interrupted_ones_failed(tmp_path):
    env = {"EM_DATA_DIR": str(tmp_path / "data"), "EM_WORKERS": "1"}
    with live_server(env) as first:
        finished = httpx.post(f"{first.url}/v1/jobs/coins", json={"sequences": DO_BATZOGLOU}, timeout=HANG_S).json()
        before = wait_until(lambda: _final(first.url, finished["id"]), timeout_s=HANG_S)
        interrupted = httpx.post(f"{first.url}/v1/jobs/gaussian", json=long_gaussian_body(), timeout=HANG_S).json()
        wait_until(lambda: _job(first.url, interrupted["id"])["status"] == "running", timeout_s=HANG_S)
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


def test_healthz_answers_while_every_worker_is_busy(server):
    # How fast it answers is benchmarks/latency.py's to measure; here, that it answers, fits or no fits.
    jobs = [
        httpx.post(f"{server.url}/v1/jobs/gaussian", json=long_gaussian_body(), timeout=HANG_S).json() for _ in range(2)
    ]
    for job in jobs:
        wait_until(lambda job=job: _job(server.url, job["id"])["progress"], timeout_s=HANG_S)
    assert _readiness(server.url)["busy_workers"] == 2
    with httpx.Client(base_url=server.url, timeout=HANG_S) as client:
        for _ in range(50):
            assert client.get("/healthz").json() == {"status": "ok"}
    for job in jobs:
        httpx.delete(f"{server.url}/v1/jobs/{job['id']}", timeout=HANG_S)


def _follow(url: str, job_id: str, events: list[dict[str, str]]) -> None:
    with (
        contextlib.suppress(httpx.HTTPError),
        httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", timeout=HANG_S) as s,
    ):
        events.extend(parse_sse(list(s.iter_lines())))


def test_graceful_shutdown_finishes_sync_fits_and_leaves_jobs_recoverable(tmp_path):
    env = {"EM_DATA_DIR": str(tmp_path / "data"), "EM_WORKERS": "2"}
    # The grace `make run` and the image give. The sync fit below ends by its own time limit (3 s) on any
    # machine, fast or loaded, so what is checked is that shutdown lets it end, not that it ends quickly.
    with live_server(env, graceful_shutdown_s=10) as first:
        running = httpx.post(f"{first.url}/v1/jobs/gaussian", json=long_gaussian_body(), timeout=HANG_S).json()
        wait_until(lambda: _job(first.url, running["id"])["progress"], timeout_s=HANG_S)
        # A follower keeps a stream open; shutdown must not wait for the hour-long job to end.
        followed: list[dict[str, str]] = []
        follower = threading.Thread(target=_follow, args=(first.url, running["id"], followed), daemon=True)
        follower.start()
        sync_body = long_gaussian_body(n_points=20_000, time_limit_s=3.0)
        answers: list[httpx.Response] = []
        in_flight = threading.Thread(
            target=lambda: answers.append(httpx.post(f"{first.url}/v1/fit/gaussian", json=sync_body, timeout=HANG_S))
        )
        in_flight.start()
        # Both workers busy: the sync fit is running, not merely on its way, when the signal comes.
        wait_until(lambda: _readiness(first.url)["busy_workers"] == 2, timeout_s=HANG_S)
        first.process.send_signal(signal.SIGTERM)
        in_flight.join(HANG_S)
        # uvicorn re-raises the signal it handled
        assert first.process.wait(timeout=HANG_S) in (0, -signal.SIGTERM)
        follower.join(HANG_S)
    assert answers and answers[0].status_code == 200
    assert answers[0].json()["stop_reason"] in ("time_limit", "max_iter")  # it ran to its own end
    with live_server(env) as second:
        after = _job(second.url, running["id"])
        assert after["status"] == "failed" and after["error"]["type"] == "interrupted"
