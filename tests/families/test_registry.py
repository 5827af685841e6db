"""The registry is the single source of routes, ``Job.kind`` and the result union; workers never load FastAPI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.families.registry import FAMILIES, JOB_KINDS, KINDS
from service.openapi import current_schema


@pytest.fixture(scope="module")
def schema():
    return current_schema()


def test_every_family_has_a_fit_and_a_job_route_with_its_own_schema_and_examples(schema):
    for family in FAMILIES:
        for path in (f"/v1/fit/{family.kind}", f"/v1/jobs/{family.kind}"):
            body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
            assert body["schema"]["$ref"].endswith(f"/{family.request.__name__}")
            assert set(body["examples"]) == set(family.examples)
        ok = schema["paths"][f"/v1/fit/{family.kind}"]["post"]["responses"]["200"]["content"]["application/json"]
        assert ok["schema"]["$ref"].endswith(f"/{family.result.__name__}")
        assert set(ok["examples"]) == set(family.examples), "every request example shows its real result"


def test_job_kind_and_result_union_come_from_the_registry(schema):
    job = schema["components"]["schemas"]["Job"]["properties"]
    # Every family's fits, and model selections (whose candidates are Gaussian fits).
    assert job["kind"]["enum"] == [*KINDS, "gaussian_select"] == list(JOB_KINDS)
    union = job["result"]["anyOf"][0]
    members = sorted(ref["$ref"].rsplit("/", 1)[1] for ref in union["oneOf"])
    assert members == sorted([*(family.result.__name__ for family in FAMILIES), "SelectionResult"])
    assert set(union["discriminator"]["mapping"]) == {*KINDS, "gaussian_selection"}
    listing = schema["paths"]["/v1/jobs"]["get"]["parameters"]
    kind_filter = next(p for p in listing if p["name"] == "kind")
    assert kind_filter["schema"]["anyOf"][0]["enum"] == list(JOB_KINDS)


def test_the_worker_path_and_the_solver_never_import_fastapi():
    # What a worker process imports (forkserver preload, then each job's solve and render) and the solver core.
    code = (
        "import sys, pkgutil, importlib, service.em\n"
        "import service.jobs.worker, service.families.registry\n"
        "for m in pkgutil.iter_modules(service.em.__path__): importlib.import_module('service.em.' + m.name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_solver_core_imports_nothing_of_the_service_above_it():
    code = (
        "import sys, pkgutil, importlib, service.em\n"
        "for m in pkgutil.iter_modules(service.em.__path__): importlib.import_module('service.em.' + m.name)\n"
        "bad = sorted(m for m in sys.modules if m.startswith('service.') and not m.startswith('service.em')\n"
        "             or m.split('.')[0] in ('pydantic', 'fastapi'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
