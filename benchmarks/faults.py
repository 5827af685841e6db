"""The abuse run, rerun: what an attacker or an unlucky operator does to the service, and what it costs.

Each part starts its own real server on loopback (tests/live_server.py) and writes one row of the table in
its section of RESULTS.md:

* kill -9: a job with a large result (300,000 points, responsibilities returned) is polled until GET shows it
  succeeded, the API is killed at once, restarted on the same data directory, and the job read again.
  Counted: acknowledged results lost (target 0).
* Schemathesis: every operation fuzzed from the committed schema with ``--checks all`` against a server at
  default caps for ``--fuzz-s`` seconds. Counted: 5xx responses (target 0).
* Runaway request: the abuse run's 82 KB body (200 x 64 points, K = 64, trace "params", max_iter 10,000,
  tol 0) that grew a worker to 12 GB. Measured: the answer, its time, the workers' RSS after it.
* Big bodies: three 250 MB bodies sent at once (one without an API key, two over the body limit) while a
  prober calls /healthz every 20 ms. Measured: the answers and /healthz p99 (target < 100 ms).
* Soak: ``--soak-s`` seconds of mixed load (sync fits and jobs, 4 clients); the store's size sampled every
  10 s. Measured: first and last size (target: flat).

    .venv/bin/python benchmarks/faults.py [--rounds 8] [--fuzz-s 300] [--soak-s 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import RESULTS, stamp, write_section
from tests.jobs.helpers import wait_until
from tests.live_server import REPO, live_server

_JSON = {"content-type": "application/json"}
DO_BATZOGLOU = ["HTTTHHTHTH", "HHHHTHHHHH", "HTHHHHHTHH", "HTHTTTHHTT", "THHHTHHHTH"]


def _until(predicate: Any, timeout_s: float = 600.0) -> Any:
    """Poll every 5 ms (the figures' resolution) until ``predicate`` gives something truthy."""
    return wait_until(predicate, timeout_s=timeout_s, interval_s=0.005)


def kill_rounds(rounds: int) -> str:
    points = np.random.default_rng(0).normal(size=(300_000, 2)).round(3).tolist()
    body = orjson.dumps({"points": points, "n_components": 3, "max_iter": 3, "return_responsibilities": True})
    env = {"EM_DATA_DIR": tempfile.mkdtemp(), "EM_WORKERS": "1", "EM_LOG_LEVEL": "WARNING"}
    lost, sizes = 0, []
    for _ in range(rounds):
        with live_server(env) as server, httpx.Client(base_url=server.url, timeout=600) as http:
            job = http.post("/v1/jobs/gaussian", content=body, headers=_JSON).json()
            shown = _until(
                lambda job=job: (j := http.get(f"/v1/jobs/{job['id']}").json())["status"] == "succeeded" and j
            )
            server.process.kill()
            server.process.wait()
        sizes.append(len(orjson.dumps(shown["result"])))
        with live_server(env) as again:
            after = httpx.get(f"{again.url}/v1/jobs/{job['id']}", timeout=600).json()
            lost += after["status"] != "succeeded" or after["result"] != shown["result"]
    return (
        f"| kill -9 right after GET shows a large result succeeded | {rounds} rounds, results of "
        f"{np.mean(sizes) / 1e6:.1f} MB | acknowledged results lost: **{lost}** | 0 |"
    )


def fuzz(seconds: float) -> str:
    env = {"EM_DATA_DIR": tempfile.mkdtemp(), "EM_LOG_LEVEL": "WARNING"}
    with live_server(env) as server:
        run = subprocess.run(
            [str(REPO / ".venv/bin/schemathesis"), "run", str(REPO / "openapi/openapi.json"), "--url", server.url,
             "--checks", "all", "--max-time", str(int(seconds)), "--request-timeout", "120"],
            capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip
        log = server.log_text()
    output = run.stdout + run.stderr
    server_errors = output.count("Server error") + log.count('"status": 500')
    tail = next((line.strip() for line in reversed(output.splitlines()) if "passed" in line or "failed" in line), "")
    Path(tempfile.gettempdir(), "faults-schemathesis.txt").write_text(output)
    return (
        f"| Schemathesis `--checks all`, default caps | {seconds:.0f} s; {tail[:120]} | 5xx responses: "
        f"**{server_errors}** | 0 |"
    )


def _rss_mb(pid: int) -> float:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    total = 0.0
    for child in [str(pid), *children]:
        status = Path(f"/proc/{child}/status")
        if status.exists():
            line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS"))
            total += int(line.split()[1]) / 1024
    return total


def runaway() -> str:
    points = np.random.default_rng(0).normal(size=(200, 64)).round(4).tolist()
    body = orjson.dumps({"points": points, "n_components": 64, "trace": "params", "max_iter": 10_000, "tol": 0})
    env = {"EM_DATA_DIR": tempfile.mkdtemp(), "EM_WORKERS": "2", "EM_LOG_LEVEL": "WARNING"}
    with live_server(env) as server, httpx.Client(base_url=server.url, timeout=600) as http:
        before = _rss_mb(server.process.pid)
        began = time.perf_counter()
        answers = [http.post(path, content=body, headers=_JSON) for path in ("/v1/fit/gaussian", "/v1/jobs/gaussian")]
        took = (time.perf_counter() - began) / 2
        after = _rss_mb(server.process.pid)
    codes = "/".join(str(a.status_code) for a in answers)
    return (
        f"| runaway request ({len(body) / 1e3:.0f} KB: 200 x 64, K = 64, trace params, max_iter 10,000) | "
        f"answered {codes} in {took * 1e3:.0f} ms: {answers[0].json()['detail'][0]['msg'][:90]}… | "
        f"server + workers RSS {before:.0f} → {after:.0f} MB | bounded (was 12 GB) |"
    )


def _chunks(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    block = b"[" + b"1.0," * (size // 4 - 1) + b"1]"
    sent = 0
    while sent < total:
        yield block
        sent += len(block)


def _raw_post(url: str, path: str, headers: dict[str, str], length: int | None, body: Iterator[bytes]) -> int:
    """POST over a plain socket, sending the body until the server answers; the answer's status code.

    An HTTP client library stops at the first failed write (the server closes after refusing), before it reads
    the answer; this reads it."""
    host, port = url.removeprefix("http://").split(":")
    framing = {"content-length": str(length)} if length is not None else {"transfer-encoding": "chunked"}
    head = "".join(f"{k}: {v}\r\n" for k, v in {**_JSON, **headers, **framing, "host": host}.items())
    with socket.create_connection((host, int(port)), timeout=600) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode())
        for chunk in body:
            if select.select([sock], [], [], 0)[0]:
                break  # answered already
            data = chunk if length is not None else b"%x\r\n%b\r\n" % (len(chunk), chunk)
            try:
                sock.sendall(data)
            except OSError:
                break
        answer = sock.recv(64)
    return int(answer.split()[1]) if answer.startswith(b"HTTP/1.1") else -1


def big_bodies() -> str:
    env = {
        "EM_DATA_DIR": tempfile.mkdtemp(),
        "EM_LOG_LEVEL": "WARNING",
        "EM_API_KEYS": "fault-key",
        "EM_MAX_BODY_BYTES": str(64 * 2**20),
    }
    size = 250 * 2**20
    with live_server(env) as server:
        stop = threading.Event()
        latencies: list[float] = []

        def probe() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as http:
                while not stop.is_set():
                    began = time.perf_counter()
                    http.get("/healthz")
                    latencies.append(time.perf_counter() - began)
                    time.sleep(0.02)

        prober = threading.Thread(target=probe)
        prober.start()

        def send(headers: dict[str, str], declared: bool) -> int:
            return _raw_post(server.url, "/v1/fit/gaussian", headers, size if declared else None, _chunks(size))

        def all_three() -> list[int]:
            key = {"authorization": "Bearer fault-key"}
            with ThreadPoolExecutor(3) as pool:
                futures = [pool.submit(send, {}, True), pool.submit(send, key, True), pool.submit(send, key, False)]
                return [future.result() for future in futures]

        began = time.perf_counter()
        codes = all_three()
        took = time.perf_counter() - began
        time.sleep(0.5)
        stop.set()
        prober.join()
    p99 = float(np.percentile(latencies, 99)) * 1e3
    return (
        f"| 3 x 250 MB bodies at once: no key; over the limit declared; over the limit chunked | answers "
        f"{'/'.join(map(str, codes))} in {took:.1f} s | /healthz p99 **{p99:.1f} ms** ({len(latencies)} probes) | "
        "< 100 ms |"
    )


def soak(seconds: float) -> str:
    data_dir = tempfile.mkdtemp()
    # Jobs are kept (retention, 7 days): the cap is what holds their store flat. Sync fits keep their models:
    # the per-owner cap holds that store flat, and both logs must start over under steady commits.
    env = {"EM_DATA_DIR": data_dir, "EM_WORKERS": "2", "EM_LOG_LEVEL": "WARNING", "EM_STORE_MAX_MB": "8"}
    gaussian = orjson.dumps(
        {"points": np.random.default_rng(1).normal(size=(500, 2)).round(3).tolist(), "n_components": 3}
    )
    coins = orjson.dumps({"sequences": DO_BATZOGLOU})
    sizes: list[tuple[float, float, float]] = []
    counts = {"sync": 0, "jobs": 0, "errors": 0}
    with live_server(env) as server:
        stop_at = time.monotonic() + seconds
        db = Path(data_dir, "jobs.sqlite3")

        def disk_mb(pattern: str) -> float:  # the database and its log
            return sum(p.stat().st_size for p in Path(data_dir).glob(pattern)) / 2**20

        def stores_mb(began: float) -> tuple[float, float, float]:
            return time.monotonic() - began, disk_mb("jobs.sqlite3*"), disk_mb("models/models.sqlite3*")

        async def client(seed: int) -> None:
            chooser = random.Random(seed)
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
                while time.monotonic() < stop_at:
                    roll = chooser.random()
                    path, body, kind = (
                        ("/v1/jobs/gaussian", gaussian, "jobs")
                        if roll < 0.1
                        else ("/v1/fit/gaussian", gaussian, "sync")
                        if roll < 0.3
                        else ("/v1/fit/coins", coins, "sync")
                    )
                    response = await http.post(path, content=body, headers=_JSON)
                    counts[kind if response.status_code in (200, 202) else "errors"] += 1

        async def sample() -> None:
            began = time.monotonic()
            while time.monotonic() < stop_at:
                sizes.append(stores_mb(began))
                await asyncio.sleep(10)
            sizes.append(stores_mb(began))

        async def run() -> None:
            await asyncio.gather(sample(), *(client(seed) for seed in range(4)))

        asyncio.run(run())
        assert db.exists()
    first, last = sizes[1] if len(sizes) > 1 else sizes[0], sizes[-1]
    return (
        f"| {seconds / 60:.0f}-minute soak, 4 clients (sync fits 90%, jobs 10%), `EM_STORE_MAX_MB=8` | "
        f"{counts['sync']} sync fits, "
        f"{counts['jobs']} jobs, {counts['errors']} errors | job store {first[1]:.2f} MB after 10 s → {last[1]:.2f} MB "
        f"at the end (was 89 → 473 MB); model store with its log {first[2]:.2f} → {last[2]:.2f} MB | flat |"
    )


PARTS = ("kill", "runaway", "bodies", "fuzz", "soak")


def _kept_rows() -> list[str]:
    """The table rows of the last run (a part rerun alone replaces its own row only)."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    section = text.split("<!-- faults:start -->")[-1].split("<!-- faults:end -->")[0] if "faults:start" in text else ""
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| fault ")]
    return rows if len(rows) == len(PARTS) else ["| (not run) | | | |"] * len(PARTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--fuzz-s", type=float, default=300.0)
    parser.add_argument("--soak-s", type=float, default=300.0)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    args = parser.parse_args()
    runs = {
        "kill": lambda: kill_rounds(args.rounds),
        "runaway": runaway,
        "bodies": big_bodies,
        "fuzz": lambda: fuzz(args.fuzz_s),
        "soak": lambda: soak(args.soak_s),
    }
    rows = _kept_rows()
    for name in args.parts.split(","):
        print(f"faults: {name} …", flush=True)
        rows[PARTS.index(name)] = runs[name]()
        print(rows[PARTS.index(name)], flush=True)
    report = "\n".join(
        [
            "## Faults: the abuse run, rerun",
            "",
            stamp(" ".join(["benchmarks/faults.py", *sys.argv[1:]])),
            "| fault | what was done | what happened | target |",
            "|---|---|---|---|",
            *rows,
        ]
    )
    print(report)
    write_section("faults", report)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
