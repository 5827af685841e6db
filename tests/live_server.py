"""A real uvicorn process on a free loopback port, for tests that must cross a real HTTP stack."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

REPO = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 60.0
HTTP_PROTOCOL = "service.api.server_protocol:HeadLimitedHttpToolsProtocol"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]  # the server's stderr: its log lines

    def log_text(self) -> str:
        """What the server wrote so far. pread: the server writes at the offset this file shares with it."""
        fd = self.log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """The server's JSON log lines so far, parsed (lines that are not JSON objects are left out)."""
        records = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records


@contextmanager
def live_server(
    env: dict[str, str] | None = None,
    port: int | None = None,
    app: str = "service.main:app",
    graceful_shutdown_s: int = 3,
) -> Iterator[LiveServer]:
    """Start ``uvicorn <app>`` (by default the service); yield it; stop it (SIGTERM, then SIGKILL) on exit.

    ``graceful_shutdown_s``: how long uvicorn lets requests in flight (and open streams) run after SIGTERM.
    """
    port = port or free_port()
    # stderr goes to a file. The service logs a line per request: into a pipe that nobody reads, ~270 lines
    # fill it, the next log write blocks the server's event loop, and from then on every request hangs.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                app,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--timeout-graceful-shutdown",
                str(graceful_shutdown_s),
                # As `make run` and the container serve: a request head over the limit is refused as it arrives.
                "--http",
                HTTP_PROTOCOL,
            ],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        server = LiveServer(f"http://127.0.0.1:{port}", process, log)
        try:
            # A bound on a hang, not a speed claim: on a loaded machine start-up alone can take seconds.
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"uvicorn exited: {server.log_text()}")
                try:
                    if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn not healthy in {STARTUP_TIMEOUT_S:.0f} s: {server.log_text()}")
                time.sleep(0.1)
            yield server
        finally:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=graceful_shutdown_s + 15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
