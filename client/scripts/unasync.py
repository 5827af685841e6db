"""Write em_client/_sync.py (EMClient, Follow) from em_client/_async.py (AsyncEMClient, AsyncFollow).

    python client/scripts/unasync.py            # rewrite client/em_client/_sync.py
    python client/scripts/unasync.py --check    # exit 1 if the committed module is stale

The two clients differ only in ``async``/``await`` and the names below, so the synchronous one is the
asynchronous one with those words replaced (as httpcore makes its sync half). tests/client/test_schema_drift.py
fails when _sync.py is not what this script makes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "em_client"
SOURCE = PACKAGE / "_async.py"
TARGET = PACKAGE / "_sync.py"

# Whole words (or the exact phrases) replaced, in this order.
REPLACEMENTS = [
    (r"async def ", "def "),
    (r"async with ", "with "),
    (r"async for ", "for "),
    (r"await ", ""),
    (r"\bAsyncEMClient\b", "EMClient"),
    (r"\bAsyncFollow\b", "Follow"),
    (r"\bAsyncGenerator\b", "Generator"),
    (r"\bAsyncClient\b", "Client"),
    (r"\bAsyncBaseTransport\b", "BaseTransport"),
    (r"\baconnect_sse\b", "connect_sse"),
    (r"\baiter_sse\b", "iter_sse"),
    (r"\basend\b", "send"),
    (r"\baread\b", "read"),
    (r"\baclose\b", "close"),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\b__aiter__\b", "__iter__"),
    (r"\b__anext__\b", "__next__"),
    (r"\basyncio\.sleep\b", "time.sleep"),
    (r"^import asyncio$", "import time"),
    (r'^"""The asynchronous client: .*$', '"""The synchronous client, made from ``_async.py`` by ``unasync.py``.'),
]


def unasync(text: str) -> str:
    for pattern, replacement in REPLACEMENTS:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    return tidy(text)


def tidy(text: str) -> str:
    """Imports sorted again (a renamed import moves) and formatted, as `ruff check` and `ruff format` want it."""
    for command in (["check", "--fix", "--select", "I", "--quiet"], ["format"]):
        text = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "--stdin-filename", str(TARGET), "-"],
            input=text,
            capture_output=True,
            text=True,
            check=True,
            cwd=PACKAGE.parents[1],
        ).stdout
    return text


def main(argv: list[str]) -> int:
    text = unasync(SOURCE.read_text())
    if "--check" in argv:
        if TARGET.read_text() != text:
            print(f"{TARGET} is stale: run python client/scripts/unasync.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
