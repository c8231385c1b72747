"""The HTTP trigger's fast path: ``POST /function/NAME`` answered without Sanic's request cycle.

Why: on the invocation path Sanic's own request handling (a ``Request`` object, routing,
lifecycle signals, a response object and its header checks) cost about 150 us of CPU
per request here, against about 20 us for a bare asyncio protocol with ``httptools``
(measured on this machine with ``loadtests.bench``; see BENCHMARKS.md), and
the server's one core is what limits throughput through the activator.

:class:`InvokeProtocol` is Sanic's own HTTP/1.1 protocol (``app.run(protocol=...)``),
so Sanic still accepts, times out and shuts down every connection. It looks at each
request's head first: a plain ``POST /function/NAME`` (``NAME`` a valid function name,
a ``Content-Length`` within ``REQUEST_MAX_SIZE``, no ``Transfer-Encoding``, ``Expect``
or ``Upgrade``) goes straight to the activator and its answer is written as Sanic would
write it; anything else, from its first byte on, is handed to Sanic for good, which
then answers it and everything after it on that connection exactly as before (its
413, 400, 404 and 405 included).

Invariants:

- A request is taken only whole and at a request boundary: the head parsed by
  ``httptools`` (llhttp, as Sanic), the body exactly ``Content-Length`` bytes; the
  bytes handed to Sanic start at the first byte of a request nothing has consumed.
- One request at a time per connection (HTTP/1.1 answers go in request order):
  pipelined bytes wait in the buffer, with reading paused beyond Sanic's buffer size.
- A closed connection cancels its invocation, as Sanic cancels its handler; a
  connection with an invocation in flight is never closed as idle (at shutdown it
  closes after the answer), and Sanic's keep-alive clock does not run during it: the
  function's ``timeoutSeconds`` bounds it (Sanic's ``RESPONSE_TIMEOUT`` would cut a call
  off at 60 s).
- The answer is the same function of the activator's ``Result`` as the route's (status,
  ``content-type: application/json``, ``content-length``, ``connection``); an
  unexpected exception is logged and answered 500 with the standard error body.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from time import monotonic as current_time
from typing import Any

import httptools
from sanic.helpers import has_message_body
from sanic.server.protocols.http_protocol import HttpProtocol

from allinone.activator.activator import error_body
from allinone.apiserver.routes import INTERNAL_ERROR, invoke_function
from allinone.objects import MAX_NAME, NAME_RE

log = logging.getLogger(__name__)

PREFIX = b"POST /function/"
# A head larger than this (or never ending) is Sanic's to judge; ours are ~100 bytes.
MAX_HEAD = 8192
_HANDED_OVER = (b"transfer-encoding", b"expect", b"upgrade")
_PHRASES = {int(s): s.phrase for s in HTTPStatus}  # HTTPStatus(n) costs an enum lookup


def answer(status: int, body: bytes, keep_alive: bool) -> list[bytes]:
    """What Sanic writes for the invocation route's ``raw(body, status)``: status line,
    headers and body (none for 204 and 304; a pod's 1xx is the server's 500)."""
    if status < 200:
        status, body = 500, error_body(*INTERNAL_ERROR)
    phrase = _PHRASES.get(status, "")
    framing = f"content-length: {len(body)}\r\n" \
        if has_message_body(status) else ""  # type: ignore[no-untyped-call]
    head = (f"HTTP/1.1 {status} {phrase}\r\n{framing}"
            f"connection: {'keep-alive' if keep_alive else 'close'}\r\n"
            "content-type: application/json\r\n\r\n").encode()
    if not framing:
        return [head]
    if len(body) < 65536:
        return [head + body]  # one write: one syscall, one wake-up of the client
    return [head, body]


class _Head:
    """httptools callbacks for one request head: its target and the headers we judge."""

    def __init__(self) -> None:
        self.parser: Any = None
        self.keep_alive = False
        self.url = b""
        self.length = b""
        self.lengths = 0
        self.unusual = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self.lengths += 1
            self.length = value
        elif name in _HANDED_OVER:
            self.unusual = True

    def on_headers_complete(self) -> None:
        # Here, not after feed_data: once a body-less message is complete the parser
        # has moved on to the next one.
        self.keep_alive = bool(self.parser.should_keep_alive())


def parse_head(head: bytes, max_body: int) -> tuple[str, int, bool] | None:
    """``(function, body length, keep-alive)`` when ``head`` (ending in a blank line) is
    a plain invocation this path takes; None when Sanic must judge the request."""
    h = _Head()
    parser = h.parser = httptools.HttpRequestParser(h)
    try:
        parser.feed_data(head)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # Sanic answers both
        return None
    if h.unusual or h.lengths > 1 or parser.get_method() != b"POST" \
            or parser.get_http_version() not in ("1.1", "1.0"):
        return None
    length = 0
    if h.lengths:
        if not h.length.isdigit() or len(h.length) > 12:
            return None
        length = int(h.length)
        if length > max_body:
            return None  # Sanic's 413, with the invocation's message (app.py)
    path = h.url.split(b"?", 1)[0]
    name = path[len(b"/function/"):]
    if not path.startswith(b"/function/") or not 0 < len(name) <= MAX_NAME \
            or not name.isascii() or not NAME_RE.fullmatch(name.decode()):
        return None
    return name.decode(), length, h.keep_alive


class InvokeProtocol(HttpProtocol):
    """Sanic's HTTP/1.1 protocol, with invocations taken before Sanic sees them."""

    # Sanic's protocols have no __dict__
    __slots__ = ("_buf", "_busy", "_close_after", "_fast", "_last")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fast = True  # until the first request that is not a plain invocation
        self._buf = bytearray()
        self._busy: asyncio.Task[None] | None = None
        self._close_after = False
        # The last head parsed and its result: a client repeats the same head (same
        # function, same body size), and parsing it is a pure function of its bytes.
        self._last: tuple[bytes, tuple[str, int, bool] | None] = (b"", None)

    # -- asyncio.Protocol (Sanic's, with the fast path in front) -------------------

    def data_received(self, data: bytes) -> None:
        if not self._fast:
            super().data_received(data)
            return
        self._time = current_time()  # Sanic's keep-alive clock
        if not data:
            self.close()
            return
        self._buf += data
        if self._busy is None:
            self._next()
        elif len(self._buf) > self.app.config.REQUEST_BUFFER_SIZE and self.transport:
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._busy is not None:
            self._busy.cancel()  # the caller is gone, as Sanic cancels its handler
        super().connection_lost(exc)  # type: ignore[no-untyped-call]

    def close_if_idle(self) -> bool:
        if not self._fast:
            return bool(super().close_if_idle())
        if self._busy is None:
            self.close()
            return True
        self._close_after = True  # shutdown: this one answer first
        return False

    def check_timeouts(self) -> None:
        if self._fast and self._busy is not None:
            # Sanic sees its own parser idle; the call is bounded by timeoutSeconds.
            self._time = current_time()
        super().check_timeouts()  # type: ignore[no-untyped-call]

    # -- ours ----------------------------------------------------------------------

    def _next(self) -> None:
        """Start the buffered request if it is whole; hand over if it is not ours."""
        buf = self._buf
        if not buf:
            return
        if buf[:len(PREFIX)] != PREFIX[:len(buf)]:
            self._hand_over()
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._hand_over()
            return
        deps = getattr(self.app.ctx, "deps", None)  # None until the server has started
        head = bytes(buf[:end + 4])
        last_head, parsed = self._last
        if head != last_head:
            parsed = parse_head(head, self.request_max_size)
            self._last = (head, parsed)
        if parsed is None or deps is None:
            self._hand_over()
            return
        name, length, keep_alive = parsed
        total = end + 4 + length
        if len(buf) < total:
            return
        body = bytes(buf[end + 4:total])
        del buf[:total]
        self._busy = self.loop.create_task(self._invoke(deps.activator, name, body, keep_alive))

    def _hand_over(self) -> None:
        """From here on the connection is Sanic's, starting with the buffered bytes."""
        self._fast = False
        data, self._buf = bytes(self._buf), bytearray()
        if self.transport is not None:
            self.transport.resume_reading()
        if data:
            super().data_received(data)

    async def _invoke(self, activator: Any, name: str, body: bytes, keep_alive: bool) -> None:
        try:
            result = await invoke_function(activator, name, body)
            status, payload = result.status, result.body
        except Exception:
            log.exception("unhandled error on POST /function/%s", name)
            status, payload = 500, error_body(*INTERNAL_ERROR)
        if not self._can_write.is_set():
            await self._can_write.wait()  # back-pressure, as Sanic's send
        transport = self.transport
        self._busy = None
        if transport is None or transport.is_closing():
            return
        keep = keep_alive and not self._close_after
        data = answer(status, payload, keep)
        if len(data) == 1:
            transport.write(data[0])
        else:
            transport.writelines(data)
        if not keep:
            self.close()
            return
        self._time = current_time()
        transport.resume_reading()
        self._next()
