"""Regenerates the result examples Swagger UI shows: ``python -m service.families.examples [kind ...]``.

Each family's request examples are fitted as the service fits them; the responses are written to
``service/schemas/result_examples/<kind>.json``. ``tests/families/test_examples.py`` fails when a kept
example no longer matches what the service answers.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import orjson

from service.families.base import Family
from service.schemas.results import RESULT_EXAMPLES_DIR
from service.settings import Settings

EXAMPLE_JOB_ID = "pQ3nS2v9R1qkV0b8dW4e7A"


def fit_example(family: Family[Any, Any, Any], request: dict[str, Any]) -> dict[str, Any]:
    """The result the service gives for ``request`` (as JSON), with a fixed example job id."""
    settings = Settings.model_construct()
    task = family.make_task(family.request.model_validate(request), settings, settings.default_time_limit_s)
    family.check(task)
    result: dict[str, Any] = orjson.loads(family.render(family.solve(task, None), EXAMPLE_JOB_ID))
    return result


def result_examples(family: Family[Any, Any, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: {"summary": f"the result of: {example['summary']}", "value": fit_example(family, example["value"])}
        for name, example in family.examples.items()
    }


def main(kinds: list[str]) -> int:
    """Every family's examples, or only those of ``kinds`` (the others' kept files are left as they are)."""
    from service.families.registry import BY_KIND, FAMILIES

    unknown = [kind for kind in kinds if kind not in BY_KIND]
    if unknown:
        print(f"unknown kinds: {', '.join(unknown)}; known: {', '.join(BY_KIND)}", file=sys.stderr)
        return 2
    RESULT_EXAMPLES_DIR.mkdir(exist_ok=True)
    for family in [BY_KIND[kind] for kind in kinds] or FAMILIES:
        path = RESULT_EXAMPLES_DIR / f"{family.kind}.json"
        path.write_text(json.dumps(result_examples(family), indent=1) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
