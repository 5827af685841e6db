"""The results Swagger UI shows are what the service answers for the request examples (regenerate with
``python -m service.families.examples`` when a solver change moves them)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from service.families.examples import fit_example
from service.families.registry import FAMILIES

TIMINGS = {"elapsed_ms"}


def _close(kept: Any, fresh: Any, path: str = "") -> None:
    if isinstance(kept, dict):
        assert set(kept) == set(fresh), f"{path}: fields differ"
        for key in kept:
            if key not in TIMINGS:
                _close(kept[key], fresh[key], f"{path}.{key}")
    elif isinstance(kept, list):
        assert len(kept) == len(fresh), f"{path}: lengths differ"
        for i, (a, b) in enumerate(zip(kept, fresh, strict=True)):
            _close(a, b, f"{path}[{i}]")
    elif isinstance(kept, float):
        assert math.isclose(kept, fresh, rel_tol=1e-9, abs_tol=1e-12), f"{path}: kept {kept}, now {fresh}"
    else:
        assert kept == fresh, f"{path}: kept {kept!r}, now {fresh!r}"


@pytest.mark.parametrize(
    ("family", "name"),
    [(family, name) for family in FAMILIES for name in family.examples],
    ids=lambda value: getattr(value, "kind", value),
)
def test_kept_result_examples_match_what_the_service_answers(family, name):
    kept = family.result_examples[name]["value"]
    _close(kept, fit_example(family, family.examples[name]["value"]))


def test_request_examples_run_over_http_and_answer_the_kept_result(client):
    for family in FAMILIES:
        for name, example in family.examples.items():
            response = client.post(f"/v1/fit/{family.kind}", json=example["value"])
            assert response.status_code == 200, (family.kind, name, response.text)
            fresh = response.json()
            kept = family.result_examples[name]["value"]
            _close({**kept, "job_id": None, "model_id": None}, {**fresh, "job_id": None, "model_id": None})
