"""The one closed-loop HTTP load generator outside locust (asyncio, raw HTTP/1.1): the
benchmark's :func:`measure`, :func:`sequence` and :func:`storm`, the integration tests'
:func:`run_load` and :func:`burst`.

Each connection is one user sending the same ``POST`` again as soon as the whole answer
is in (keep-alive, over TCP, whose ``TCP_NODELAY`` asyncio and uvloop both set, or a
pod's Unix socket ``unix``). Answers are framed by ``Content-Length``; one without it
fails its connection rather than hang. Every run is bounded (``duration`` or one request
per user, plus ``timeout``), and a request in flight at the time-out or on a closed
connection is a failure (status -1), so no outcome is lost. Each user is a descriptor:
a run first raises the soft open-files limit to the hard one (:mod:`allinone.fdlimit`),
or 2,000 users under the common soft limit of 1024 would fail in the generator itself.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import uvloop  # sanic's own loop (a dependency of it on Linux): the benchmark's figures

from allinone.fdlimit import raise_open_files_limit
from loadtests.report import summarize

_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)")


@dataclass
class Outcome:
    status: int  # -1: no answer (refused, closed, timed out)
    raw: bytes
    started: float
    seconds: float

    @property
    def body(self) -> Any:
        try:
            return json.loads(self.raw)
        except ValueError:
            return self.raw.decode(errors="replace")


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != 200]

    def summary(self) -> str:
        codes = dict(Counter(o.status for o in self.outcomes))
        bad = [o.body for o in self.failures[:3]]
        return f"{len(self.outcomes)} requests, codes {codes}, first failures {bad}"


class _User(asyncio.Protocol):
    """One keep-alive connection: send, read the whole answer, record it, repeat. Until
    the first send, the request "in flight" is the connection being made."""

    def __init__(self, request: bytes, again: Callable[[], bool], out: list[Outcome]) -> None:
        self.request, self.again, self.out = request, again, out
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buf = b""
        self.t: float | None = time.perf_counter()  # when the request in flight was sent
        self.transport: Any = None  # asyncio's or uvloop's transport

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.send()

    def send(self) -> None:
        self.t = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.t is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            m = _LENGTH.search(self.buf[:end].lower())
            if m is None:
                self.fail(b"an answer without Content-Length")
                return
            total = end + 4 + int(m.group(1))
            if len(self.buf) < total:
                return
            status, body = int(self.buf[9:12]), self.buf[end + 4:total]
            self.buf = self.buf[total:]
            self.out.append(Outcome(status, body, self.t, time.perf_counter() - self.t))
            self.t = None
            if self.again():
                self.send()
            else:
                self.transport.close()

    def fail(self, why: bytes) -> None:
        if self.t is not None:
            self.out.append(Outcome(-1, why, self.t, time.perf_counter() - self.t))
            self.t = None
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(repr(exc or "connection closed by the server").encode())
        if not self.done.done():
            self.done.set_result(None)


async def _run(urls: list[str], body: Any, again: Callable[[], bool], timeout: float,
               unix: str | None = None) -> LoadResult:
    """One user per URL in ``urls`` (with ``unix``, only their paths count)."""
    raise_open_files_limit()
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    loop, result, users = asyncio.get_running_loop(), LoadResult(), list[_User]()

    async def one(url: str) -> None:
        u = urlsplit(url)
        host, port = u.hostname or "127.0.0.1", u.port or 80
        users.append(user := _User((
            f"POST {u.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data,
            again, result.outcomes))
        try:
            await (loop.create_connection(lambda: user, host, port) if unix is None
                   else loop.create_unix_connection(lambda: user, unix))
        except OSError as exc:
            user.fail(repr(exc).encode())
            return
        await user.done

    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(one(u) for u in urls)), timeout)
    except TimeoutError:  # also a connection still being made: no outcome is lost
        for user in users:
            user.fail(b"timed out")
    result.seconds = time.perf_counter() - t0
    return result


async def run_load(url: str, concurrency: int, duration: float, body: Any,
                   stop: asyncio.Event | None = None, timeout: float = 120,
                   unix: str | None = None) -> LoadResult:
    """``concurrency`` users, each sending its next request when the last one answers,
    for ``duration`` s or until ``stop`` is set (over the Unix socket ``unix`` if given:
    then ``url`` gives only the path)."""
    deadline = time.monotonic() + duration
    return await _run([url] * concurrency, body, lambda: time.monotonic() < deadline and not (
        stop and stop.is_set()), duration + timeout, unix)


async def burst(url: str, n: int, body: Any, timeout: float = 120) -> LoadResult:
    """``n`` requests at once, one per connection."""
    return await _run([url] * n, body, lambda: False, timeout)


def storm(urls: list[str], body: bytes, timeout: float = 120) -> LoadResult:
    """One request to each of ``urls``, all at once, a connection each."""
    return uvloop.run(_run(urls, body, lambda: False, timeout))


def sequence(url: str, n: int, body: bytes, unix: str | None = None,
             timeout: float = 120) -> list[float]:
    """``n`` requests one after another on one new keep-alive connection: each one's
    latency in ms (the first pays no connect: timing starts at the send). RuntimeError
    unless all ``n`` answered 200."""
    sent = iter(range(1, n))
    res = uvloop.run(_run([url], body, lambda: next(sent, None) is not None, timeout, unix))
    if res.failures or len(res.outcomes) != n:
        raise RuntimeError(f"POST {url}: {res.summary()}")
    return [o.seconds * 1000 for o in res.outcomes]


def measure(url: str, conns: int, seconds: float, body: bytes,
            unix: str | None = None) -> dict[str, Any]:
    """The benchmark's throughput run: 0.5 s warm-up, then ``seconds`` of closed-loop
    load on ``conns`` connections: req/s, errors, latency (ms)."""
    uvloop.run(run_load(url, conns, 0.5, body, timeout=30, unix=unix))  # warm-up
    res = uvloop.run(run_load(url, conns, seconds, body, timeout=30, unix=unix))
    ok = [o.seconds * 1000 for o in res.outcomes if o.status == 200]
    return {"rps": round(len(ok) / res.seconds, 1), "errors": len(res.failures),
            "requests": len(ok), "latency_ms": summarize(ok, (50, 90, 99), 4)}
