"""`pip install ./client` into a fresh virtualenv brings the client with httpx and httpx-sse alone (numpy is an
extra), and what it installs imports and works without numpy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Installing from the package registry takes a while on a slow network: a bound on a hang.
INSTALL_TIMEOUT_S = 600

CHECK = """
import sys
import em_client
from em_client import EMClient
assert "numpy" not in sys.modules, "importing the client imported numpy"
try:
    EMClient("http://127.0.0.1:9").upload_array([1.0, 2.0])
except ImportError as missing:
    print(missing)
"""


@pytest.mark.slow
def test_client_installs_alone_with_httpx_and_httpx_sse(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=INSTALL_TIMEOUT_S)
    python = str(venv / "bin" / "python")
    install = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO / "client")]
    subprocess.run(install, check=True, timeout=INSTALL_TIMEOUT_S, cwd=tmp_path)

    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True)
    installed = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert {"em-client", "httpx", "httpx-sse"} <= installed
    assert "numpy" not in installed and "em-service" not in installed and "fastapi" not in installed

    checked = subprocess.run([python, "-c", CHECK], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "pip install 'em-client[numpy]'" in checked.stdout

    # The package says it is typed (PEP 561), so mypy checks callers against its annotations.
    located = subprocess.run(
        [python, "-c", "import em_client, pathlib; print(pathlib.Path(em_client.__file__).parent)"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert (Path(located.stdout.strip()) / "py.typed").exists()
