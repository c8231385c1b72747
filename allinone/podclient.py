"""HTTP/1.1 to one pod over its Unix socket: the data plane's client and the probe.

Why not aiohttp here: on the request path aiohttp's client was about 45 % of the
activator's event loop (URL handling, header multidicts, tracing hooks, a
``ClientResponse`` object per call). The platform speaks to its own shim only, which
always answers with ``Content-Length`` and keep-alive, so this client is a pool of
asyncio protocol connections that write each request in one ``write`` and parse the
answer with ``httptools`` (the C parser Sanic already uses).

Invariants:

- One :class:`PodClient` per pod, created when the pod turns ready and closed when it
  is removed; it pools idle keep-alive connections (at most ``max_idle``) and opens a
  new one when none is idle, so concurrency is never limited here (the activator's
  throttler does that).
- A pod is hostile: its answer is bounded (``max_body`` bytes of body, ``MAX_HEADERS``
  headers), a connection that breaks the protocol is closed, never reused.
- :class:`ConnectError` means nothing was sent (the socket is missing or refuses):
  the caller may retry elsewhere. Any other :class:`PodError` happened after the
  request may have reached the function: the caller must not retry it.
- A connection is reused only after a complete answer that allows keep-alive; a
  timed-out or cancelled request closes its connection (the late answer would
  otherwise be read as the next request's).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import httptools

MAX_HEADERS = 100
MAX_BODY = 64 * 1024 * 1024  # the shim's own request limit: answers get the same bound


class PodError(Exception):
    """The pod failed the request (after it may have been sent)."""


class ConnectError(PodError):
    """Nothing was sent: the pod's socket is missing or refuses connections."""


class _Conn(asyncio.Protocol):
    """One keep-alive connection; parses one answer at a time."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.transport: Any = None  # asyncio's or uvloop's (not an asyncio.Transport)
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.size = 0
        self.headers = 0
        self.reusable = False
        self.closed = False

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.close()  # bytes nobody asked for: the pod is confused or hostile
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(PodError("the pod tried to upgrade the connection"))
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raised; ours say what was wrong.
            cause = exc.__context__
            self._fail(cause if isinstance(cause, PodError) else
                       PodError(f"the pod's answer is not valid HTTP: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(PodError("the pod closed the connection before answering"))

    # -- httptools callbacks --
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += 1
        if self.headers > MAX_HEADERS:
            raise PodError(f"the pod's answer has more than {MAX_HEADERS} headers")

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_body:
            raise PodError(f"the pod's answer is larger than {self.max_body} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter = self.waiter
        self.reusable = bool(self.parser.should_keep_alive())
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), b"".join(self.body)))

    # -- ours --
    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.close()

    def send(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.body, self.size, self.headers, self.reusable = [], 0, 0, False
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class PodClient:
    """Pooled HTTP/1.1 client for the pod listening on the Unix socket at ``path``."""

    def __init__(self, path: str, max_idle: int = 64, max_body: int = MAX_BODY) -> None:
        self.path = path
        self.max_idle = max_idle
        self.max_body = max_body
        self._idle: collections.deque[_Conn] = collections.deque()
        self._all: set[_Conn] = set()
        self._closed = False

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_unix_connection(lambda: _Conn(self.max_body), self.path)
        except OSError as exc:
            raise ConnectError(f"cannot connect to the pod's socket: {exc}") from exc
        self._all.add(conn)
        return conn

    async def request(self, method: str, path: str, body: bytes = b"",
                      content_type: str = "application/json") -> tuple[int, bytes]:
        """Send one request; ``(status, body)`` of the answer. Cancel it for a timeout."""
        if self._closed:
            raise ConnectError("the pod is gone")
        conn = None
        while self._idle:
            c = self._idle.pop()  # the most recently used: the likeliest to be alive
            if not c.closed:
                conn = c
                break
            self._all.discard(c)
        if conn is None:
            conn = await self._connect()
        head = (f"{method} {path} HTTP/1.1\r\nHost: pod\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        try:
            result = await conn.send(head + body)
        except BaseException:
            conn.close()
            self._all.discard(conn)
            raise
        if conn.reusable and not self._closed and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()
            self._all.discard(conn)
        return result

    def close(self) -> None:
        self._closed = True
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()


async def probe(path: str, timeout: float = 1.0) -> bool:
    """True when the shim on the socket at ``path`` answers 200 on ``GET /healthz``."""
    client = PodClient(path, max_idle=0, max_body=4096)
    try:
        status, _ = await asyncio.wait_for(client.request("GET", "/healthz"), timeout)
    except (PodError, TimeoutError):
        return False
    finally:
        client.close()
    return status == 200
