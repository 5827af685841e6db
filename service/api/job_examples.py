"""Job documents for Swagger UI, made from each family's request examples and their real results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.families.base import Family
from service.families.examples import EXAMPLE_JOB_ID

_CREATED, _STARTED = "2026-11-25T12:00:00.000000Z", "2026-11-25T12:00:00.004000Z"


def _job(family: Family[Any, Any, Any], request: dict[str, Any], **fields: Any) -> dict[str, Any]:
    summary = family.summarise(family.request.model_validate(request))
    document = {
        "id": EXAMPLE_JOB_ID,
        "kind": family.kind,
        "status": "queued",
        "created_at": _CREATED,
        "started_at": None,
        "finished_at": None,
        "progress": None,
        "result": None,
        "error": None,
        "request": summary,
    }
    return document | fields


def queued_job_example(family: Family[Any, Any, Any]) -> dict[str, Any]:
    """What ``POST /v1/jobs/{kind}`` answers for each of the family's request examples."""
    return {
        name: {"summary": example["summary"], "value": _job(family, example["value"])}
        for name, example in family.examples.items()
    }


def finished_job_example(families: Sequence[Family[Any, Any, Any]]) -> dict[str, Any]:
    """A succeeded job per family, carrying the real result of its first request example."""
    examples: dict[str, Any] = {}
    for family in families:
        for name, example in family.examples.items():
            result = family.result_examples.get(name)
            if result is None:
                continue
            value = _job(
                family,
                example["value"],
                status="succeeded",
                started_at=_STARTED,
                finished_at="2026-11-25T12:00:00.009000Z",
                progress={
                    "start": len(result["value"]["restarts"]) - 1,
                    "iteration": result["value"]["restarts"][-1]["n_iter"],
                    "log_likelihood": result["value"]["restarts"][-1]["log_likelihood"],
                },
                result=result["value"] | {"job_id": EXAMPLE_JOB_ID},
            )
            examples[f"{family.kind}_{name}"] = {"summary": f"{family.kind}: {example['summary']}", "value": value}
            break
    return examples
