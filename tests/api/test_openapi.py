"""The committed schema is the one the app serves; regenerate with `make openapi`."""

from __future__ import annotations

import json
from pathlib import Path

from service.openapi import current_schema, render

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def test_committed_openapi_is_up_to_date():
    assert COMMITTED.read_text() == render(current_schema()), "openapi/openapi.json is stale: run `make openapi`"


def test_served_schema_matches_and_has_worked_examples(client):
    served = client.get("/openapi.json").json()
    assert served == json.loads(COMMITTED.read_text())
    coins = served["paths"]["/v1/fit/coins"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    gaussian = served["paths"]["/v1/fit/gaussian"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert "do_batzoglou" in coins and {"two_groups_1d", "three_clusters_2d"} <= set(gaussian)


def test_docs_pages_are_served_without_a_cdn(client):
    for page in ("/docs", "/redoc"):
        response = client.get(page)
        assert response.status_code == 200
        assert "cdn." not in response.text  # behind a firewall a CDN script leaves a blank page
    swagger = client.get("/docs").text
    bundle = swagger.split('src="')[1].split('"')[0]
    assert client.get(bundle).status_code == 200
