"""uvicorn's httptools protocol with a bound on the request head, for ``uvicorn --http`` (see the Makefile).

httptools has no limit on a request line or header: uvicorn buffers all of it and hands the app a 16 MB
header as readily as a small one, and a header arriving in many reads is rebuilt by concatenation each time
(quadratic: a 150 MB header took 25 s of CPU). The app's own check (service/api/edge.py, 431 over
``EM_MAX_HEADER_BYTES``) comes only after all that. This protocol counts the bytes of a head still incomplete
and, once they pass ``EM_MAX_HEADER_BYTES`` plus one read of slack, answers 431 and closes the connection.

Bytes are counted per read after the parser has seen them, so a read that also ends the previous request's
body (pipelining) may be counted whole: the slack of one read keeps that from refusing a head within the
limit. Heads between the limit and the limit plus slack reach the app, which refuses them exactly.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import Settings

# The most a single read hands over (uvloop and asyncio read up to 256 KiB at a time).
READ_SLACK = 256 * 1024

logger = logging.getLogger("service.http")


@functools.cache
def _head_limit() -> int:
    return Settings().max_header_bytes + READ_SLACK


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_limit = _head_limit()
        self._in_head = True  # waiting for (the rest of) a request line and headers
        self._head_bytes = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self._head_limit:
                self._refuse_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0

    def _refuse_head(self) -> None:
        self._refused = True
        limit = self._head_limit - READ_SLACK
        logger.warning("request head over %d bytes refused (431) before it was complete", limit)
        detail = f"the request line and headers are over the limit of {limit} bytes (EM_MAX_HEADER_BYTES)"
        body = orjson.dumps({"detail": detail})
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
