"""README's Python client examples run against the live service and print what README shows after them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live_server import live_server

README = Path(__file__).resolve().parents[2] / "README.md"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
HANG_S = 300


def client_examples() -> list[tuple[str, str]]:
    """(code, printed) for each Python block of the "Python client" section that README follows with its output."""
    text = README.read_text()
    section = text.split("\n## Python client\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```\n```\n(.*?)```", section, flags=re.DOTALL)


def same_output(printed: str, expected: str) -> bool:
    """Equal but for the last digits of numbers (BLAS may sum in another order elsewhere)."""
    if NUMBER.sub("#", printed) != NUMBER.sub("#", expected):
        return False
    pairs = zip(NUMBER.findall(printed), NUMBER.findall(expected), strict=True)
    return all(abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b))) for a, b in pairs)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server({"EM_DATA_DIR": str(tmp_path_factory.mktemp("readme") / "data"), "EM_WORKERS": "2"}) as running:
        yield running


def test_readme_has_the_client_examples():
    assert len(client_examples()) >= 5


@pytest.mark.parametrize("index", range(len(client_examples())))
def test_readme_client_example_runs_and_prints_what_readme_shows(server, index, tmp_path):
    code, expected = client_examples()[index]
    code = code.replace("http://localhost:8000", server.url)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert same_output(done.stdout, expected), f"README shows:\n{expected}\nthe example printed:\n{done.stdout}"
