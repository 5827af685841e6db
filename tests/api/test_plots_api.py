"""GET /v1/jobs/{id}/plot and /v1/models/{id}/plot over HTTP: content types, negotiation, views, errors, tenancy."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.main import create_app
from service.settings import Settings
from tests.conftest import DO_BATZOGLOU
from tests.jobs.helpers import finished_job, wait_until
from tests.plots.helpers import not_blank, svg_root

TWO_GROUPS = [-2.0, -1.85, -2.14, -2.45, -2.23, -2.5, -1.97, 3.7, 1.66, 2.54, 1.1, 1.71, 1.16, 2.76]


def _succeeded(client, path, body, headers=None):
    job = client.post(path, json=body, headers=headers).json()
    ended = wait_until(lambda: finished_job(client, job["id"]) if headers is None else _ended(client, job, headers))
    assert ended["status"] == "succeeded", ended
    return ended


def _ended(client, job, headers):
    record = client.get(f"/v1/jobs/{job['id']}", headers=headers).json()
    return record if record["status"] in ("succeeded", "failed", "cancelled") else None


def _png(response, size=(800, 600)):
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG" and image.size == size and not_blank(image)
    return image


def test_a_jobs_picture_is_a_png_by_default_an_svg_by_accept_or_format_and_sized_as_asked(client):
    job = _succeeded(client, "/v1/jobs/gaussian", {"points": TWO_GROUPS, "seed": 0})
    path = f"/v1/jobs/{job['id']}/plot"
    _png(client.get(path))
    _png(client.get(path, headers={"Accept": "image/svg+xml;q=0.5, image/png"}))
    _png(client.get(path, params={"width": 300, "height": 200}), size=(300, 200))
    for response in (
        client.get(path, params={"format": "svg"}),
        client.get(path, headers={"Accept": "image/svg+xml"}),
        client.get(path, headers={"Accept": "image/png;q=0.4, image/svg+xml;q=0.9"}),
    ):
        assert response.status_code == 200 and response.headers["content-type"] == "image/svg+xml"
        assert svg_root(response.content).get("width") == "800px"
    assert b"data (14 points)" in client.get(path, params={"format": "svg"}).content  # the points were kept


def test_trace_and_animation_views(client):
    body = {"sequences": DO_BATZOGLOU, "n_init": 3, "seed": 1, "trace": "params"}
    job = _succeeded(client, "/v1/jobs/coins", body)
    path = f"/v1/jobs/{job['id']}/plot"
    _png(client.get(path, params={"view": "trace"}))
    response = client.get(path, params={"view": "animation", "width": 320, "height": 240})
    assert response.status_code == 200 and response.headers["content-type"] == "image/gif"
    gif = Image.open(io.BytesIO(response.content))
    assert gif.size == (320, 240) and gif.n_frames == len(job["result"]["trace"])


def test_an_animation_needs_a_params_trace_and_is_always_a_gif(client):
    job = _succeeded(client, "/v1/jobs/coins", {"sequences": DO_BATZOGLOU})
    path = f"/v1/jobs/{job['id']}/plot"
    refused = client.get(path, params={"view": "animation"})
    assert refused.status_code == 422
    problem = refused.json()["detail"][0]
    assert problem["loc"] == ["query", "view"] and 'trace: "params"' in problem["msg"]
    assert client.get(path, params={"view": "animation", "format": "svg"}).json()["detail"][0]["loc"] == [
        "query",
        "format",
    ]


@pytest.mark.parametrize(
    "params",
    [{"width": 99}, {"height": 2401}, {"view": "animation", "width": 1001}, {"view": "pie"}, {"format": "jpeg"}],
)
def test_sizes_views_and_formats_out_of_range_are_422_naming_the_parameter(client, params):
    job = _succeeded(client, "/v1/jobs/coins", {"sequences": DO_BATZOGLOU, "trace": "params"})
    response = client.get(f"/v1/jobs/{job['id']}/plot", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "query"


def test_a_job_that_has_not_succeeded_is_a_409_and_an_unknown_id_a_404(client):
    body = {"sequences": DO_BATZOGLOU, "max_iter": 10_000, "tol": 0, "n_init": 100}
    job = client.post("/v1/jobs/coins", json=body).json()
    running = client.get(f"/v1/jobs/{job['id']}/plot")
    assert running.status_code == 409 and "once it has succeeded" in running.json()["detail"]
    client.delete(f"/v1/jobs/{job['id']}")
    wait_until(lambda: finished_job(client, job["id"]))
    cancelled = client.get(f"/v1/jobs/{job['id']}/plot")
    assert cancelled.status_code == 409 and "cancelled" in cancelled.json()["detail"]
    assert client.get("/v1/jobs/no-such-job/plot").status_code == 404
    assert client.get("/v1/models/no-such-model/plot").status_code == 404


def test_a_kept_model_without_a_job_shows_the_model_alone_and_has_no_trace(client):
    fit = client.post("/v1/fit/gaussian", json={"points": TWO_GROUPS, "seed": 0}).json()
    path = f"/v1/models/{fit['model_id']}/plot"
    _png(client.get(path))
    assert b"the model alone" in client.get(path, params={"format": "svg"}).content
    refused = client.get(path, params={"view": "trace"})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["query", "view"]
    imported = client.post(
        "/v1/models", json={"kind": "coins", "params": {"biases": [0.8, 0.5], "weights": [0.5, 0.5]}}
    ).json()
    _png(client.get(f"/v1/models/{imported['id']}/plot"))


def test_a_jobs_kept_model_is_drawn_as_the_job_with_its_data_and_trace(client):
    job = _succeeded(client, "/v1/jobs/gaussian", {"points": TWO_GROUPS, "seed": 0})
    path = f"/v1/models/{job['result']['model_id']}/plot"
    svg = client.get(path, params={"format": "svg"}).content
    assert b"kept model" in svg and b"data (14 points)" in svg
    _png(client.get(path, params={"view": "trace"}))


def test_a_fit_of_a_dataset_draws_its_points(client):
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(6, 1, (300, 2))]).round(4).tolist()
    dataset = client.post("/v1/datasets", json={"points": points}).json()
    job = _succeeded(client, "/v1/jobs/gaussian", {"dataset": dataset["id"], "seed": 0})
    svg = client.get(f"/v1/jobs/{job['id']}/plot", params={"format": "svg"}).content
    assert b"1\xcf\x83 ellipse" in svg and b"showing" not in svg  # 600 points: all drawn


def test_a_selection_is_drawn_as_its_criterion_against_k(client):
    body = {"points": TWO_GROUPS, "n_components": [1, 2, 3], "covariance_types": ["full", "spherical"], "seed": 0}
    job = _succeeded(client, "/v1/jobs/gaussian/select", body)
    path = f"/v1/jobs/{job['id']}/plot"
    _png(client.get(path))
    assert b"BIC (lower is better)" in client.get(path, params={"format": "svg"}).content
    assert client.get(path, params={"view": "trace"}).status_code == 422
    candidate = job["result"]["candidates"][0]["model_id"]
    _png(client.get(f"/v1/models/{candidate}/plot"))


def test_another_tenants_job_and_model_pictures_are_404(tmp_path):
    settings = Settings(data_dir=tmp_path, api_keys=["key-a", "key-b"])
    a, b = ({"Authorization": f"Bearer {key}"} for key in ("key-a", "key-b"))
    with TestClient(create_app(settings)) as keyed:
        job = _succeeded(keyed, "/v1/jobs/coins", {"sequences": DO_BATZOGLOU}, headers=a)
        for path in (f"/v1/jobs/{job['id']}/plot", f"/v1/models/{job['id']}/plot"):
            assert keyed.get(path, headers=a).status_code == 200
            assert keyed.get(path, headers=b).status_code == 404
            assert keyed.get(path).status_code == 401


IMPORTS = {
    "gaussian_diag_3d": {
        "kind": "gaussian",
        "covariance_type": "diag",
        "params": {"weights": [0.3, 0.7], "means": [[0, 0, 0], [4, 1, 2]], "covariances": [[1, 2, 0.5], [0.3, 1, 1]]},
    },
    "gaussian_spherical_1d": {
        "kind": "gaussian",
        "covariance_type": "spherical",
        "params": {"weights": [0.5, 0.5], "means": [-1.0, 2.0], "covariances": [0.5, 1.5]},
    },
    "alleles": {
        "kind": "alleles",
        "alleles": ["A", "B", "O"],
        "phenotypes": [
            {"name": "A", "genotypes": [["A", "A"], ["A", "O"]]},
            {"name": "B", "genotypes": [["B", "B"], ["B", "O"]]},
            {"name": "AB", "genotypes": [["A", "B"]]},
            {"name": "O", "genotypes": [["O", "O"]]},
        ],
        "params": {"frequencies": [0.3, 0.1, 0.6]},
    },
    "abundances": {
        "kind": "abundances",
        "params": {"targets": ["a", "b"], "lengths": [100.0, 300.0], "rho": [0.4, 0.6]},
    },
    "hmm_gaussian": {
        "kind": "hmm",
        "emission": "gaussian",
        "covariance_type": "diag",
        "params": {"start": [0.5, 0.5], "transitions": [[0.9, 0.1], [0.2, 0.8]], "means": [[0.0], [3.0]],
                   "covariances": [[1.0], [0.5]]},
    },
}  # fmt: skip


@pytest.mark.parametrize("name", IMPORTS)
def test_every_kind_of_imported_model_is_drawn(client, name):
    created = client.post("/v1/models", json=IMPORTS[name])
    assert created.status_code == 201, created.text
    _png(client.get(f"/v1/models/{created.json()['id']}/plot", params={"width": 500, "height": 400}), (500, 400))
