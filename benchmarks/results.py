"""Writing benchmark results: the machine they ran on, and one script's section of RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
_HEADER = "# Benchmark results\n\nWritten by the scripts in this folder; each owns the section between its markers.\n"


def machine() -> str:
    """One line on where the numbers came from."""
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = found.group(1).strip() if found else cpu
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("numpy", "scipy", "scikit-learn", "fastapi", "orjson")
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.machine()}, "
        f"Python {sys.version.split()[0]}; {versions}"
    )


def stamp(command: str) -> str:
    return f"_Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{command}` on {machine()}._\n"


def write_section(name: str, markdown: str, path: Path = RESULTS) -> None:
    """Replace (or add) the text between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else _HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text.rstrip()}\n\n{block}\n"
    path.write_text(text if text.endswith("\n") else text + "\n")
