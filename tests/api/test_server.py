"""The same contract through a real uvicorn process and a real HTTP client."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.conftest import DO_BATZOGLOU
from tests.live_server import live_server


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    with live_server({"EM_DATA_DIR": str(tmp_path_factory.mktemp("data"))}) as server:
        yield server.url


def test_do_batzoglou_over_real_http(base_url):
    body = {"sequences": DO_BATZOGLOU, "n_coins": 2, "init": {"biases": [0.6, 0.5]}, "tol": 1e-12, "max_iter": 500}
    response = httpx.post(f"{base_url}/v1/fit/coins", json=body, timeout=30)
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["params"]["biases"], [0.7968, 0.5196], atol=5e-5)


def test_nan_body_over_real_http_is_a_422(base_url):
    response = httpx.post(
        f"{base_url}/v1/fit/gaussian", content=b'{"points": [1, NaN]}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/json")


def test_gaussian_over_real_http(base_url):
    rng = np.random.default_rng(1)
    points = np.concatenate([rng.normal(-5, 1, 200), rng.normal(5, 1, 200)]).tolist()
    response = httpx.post(f"{base_url}/v1/fit/gaussian", json={"points": points, "seed": 0}, timeout=30)
    assert response.status_code == 200
    np.testing.assert_allclose(np.ravel(response.json()["params"]["means"]), [-5, 5], atol=0.3)
