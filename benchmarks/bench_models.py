"""Model selection and predictions, end to end over HTTP, against scikit-learn in-process.

Selection: K = 1..8, full covariances, on 100,000 x 2 points (four groups). Ours: upload the points as NPY, then
``POST /v1/fit/gaussian/select`` on the dataset (candidates spread over the fit workers). Theirs: a loop of
``GaussianMixture(K).fit`` + ``bic`` over the same candidates, with the same options (k-means start, one start,
tol 1e-3, at most 100 iterations). Both must choose the same K.

Predict: a K=8 full model on 10^6 x 8 points. Ours: upload the points as NPY, then
``POST /v1/models/{id}/predict`` on the dataset (labels). Theirs: ``predict_proba`` on the array in memory.
The labels must agree.

    .venv/bin/python benchmarks/bench_models.py [--repeat 2]
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
from service.datasets.parse import npy_bytes
from tests.live_server import live_server

TIMEOUT_S = 3600.0
SELECT_KS = list(range(1, 9))
SELECT_OPTIONS = {"tol": 1e-3, "max_iter": 100, "n_init": 1}


def _data(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, (k, d))
    return centres[rng.integers(k, size=n)] + rng.normal(size=(n, d))


def _upload(http: httpx.Client, X: np.ndarray) -> str:
    response = http.post("/v1/datasets", content=npy_bytes(X), headers={"content-type": "application/x-npy"})
    assert response.status_code == 201, response.text[:300]
    return str(response.json()["id"])


def _ours_select(http: httpx.Client, X: np.ndarray, seed: int) -> tuple[float, int, int]:
    started = time.perf_counter()
    dataset = _upload(http, X)
    body = {"dataset": dataset, "n_components": SELECT_KS, "seed": seed, **SELECT_OPTIONS}
    response = http.post("/v1/fit/gaussian/select", json=body)
    assert response.status_code == 200, response.text[:300]
    result = orjson.loads(response.content)
    elapsed = time.perf_counter() - started
    return elapsed, result["best"]["n_components"], sum(c["n_iter"] for c in result["candidates"])


def _sklearn_select(X: np.ndarray, seed: int) -> tuple[float, int, int]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    started = time.perf_counter()
    bics, iterations = {}, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k in SELECT_KS:
            model = GaussianMixture(k, random_state=seed, **SELECT_OPTIONS).fit(X)
            bics[k], iterations = model.bic(X), iterations + model.n_iter_
    return time.perf_counter() - started, min(bics, key=bics.__getitem__), iterations


def _selection(http: httpx.Client, repeat: int) -> list[str]:
    X = _data(100_000, 2, 4)
    ours = min(_ours_select(http, X, seed) for seed in range(repeat))
    theirs = min(_sklearn_select(X, seed) for seed in range(repeat))
    assert ours[1] == theirs[1] == 4, (ours, theirs)
    return [
        "| selection over K = 1..8 full, 100,000 x 2 (NPY upload + select by id) "
        f"| {ours[0]:.2f} s | {theirs[0]:.2f} s | **{theirs[0] / ours[0]:.2f}x** "
        f"| K={ours[1]} / K={theirs[1]} | {ours[2]} / {theirs[2]} |"
    ]


def _ours_predict(http: httpx.Client, X: np.ndarray, model_id: str) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    dataset = _upload(http, X)
    response = http.post(f"/v1/models/{model_id}/predict", json={"dataset": dataset})
    assert response.status_code == 200, response.text[:300]
    labels = np.asarray(orjson.loads(response.content)["labels"])
    return time.perf_counter() - started, labels


def _predict(http: httpx.Client, repeat: int) -> list[str]:
    from sklearn.mixture import GaussianMixture

    X = _data(1_000_000, 8, 8)
    reference = GaussianMixture(8, max_iter=20, random_state=0).fit(X[:100_000])
    params = {
        "weights": reference.weights_,
        "means": reference.means_,
        "covariances": reference.covariances_,
    }
    body = orjson.dumps(
        {"kind": "gaussian", "covariance_type": "full", "params": params}, option=orjson.OPT_SERIALIZE_NUMPY
    )
    imported = http.post("/v1/models", content=body, headers={"content-type": "application/json"})
    assert imported.status_code == 201, imported.text[:300]
    model_id = imported.json()["id"]
    ours = min((_ours_predict(http, X, model_id) for _ in range(repeat)), key=lambda r: r[0])
    theirs = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        proba = reference.predict_proba(X)
        theirs = min(theirs, time.perf_counter() - started)
    agree = float(np.mean(ours[1] == np.argmax(proba, axis=1)))
    return [
        "| predict, K=8 full model, 10^6 x 8 points (NPY upload + predict by id; theirs: `predict_proba`) "
        f"| {ours[0]:.2f} s | {theirs:.2f} s | **{theirs / ours[0]:.2f}x** | labels agree: {agree:.4%} | - |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    env = {"EM_DATA_DIR": tempfile.mkdtemp(), "EM_LOG_LEVEL": "WARNING"}
    with live_server(env) as server, httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as http:
        rows = _selection(http, args.repeat) + _predict(http, args.repeat)
    report = "\n".join(
        [
            "## Model selection and predictions: end to end against scikit-learn",
            "",
            stamp(" ".join(["benchmarks/bench_models.py", *sys.argv[1:]])),
            f"Wall time, best of {args.repeat}, against a real uvicorn process with its default workers (one per "
            "core). Selection: the same candidates and options on both sides (k-means start, one start, tol 1e-3, "
            "at most 100 iterations); scikit-learn loops over K in-process. Predict: scikit-learn's `predict_proba` "
            "on the array already in memory.",
            "",
            "| what | ours | scikit-learn | speed-up | chosen / agreement | EM iterations (ours / theirs) |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(report)
    write_section("models-e2e", report)


if __name__ == "__main__":
    main()
