"""Result examples for Swagger UI: real responses to the request examples, kept as JSON beside this module.

``python -m service.families.examples`` regenerates them by running every request example; a test fails
when a kept example no longer matches what the service answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULT_EXAMPLES_DIR = Path(__file__).with_name("result_examples")


def load_result_examples(kind: str) -> dict[str, dict[str, Any]]:
    """``{name: {"summary", "value"}}`` per request example of ``kind`` (empty until generated)."""
    path = RESULT_EXAMPLES_DIR / f"{kind}.json"
    if not path.exists():
        return {}
    examples: dict[str, dict[str, Any]] = json.loads(path.read_text())
    return examples
