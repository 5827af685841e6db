"""Writes the app's OpenAPI schema to a file: ``python -m service.openapi openapi/openapi.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from service.main import create_app
from service.settings import Settings


def current_schema() -> dict[str, Any]:
    """The schema as the app serves it, built with default settings (independent of the environment)."""
    return create_app(Settings.model_construct()).openapi()


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    target = Path(argv[1] if len(argv) > 1 else "openapi/openapi.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(current_schema()))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
