"""End-to-end cost over HTTP against scikit-learn in-process, on the same data.

Ours: a real uvicorn process; the client sends JSON (points), the server parses, validates, fits in a
worker process and answers JSON (params, labels). Theirs: ``GaussianMixture.fit`` on the array already
in memory. Both run the same number of iterations (tol 0) from a k-means start.

    .venv/bin/python benchmarks/bench_http.py [--n 200000] [--d 8] [--k 8] [--iterations 100] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import stamp, write_section
from tests.live_server import live_server


def _data(n: int, d: int, k: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (k, d))
    return centres[rng.integers(k, size=n)] + rng.normal(size=(n, d))


def _ours(url: str, X: np.ndarray, k: int, iterations: int) -> tuple[float, float, dict[str, float]]:
    body = {"points": X, "n_components": k, "max_iter": iterations, "tol": 0, "seed": 0, "time_limit_s": 3600}
    started = time.perf_counter()
    payload = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    encoded = time.perf_counter()
    response = httpx.post(
        f"{url}/v1/fit/gaussian", content=payload, headers={"content-type": "application/json"}, timeout=3600
    )
    result = orjson.loads(response.content)
    total = time.perf_counter() - started
    assert response.status_code == 200, response.text[:300]
    assert result["n_iter"] == iterations and len(result["labels"]) == len(X)
    parts = {
        "client encode": encoded - started,
        "server fit (elapsed_ms)": result["elapsed_ms"] / 1000,
        "body MB": len(payload) / 1e6,
        "response MB": len(response.content) / 1e6,
    }
    return total, result["mean_log_likelihood"], parts


def _sklearn(X: np.ndarray, k: int, iterations: int) -> tuple[float, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = GaussianMixture(k, max_iter=iterations, tol=0, random_state=0).fit(X)
        model.predict(X)
    return time.perf_counter() - started, float(model.score(X))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    X = _data(args.n, args.d, args.k)
    env = {"EM_DATA_DIR": tempfile.mkdtemp(), "EM_WORKERS": "1", "EM_LOG_LEVEL": "WARNING"}
    ours, theirs, parts, lls = [], [], {}, {}
    with live_server(env) as server:
        for _ in range(args.repeat):
            seconds, lls["ours"], parts = _ours(server.url, X, args.k, args.iterations)
            ours.append(seconds)
    for _ in range(args.repeat):
        seconds, lls["scikit-learn"] = _sklearn(X, args.k, args.iterations)
        theirs.append(seconds)

    best_ours, best_theirs = min(ours), min(theirs)
    lines = [
        f"## End to end over HTTP: {args.n:,} x {args.d} points, K={args.k}, {args.iterations} iterations (full)",
        "",
        stamp(" ".join(["benchmarks/bench_http.py", *sys.argv[1:]])),
        f"| | wall time (best of {args.repeat}) | mean log-likelihood |",
        "|---|---|---|",
        f"| ours: JSON over HTTP, parse, fit in a worker, JSON back | {best_ours:.2f} s | {lls['ours']:.6f} |",
        f"| scikit-learn `GaussianMixture.fit` + `predict`, in-process | {best_theirs:.2f} s "
        f"| {lls['scikit-learn']:.6f} |",
        "",
        f"Ratio scikit-learn / ours: **{best_theirs / best_ours:.2f}x** "
        f"({'ours faster' if best_ours < best_theirs else 'ours SLOWER'}). "
        "Of our time: " + ", ".join(f"{name} {value:.2f}" for name, value in parts.items()) + ".",
        "Both start from k-means (their own k-means each), so the log-likelihoods may differ slightly.",
    ]
    report = "\n".join(lines)
    print(report)
    write_section("http-e2e", report)


if __name__ == "__main__":
    main()
