"""Bad input gets a 422 that names the problem; never a 5xx, never a NaN echoed back."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.conftest import DO_BATZOGLOU

GAUSSIAN = "/v1/fit/gaussian"
COINS = "/v1/fit/coins"

# (path, raw JSON body, expected loc, words the message must contain)
CASES = [
    (GAUSSIAN, '{"points": [1, 2, NaN, 4]}', ["body", "points"], "points[2] is not a finite number"),
    (GAUSSIAN, '{"points": [[1, 2], [3, Infinity]]}', ["body", "points"], "points[1][1] is not a finite number"),
    (GAUSSIAN, '{"points": [[1, 2], [3]]}', ["body", "points"], "points[1] has 1"),
    (GAUSSIAN, '{"points": [1, [2]]}', ["body", "points"], "mix numbers and lists"),
    (GAUSSIAN, '{"points": [[[1]], [[2]]]}', ["body", "points"], "3 levels of nesting"),
    (GAUSSIAN, '{"points": [1, "a", 3]}', ["body", "points"], "points[1] is 'a', not a number"),
    (GAUSSIAN, '{"points": [1, null, 3]}', ["body", "points"], "points[1] is null"),
    (GAUSSIAN, '{"points": []}', ["body", "points"], "empty list"),
    (GAUSSIAN, '{"points": [[], []]}', ["body", "points"], "at least one number"),
    (GAUSSIAN, '{"points": "1,2,3"}', ["body", "points"], "got str"),
    (GAUSSIAN, '{"points": [1, 1, 1, 1], "n_components": 2}', ["body", "n_components"], "1 distinct"),
    (GAUSSIAN, '{"points": [1, 2]}'.replace("]", '], "n_components": 3'), ["body", "n_components"], "only 2"),
    (
        GAUSSIAN,
        '{"points": [[0,0],[1,1],[2,2]], "init": {"means": [[1,2,3],[4,5,6]]}}',
        ["body", "init", "means"],
        "shape (2, 3), expected (2, 2)",
    ),
    (
        GAUSSIAN,
        '{"points": [[0,0],[1,1],[2,2]], "n_init": 2, "init": {"means": [[0,0],[2,2]]}}',
        ["body"],
        "n_init must be 1",
    ),
    (GAUSSIAN, '{"points": [1, 2, 3], "covariance_type": "banana"}', ["body", "covariance_type"], "'full'"),
    (GAUSSIAN, '{"points": [1, 2, 3], "reg_covar": -1}', ["body", "reg_covar"], "greater than or equal to 0"),
    (GAUSSIAN, '{"points": [1, 2, 3], "max_iter": 0}', ["body", "max_iter"], "greater than or equal to 1"),
    (GAUSSIAN, '{"points": [1, 2, 3], "tol": NaN}', ["body", "tol"], "finite"),
    (GAUSSIAN, '{"points": [1, 2, 3], "max_iter": 1000000}', ["body", "max_iter"], "at most 10000"),
    (GAUSSIAN, '{"points": [1, 2, 3], "time_limit_s": 0}', ["body", "time_limit_s"], "greater than 0"),
    (GAUSSIAN, '{"points": [1, 2, 3], "n_componets": 2}', ["body", "n_componets"], "Extra inputs"),
    (
        GAUSSIAN,
        '{"points": [1, 2, 3], "init": {"covariances": [-1, 1]}}',
        ["body", "init", "covariances"],
        "not positive definite",
    ),
    (GAUSSIAN, '{"points": [1, 2', ["body", 16], "not valid JSON"),
    (GAUSSIAN, "not json", ["body", 0], "not valid JSON"),
    (GAUSSIAN, '{"points": ' + "[" * 5000 + "]" * 5000 + "}", ["body", 0], "nests arrays or objects too deeply"),
    (GAUSSIAN, '{"points": [1e200, 2e200, 3e200, -1e200]}', ["body", "points"], "within 1e+150 of their mean"),
    (GAUSSIAN, '{"points": [1e155, 2e155, 3e155, -1e155, 5e154]}', ["body", "points"], "rescale the data"),
    (GAUSSIAN, '{"points": [[1e308, 0], [-1e308, 1], [0, 2]]}', ["body", "points"], "within 1e+150"),
    (GAUSSIAN, '{"points": [1, 2, 3, 10], "init": {"means": [1e308, -1e308]}}', ["body", "init", "means"], "within"),
    (
        GAUSSIAN,
        '{"points": [1e16, 2e16, 3e16, -1e16], "dtype": "float32"}',
        ["body", "points"],
        "finite in float32",
    ),
    (GAUSSIAN, "[1, 2, 3]", ["body"], "valid dictionary"),
    (COINS, b"\xff\xfeO\x90", ["body", 0], "not UTF-8"),
    (COINS, '{"sequences": ["HTH", "HXT"]}', ["body", "sequences", 1], "'X' at position 1"),
    (COINS, '{"sequences": ["HT", "  "]}', ["body", "sequences", 1], "no flips"),
    (COINS, '{"sequences": ["HT"], "counts": [{"heads": 1, "tails": 0}]}', ["body"], "exactly one of"),
    (COINS, "{}", ["body"], "exactly one of"),
    (COINS, '{"counts": [{"heads": 0, "tails": 0}]}', ["body", "counts", 0], "at least one flip"),
    (COINS, '{"counts": [{"heads": -1, "tails": 2}]}', ["body", "counts", 0, "heads"], "greater than or equal"),
    (COINS, '{"sequences": ["HT", "TH", "HH"], "init": {"biases": [0.5]}}', ["body"], "expected n_coins = 2"),
    (
        COINS,
        '{"sequences": ["HT", "TH"], "init": {"biases": [0.5, 1.0]}}',
        ["body", "init", "biases", 1],
        "less than 1",
    ),
    (
        COINS,
        '{"sequences": ["HT", "TH"], "init": {"biases": [0.4, 0.6], "weights": [0.7, 0.7]}}',
        ["body", "init", "weights"],
        "sum to 1",
    ),
    (COINS, '{"sequences": ["HT", "TH"], "n_init": 3, "init": {"biases": [0.4, 0.6]}}', ["body"], "n_init must be 1"),
    (COINS, '{"sequences": ["HT"], "n_coins": 2}', ["body", "n_coins"], "only 1 experiments"),
    (COINS, '{"sequences": ["HT", "TH"], "seed": -1}', ["body", "seed"], "greater than or equal to 0"),
]


@pytest.mark.parametrize("path,raw,loc,words", CASES)
def test_bad_input_is_a_422_naming_the_problem(client, path, raw, loc, words):
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(error["loc"] == loc and words in error["msg"] for error in detail), detail
    assert all(set(error) == {"loc", "msg", "type"} for error in detail)
    assert "NaN" not in response.text and "Infinity" not in response.text


def test_limits_come_from_settings(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        max_points=10,
        max_components=3,
        max_features=4,
        max_cells=40,
        n_init_cap=2,
        time_limit_cap_s=5,
    )
    with TestClient(create_app(settings)) as client:
        cases = [
            ({"points": list(range(11))}, "points", "at most 10"),
            ({"points": [1, 2, 3, 4], "n_components": 4}, "n_components", "at most 3"),
            ({"points": [[1, 2, 3, 4, 5], [2, 3, 4, 5, 6]]}, "points", "5 dimensions; this server allows at most 4"),
            ({"points": [[i, i, i, i] for i in range(10)], "n_components": 2}, "points", "is 80; this server"),
            ({"points": [1, 2, 3], "n_init": 3}, "n_init", "at most 2"),
            ({"points": [1, 2, 3], "time_limit_s": 6}, "time_limit_s", "at most 5"),
        ]
        for body, field, words in cases:
            response = client.post(GAUSSIAN, json=body)
            assert response.status_code == 422
            assert response.json()["detail"][0]["loc"] == ["body", field]
            assert words in response.json()["detail"][0]["msg"]
        response = client.post(COINS, json={"sequences": ["H"] * 11, "n_coins": 1})
        assert response.status_code == 422 and "at most 10" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_body_that_is_not_json_is_a_415_saying_what_to_send(client, content_type):
    # plain `curl -d` sends application/x-www-form-urlencoded
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.post(COINS, content=json.dumps({"sequences": DO_BATZOGLOU}), headers=headers)
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["detail"]
    assert (content_type or "no Content-Type") in response.json()["detail"]


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "application/x+json"])
def test_json_content_types_are_accepted(client, content_type):
    headers = {"content-type": content_type}
    response = client.post(COINS, content=json.dumps({"sequences": DO_BATZOGLOU}), headers=headers)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (COINS, {"sequences": DO_BATZOGLOU, "n_coins": True}, "n_coins"),
        (COINS, {"sequences": DO_BATZOGLOU, "fit_weights": 1}, "fit_weights"),
        (COINS, {"sequences": DO_BATZOGLOU, "max_iter": True}, "max_iter"),
        (COINS, {"counts": [{"heads": True, "tails": 3}]}, "counts"),
        ("/v1/fit/gaussian", {"points": [0.0, 1.0, 5.0], "n_components": True}, "n_components"),
        ("/v1/fit/gaussian", {"points": [0.0, 1.0, 5.0], "return_responsibilities": 0}, "return_responsibilities"),
        ("/v1/fit/gaussian", {"points": [0.0, 1.0, 5.0], "return_labels": "yes"}, "return_labels"),
    ],
)
def test_booleans_and_numbers_are_never_taken_for_each_other(client, path, body, field):
    response = client.post(path, json=body)
    assert response.status_code == 422
    assert field in response.json()["detail"][0]["loc"]


def test_unknown_route_and_method(client):
    assert client.get("/v1/fit/coins").status_code == 405
    assert client.get("/v1/nothing").status_code == 404
