"""The HTTP edge against a real uvicorn: refusals from the request head alone (401, 413, 431), the server's
own bound on a request head, and followers that leave an event stream.

Timeouts here bound a hang; none is a claim about speed. What a test asserts is a law: an answer that
arrives while the client has not sent the body was given without reading it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.jobs.helpers import long_gaussian_body, wait_until
from tests.live_server import LiveServer, live_server

KEY = "edge-key"
HANG_S = 60.0


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("edge") / "data"
    with live_server({"EM_DATA_DIR": str(data), "EM_API_KEYS": KEY, "EM_WORKERS": "1"}) as server:
        yield server


def _exchange(url: str, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send a raw request (``body`` from a thread, so an early answer is read even while it is sent) and
    read the answer to its end: status, headers, body. Connection errors after the answer are ignored."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=HANG_S) as sock:
        sock.sendall(head)

        def send_body() -> None:
            # The server may answer and close before taking all of it: that is the point.
            with contextlib.suppress(OSError):
                sock.sendall(body)

        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        received = b""
        try:
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
            raw_head, _, rest = received.partition(b"\r\n\r\n")
            lines = raw_head.decode("latin-1").split("\r\n")
            headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", "0"))
            while len(rest) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
        except OSError:
            if not received:
                raise
    return int(lines[0].split()[1]), headers, rest


def _post_head(path: str, content_length: int, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: edge", "Content-Type: application/json", *extra]
    return ("\r\n".join([*lines, f"Content-Length: {content_length}"]) + "\r\n\r\n").encode()


def test_a_missing_key_is_401_before_the_body_is_sent(keyed_server):
    # 200 MB declared (under the 256 MiB limit), not a byte of it sent: the 401 can only come from the head.
    status, headers, body = _exchange(keyed_server.url, _post_head("/v1/fit/gaussian", 200_000_000))
    assert status == 401
    assert headers["www-authenticate"] == "Bearer"
    assert "API key" in json.loads(body)["detail"]
    # A client that waits for "100 Continue" before sending gets the 401 instead (no 100 first).
    status, _, body = _exchange(
        keyed_server.url, _post_head("/v1/jobs/coins", 200_000_000, "X-API-Key: wrong", "Expect: 100-continue")
    )
    assert status == 401 and "API key" in json.loads(body)["detail"]


def test_a_declared_body_over_the_limit_is_a_json_413_before_it_is_sent(keyed_server):
    head = _post_head("/v1/fit/gaussian", 300 * 2**20, f"Authorization: Bearer {KEY}")
    status, headers, body = _exchange(keyed_server.url, head)
    assert status == 413 and headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    detail = json.loads(body)["detail"]
    assert "268435456 bytes" in detail and "256 MiB" in detail and "EM_MAX_BODY_BYTES" in detail


def test_too_many_or_too_large_headers_are_431(keyed_server):
    many = "".join(f"X-Filler-{i}: {i}\r\n" for i in range(150))
    status, _, body = _exchange(keyed_server.url, f"GET /healthz HTTP/1.1\r\nHost: edge\r\n{many}\r\n".encode())
    assert status == 431 and "EM_MAX_HEADERS" in json.loads(body)["detail"]
    # 100 KiB in one header: httptools hands it to the app, which refuses it.
    big = "a" * 100 * 1024
    status, _, body = _exchange(
        keyed_server.url, f"GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Big: {big}\r\n\r\n".encode()
    )
    assert status == 431 and "EM_MAX_HEADER_BYTES" in json.loads(body)["detail"]
    assert httpx.get(f"{keyed_server.url}/healthz", timeout=HANG_S).status_code == 200


def test_the_head_limited_protocol_refuses_a_huge_header_while_it_arrives(tmp_path):
    # live_server serves with the head-limited protocol, as `make run` and the container do.
    with live_server({"EM_DATA_DIR": str(tmp_path / "data")}) as server:
        # 16 MB of one header (stock httptools buffers it all, then answers 200), in the request's head: the
        # server answers once the head passes the limit plus one read, while the rest is still being sent.
        head = b"GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Big: "
        status, headers, body = _exchange(server.url, head, b"a" * 16 * 2**20 + b"\r\n\r\n")
        assert status == 431 and headers["connection"] == "close"
        detail = json.loads(body)["detail"]  # the server's words, not the app's ("the request headers are N bytes")
        assert "request line and headers" in detail and "EM_MAX_HEADER_BYTES" in detail
        # Ordinary requests, and keep-alive, are untouched.
        with httpx.Client(base_url=server.url, timeout=HANG_S) as client:
            for _ in range(3):
                assert client.get("/healthz").status_code == 200
            assert client.post("/v1/fit/coins", json={"sequences": ["HTHT", "HHHT"]}).status_code == 200


def test_followers_that_leave_an_event_stream_are_not_logged_as_errors(keyed_server):
    auth = {"X-API-Key": KEY}
    job = httpx.post(f"{keyed_server.url}/v1/jobs/gaussian", json=long_gaussian_body(), headers=auth, timeout=HANG_S)
    assert job.status_code == 202
    job_id = job.json()["id"]
    host, port = keyed_server.url.removeprefix("http://").split(":")
    try:
        # Each follower reads a few events and hangs up mid-stream. Before the fix about every other one
        # was logged twice as an error (the app's "unhandled error" and uvicorn's "Exception in ASGI app").
        for _ in range(20):
            with socket.create_connection((host, int(port)), timeout=HANG_S) as sock:
                sock.sendall(
                    f"GET /v1/jobs/{job_id}/events HTTP/1.1\r\nHost: edge\r\nX-API-Key: {KEY}\r\n\r\n".encode()
                )
                received = b""
                while received.count(b"\n\n") < 4:
                    chunk = sock.recv(65536)
                    assert chunk, "the stream ended early"
                    received += chunk
        # The server notices a hang-up on its next write, then logs the request (and, before the fix, the
        # error): wait for the 20 request lines, then one more round trip.
        line = f"GET /v1/jobs/{job_id}/events 200"
        wait_until(
            lambda: sum(record.get("message") == line for record in keyed_server.log_records()) >= 20,
            timeout_s=HANG_S,
        )
        assert httpx.get(f"{keyed_server.url}/v1/jobs/{job_id}", headers=auth, timeout=HANG_S).status_code == 200
    finally:
        httpx.delete(f"{keyed_server.url}/v1/jobs/{job_id}", headers=auth, timeout=HANG_S)
    log = keyed_server.log_text()
    assert "BrokenResourceError" not in log
    assert not [record for record in keyed_server.log_records() if record.get("level") == "ERROR"]
