"""Load test: a real server on loopback, a fixed number of concurrent clients, a bounded time.

Phase "mixed": 80% small coin fits (Do & Batzoglou), 20% medium Gaussian fits (2,000 2-D points, K=3).
Phase "D&B only": the coin fit alone, for a throughput figure. Phase "floor": the same D&B load against a
trivial FastAPI app (benchmarks/floor_app.py: parses the same JSON body, answers a constant) served by the
same uvicorn with the same flags, so ours/floor says what the service costs beyond the HTTP stack.
Throughout, a prober in its own process calls /healthz every 50 ms. Reports throughput, latency
percentiles, errors and /healthz latency, and writes its section of RESULTS.md.

    .venv/bin/python benchmarks/load.py [--duration 60] [--dnb-duration 20] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import defaultdict
from multiprocessing import Process, Queue
from pathlib import Path

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import stamp, write_section
from tests.live_server import live_server

DO_BATZOGLOU = {
    "sequences": ["HTTTHHTHTH", "HHHHTHHHHH", "HTHHHHHTHH", "HTHTTTHHTT", "THHHTHHHTH"],
    "init": {"biases": [0.6, 0.5]},
}


def _gaussian_body() -> dict[str, object]:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 5.0]])
    points = centres[rng.integers(3, size=2000)] + rng.normal(size=(2000, 2))
    return {"points": points.round(4).tolist(), "n_components": 3, "seed": 0, "return_labels": False}


class Tally:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.health: list[float] = []


async def _client(http: httpx.AsyncClient, stop_at: float, mix: float, tally: Tally, seed: int) -> None:
    # Bodies are encoded once: the client's CPU is not what is measured (it shares the 2 cores).
    chooser, coins, gaussian = random.Random(seed), orjson.dumps(DO_BATZOGLOU), orjson.dumps(_gaussian_body())
    headers = {"content-type": "application/json"}
    while time.monotonic() < stop_at:
        kind = "coins (D&B)" if chooser.random() < mix else "gaussian 2000x2"
        path, body = ("/v1/fit/coins", coins) if kind.startswith("coins") else ("/v1/fit/gaussian", gaussian)
        began = time.perf_counter()
        try:
            response = await http.post(path, content=body, headers=headers)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        if ok:
            tally.latencies[kind].append(time.perf_counter() - began)
        else:
            tally.errors[kind] += 1


def _probe(url: str, seconds: float, results: Queue[tuple[list[float], int]]) -> None:
    """In its own process, so the load generator's busy event loop does not delay the probe's own timing."""
    latencies, errors = [], 0
    stop_at = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=10) as http:
        while time.monotonic() < stop_at:
            began = time.perf_counter()
            if http.get("/healthz").status_code == 200:
                latencies.append(time.perf_counter() - began)
            else:
                errors += 1
            time.sleep(0.05)
    results.put((latencies, errors))


async def _load(url: str, seconds: float, concurrency: int, mix: float, tally: Tally) -> None:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        stop_at = time.monotonic() + seconds
        await asyncio.gather(*(_client(http, stop_at, mix, tally, seed) for seed in range(concurrency)))


def _phase(url: str, seconds: float, concurrency: int, mix: float) -> Tally:
    tally = Tally()
    results: Queue[tuple[list[float], int]] = Queue()
    prober = Process(target=_probe, args=(url, seconds, results))
    prober.start()
    asyncio.run(_load(url, seconds, concurrency, mix, tally))
    tally.health, tally.errors["healthz"] = results.get(timeout=60)
    prober.join(10)
    return tally


def _ms(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1e3:.1f}" if values else "-"


def _rows(name: str, tally: Tally, seconds: float) -> list[str]:
    everything = [v for values in tally.latencies.values() for v in values]
    rows = [
        f"| {name}: all | {len(everything)} | {len(everything) / seconds:.1f} | {_ms(everything, 50)} "
        f"| {_ms(everything, 99)} | {sum(tally.errors.values())} |"
    ]
    for kind, values in sorted(tally.latencies.items()):
        rows.append(
            f"| {name}: {kind} | {len(values)} | {len(values) / seconds:.1f} | {_ms(values, 50)} "
            f"| {_ms(values, 99)} | {tally.errors.get(kind, 0)} |"
        )
    rows.append(
        f"| {name}: /healthz (every 50 ms) | {len(tally.health)} | - | {_ms(tally.health, 50)} "
        f"| {_ms(tally.health, 99)} | {tally.errors.get('healthz', 0)} |"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the mixed phase")
    parser.add_argument("--dnb-duration", type=float, default=20.0, help="seconds of the D&B-only phase")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    env = {"EM_DATA_DIR": tempfile.mkdtemp(), "EM_WORKERS": "2", "EM_LOG_LEVEL": "WARNING"}
    with live_server(env) as server:
        mixed = _phase(server.url, args.duration, args.concurrency, mix=0.8)
        dnb = _phase(server.url, args.dnb_duration, args.concurrency, mix=1.0)
    with live_server(env, app="benchmarks.floor_app:app") as floor_server:
        floor = _phase(floor_server.url, args.dnb_duration, args.concurrency, mix=1.0)

    dnb_rate = len(dnb.latencies["coins (D&B)"]) / args.dnb_duration
    floor_rate = len(floor.latencies["coins (D&B)"]) / args.dnb_duration
    dnb_p99 = float(np.percentile(dnb.latencies["coins (D&B)"], 99)) * 1e3
    health_p99 = max(float(np.percentile(t.health, 99)) for t in (mixed, dnb)) * 1e3
    errors = sum(sum(t.errors.values()) for t in (mixed, dnb))
    report = "\n".join(
        [
            f"## Load: {args.concurrency} concurrent clients on loopback, 2 fit workers",
            "",
            stamp(" ".join(["benchmarks/load.py", *sys.argv[1:]])),
            f"D&B fit throughput on this machine: **{dnb_rate:.0f} fits/s** (p99 **{dnb_p99:.1f} ms**) against "
            f"**{floor_rate:.0f} requests/s** for the FastAPI floor: ours/floor **{dnb_rate / floor_rate:.2f}**; "
            f"errors: **{errors}**; /healthz p99 under load: **{health_p99:.1f} ms**.",
            "",
            "| phase: requests | completed | per second | p50 ms | p99 ms | errors |",
            "|---|---|---|---|---|---|",
            *_rows(f"mixed {args.duration:.0f} s", mixed, args.duration),
            *_rows(f"D&B only {args.dnb_duration:.0f} s", dnb, args.dnb_duration),
            *_rows(f"floor (FastAPI, constant answer) {args.dnb_duration:.0f} s", floor, args.dnb_duration),
        ]
    )
    print(report)
    write_section("load-test", report)


if __name__ == "__main__":
    main()
