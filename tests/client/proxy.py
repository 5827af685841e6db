"""A loopback TCP proxy that cuts a job's event stream part-way, as a flaky network or a restarting balancer
would: the first response to a ``GET .../events`` is forwarded up to ``cut_after`` whole events and a few bytes
of the next, then both sockets are closed. Every request head that passes is kept, to read what the client sent
when it came back."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

EVENT_END = b"\n\n"
PARTIAL_BYTES = 7  # of the next event, sent before the cut: a reader must drop an event it got only part of


class CuttingProxy:
    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.heads: list[bytes] = []  # every request head, in order of arrival
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []

    def serve(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:  # closed: the test is over
                return
            thread = threading.Thread(target=self._connection, args=(downstream,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in serve(); close() alone would not
        self._listener.close()

    def _connection(self, downstream: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        with downstream, upstream:
            head = _read_head(downstream)
            if not head:
                return
            with self._lock:
                self.heads.append(head)
                cut = head.split(b"\r\n", 1)[0].endswith(b"/events HTTP/1.1") and self.cuts == 0
                if cut:
                    self.cuts += 1
            upstream.sendall(head)
            forward = threading.Thread(target=_pump, args=(downstream, upstream), daemon=True)
            forward.start()
            if cut:
                self._pump_and_cut(upstream, downstream)
            else:
                _pump(upstream, downstream)

    def _pump_and_cut(self, upstream: socket.socket, downstream: socket.socket) -> None:
        received = bytearray()
        while chunk := upstream.recv(65536):
            start = len(received)
            received += chunk
            position, ends = -1, 0
            while (position := received.find(EVENT_END, position + 1)) != -1:
                ends += 1
                if ends == self.cut_after:
                    downstream.sendall(received[start : position + len(EVENT_END) + PARTIAL_BYTES])
                    with contextlib.suppress(OSError):
                        downstream.shutdown(socket.SHUT_RDWR)
                    return
            downstream.sendall(chunk)


def _read_head(sock: socket.socket) -> bytes:
    """The request head (up to the blank line). The requests through this proxy are GETs: no body follows."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        if not chunk:
            return head
        head += chunk
    return head


def _pump(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            target.sendall(chunk)
        target.shutdown(socket.SHUT_WR)


@contextmanager
def cutting_proxy(upstream_url: str, cut_after: int) -> Iterator[CuttingProxy]:
    proxy = CuttingProxy(int(upstream_url.rsplit(":", 1)[1]), cut_after)
    thread = threading.Thread(target=proxy.serve, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.close()
        thread.join(timeout=10)
