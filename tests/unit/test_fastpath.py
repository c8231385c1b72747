"""The invocation fast path (``InvokeProtocol``) on a real Sanic server and real TCP
connections, with an in-memory activator: which requests it takes (a request
middleware sees only those handed to Sanic), keep-alive, pipelining, split bodies,
what goes to Sanic (chunked, too large, odd names, other routes), cancellation when
the caller leaves, the 500, and shutdown closing a connection only after its answer."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sanic import Request, Sanic

from allinone import objects
from allinone.activator.activator import Result
from allinone.apiserver.fastpath import InvokeProtocol, answer, parse_head
from allinone.apiserver.routes import ApiDeps, make_blueprint
from allinone.app import _on_error
from allinone.builder.sources import SourceStore
from allinone.config import Settings
from allinone.informer import Informer
from allinone.metrics import Metrics
from allinone.store.memory import MemoryStore
from allinone.testing import until

_names = itertools.count()


class Activator:
    """The activator's ``invoke``: echoes the body (or raises, or waits for ``release``)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.cancelled = 0
        self.fail = False

    async def invoke(self, function: str, body: bytes) -> Result:
        self.calls.append((function, body))
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail:
            raise RuntimeError("a bug")
        return Result(200, json.dumps({"function": function, "body": body.decode()}).encode())


class Server:
    def __init__(self, tmp: Path) -> None:
        self.activator = Activator()
        self.sanic_saw: list[str] = []
        settings = Settings(state_dir=tmp, max_upload_bytes=64 * 1024)
        self.app: Sanic[Any, Any] = Sanic(f"fastpath-test-{next(_names)}")
        self.app.config.REQUEST_MAX_SIZE = 100_000
        self.app.config.TOUCHUP = False  # it rewrites Sanic's protocol once per process
        self.app.blueprint(make_blueprint())
        self.app.error_handler.add(Exception, _on_error)
        self.app.ctx.settings = settings
        store = MemoryStore()
        self.app.ctx.deps = ApiDeps(
            settings=settings, store=store, sources=SourceStore(tmp / "sources"),
            functions=Informer(store, objects.FUNCTIONS_PREFIX),
            activator=self.activator,  # type: ignore[arg-type]
            metrics=Metrics(), autoscaler_status=lambda name: {}, live_logs=self._logs)

        @self.app.on_request
        async def seen(request: Request) -> None:
            self.sanic_saw.append(f"{request.method} {request.path}")

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.server: Any = None

    @staticmethod
    async def _logs(name: str) -> str:
        return ""

    async def start(self) -> None:
        self.server = await self.app.create_server(
            sock=self.sock, protocol=InvokeProtocol, return_asyncio_server=True)
        await self.server.startup()
        await self.server.start_serving()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    s = Server(tmp_path)
    await s.start()
    yield s
    await s.stop()


def call(name: str, body: bytes, extra: str = "", version: str = "1.1") -> bytes:
    return (f"POST /function/{name} HTTP/{version}\r\nHost: x\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class Conn:
    """One client connection reading answers framed by Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if line)
        body = await self.reader.readexactly(int(headers.get("content-length", 0)))
        return int(lines[0].split()[1]), headers, body

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 5) == b""


async def connect(s: Server) -> Conn:
    return Conn(*await asyncio.open_connection("127.0.0.1", s.port))


async def test_invocations_skip_sanic_and_keep_the_connection(server: Server) -> None:
    c = await connect(server)
    for i in range(3):
        await c.send(call("add", f'{{"i": {i}}}'.encode()))
        status, headers, body = await c.answer()
        assert status == 200 and headers["connection"] == "keep-alive"
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == {"function": "add", "body": f'{{"i": {i}}}'}
    assert server.sanic_saw == []  # none of them reached Sanic's request cycle


async def test_other_requests_and_everything_after_them_go_to_sanic(server: Server) -> None:
    c = await connect(server)
    await c.send(call("add", b"{}") + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                 + call("add", b'{"after": 1}'))
    assert (await c.answer())[0] == 200
    status, _, body = await c.answer()
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, _, body = await c.answer()  # Sanic's route, after the hand-over
    assert status == 200 and json.loads(body)["body"] == '{"after": 1}'
    assert server.sanic_saw == ["GET /healthz", "POST /function/add"]


async def test_pipelined_invocations_are_answered_in_order(server: Server) -> None:
    c = await connect(server)
    await c.send(b"".join(call("f", f'{{"n": {i}}}'.encode()) for i in range(5)))
    bodies = [json.loads((await c.answer())[2])["body"] for _ in range(5)]
    assert bodies == [f'{{"n": {i}}}' for i in range(5)]
    assert server.sanic_saw == []


async def test_a_request_is_taken_only_when_its_body_is_whole(server: Server) -> None:
    c = await connect(server)
    whole = call("f", b'{"x": "0123456789"}')
    await c.send(whole[:10])
    await c.send(whole[10:-5])
    await c.send(b"")
    for _ in range(20):
        await asyncio.sleep(0)
    assert server.activator.calls == []
    await c.send(whole[-5:])
    assert json.loads((await c.answer())[2])["body"] == '{"x": "0123456789"}'


async def test_an_empty_body_means_no_arguments(server: Server) -> None:
    c = await connect(server)
    await c.send(call("f", b""))
    await c.answer()
    assert server.activator.calls == [("f", b"{}")]


async def test_chunked_bodies_are_read_by_sanic(server: Server) -> None:
    c = await connect(server)
    await c.send(b"POST /function/f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n")
    status, _, body = await c.answer()
    assert status == 200 and json.loads(body)["body"] == '{"a":1}'
    assert server.sanic_saw == ["POST /function/f"]


async def test_a_body_over_the_limit_gets_sanics_413_with_the_invocation_message(
        server: Server) -> None:
    c = await connect(server)
    await c.send(b"POST /function/f HTTP/1.1\r\nHost: x\r\nContent-Length: 100001\r\n\r\n")
    status, _, body = await c.answer()
    assert status == 413
    assert "invocation body too large" in json.loads(body)["error"]["message"]
    assert server.activator.calls == []


async def test_a_name_that_is_not_a_function_name_goes_to_sanic(server: Server) -> None:
    c = await connect(server)
    await c.send(call("Bad%20Name", b"{}"))
    status, _, _body = await c.answer()
    # Sanic's route answers it (the activator's 404 names it for the caller).
    assert status == 200 and server.activator.calls == [("Bad%20Name", b"{}")]
    assert len(server.sanic_saw) == 1


@pytest.mark.parametrize(("extra", "version"), [("Connection: close\r\n", "1.1"), ("", "1.0")])
async def test_a_connection_that_asks_to_close_is_closed_after_the_answer(
        server: Server, extra: str, version: str) -> None:
    c = await connect(server)
    await c.send(call("f", b"{}", extra, version))
    status, headers, _ = await c.answer()
    assert status == 200 and headers["connection"] == "close"
    assert await c.closed()


async def test_a_caller_that_leaves_cancels_its_invocation(server: Server) -> None:
    server.activator.release.clear()
    c = await connect(server)
    await c.send(call("f", b"{}"))
    await until(lambda: server.activator.calls, "the invocation to start")
    c.writer.close()
    await until(lambda: server.activator.cancelled == 1, "the invocation to be cancelled")


async def test_an_unexpected_error_is_the_standard_500(server: Server) -> None:
    server.activator.fail = True
    c = await connect(server)
    await c.send(call("f", b"{}"))
    status, headers, body = await c.answer()
    assert status == 500 and headers["connection"] == "keep-alive"
    assert json.loads(body)["error"]["code"] == "InternalError"
    server.activator.fail = False
    await c.send(call("f", b"{}"))  # the connection still serves
    assert (await c.answer())[0] == 200


async def test_shutdown_closes_a_busy_connection_only_after_its_answer(server: Server) -> None:
    busy, idle = await connect(server), await connect(server)
    await idle.send(call("f", b"{}"))
    await idle.answer()
    server.activator.release.clear()
    await busy.send(call("f", b'{"busy": 1}'))
    await until(lambda: len(server.activator.calls) == 2, "the second invocation to start")
    closed = [conn.close_if_idle() for conn in list(server.server.connections)]
    assert sorted(closed) == [False, True]
    assert await idle.closed()
    server.activator.release.set()
    status, headers, _body = await busy.answer()
    assert status == 200 and headers["connection"] == "close"
    assert await busy.closed()


async def test_sanics_idle_clock_does_not_run_during_an_invocation(server: Server) -> None:
    server.activator.release.clear()
    c = await connect(server)
    await c.send(call("f", b"{}"))
    await until(lambda: server.activator.calls, "the invocation to start")
    (conn,) = server.server.connections
    conn._time -= 1000  # as if the call had run past Sanic's keep-alive timeout
    conn.check_timeouts()
    server.activator.release.set()
    assert (await c.answer())[0] == 200  # not cut off
    conn._time -= 1000  # idle past the keep-alive timeout: Sanic closes it
    conn.check_timeouts()
    assert await c.closed()


@pytest.mark.parametrize(("head", "parsed"), [
    (b"POST /function/add HTTP/1.1\r\nContent-Length: 7\r\n\r\n", ("add", 7, True)),
    (b"POST /function/add?x=1 HTTP/1.1\r\n\r\n", ("add", 0, True)),
    (b"POST /function/add HTTP/1.1\r\nConnection: close\r\n\r\n", ("add", 0, False)),
    (b"POST /function/add HTTP/1.0\r\n\r\n", ("add", 0, False)),
    (b"POST /function/add HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", ("add", 0, True)),
    (b"POST /function/add HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", None),  # over max
    (b"POST /function/add HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", None),
    (b"POST /function/add HTTP/1.1\r\nContent-Length: +1\r\n\r\n", None),
    (b"POST /function/add HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", None),
    (b"POST /function/add HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", None),
    (b"POST /function/add HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
     None),
    (b"GET /function/add HTTP/1.1\r\n\r\n", None),
    (b"POST /function/add/ HTTP/1.1\r\n\r\n", None),
    (b"POST /function/ HTTP/1.1\r\n\r\n", None),
    (b"POST /function/Add HTTP/1.1\r\n\r\n", None),
    (b"POST /function/a%2Fb HTTP/1.1\r\n\r\n", None),
    (b"POST /function/" + b"a" * 64 + b" HTTP/1.1\r\n\r\n", None),  # longer than a name
    (b"POST /function/add HTTP/2.0\r\n\r\n", None),
    (b"POST /function/add HTTP/1.1\r\nBad Header\r\n\r\n", None),
])
def test_parse_head(head: bytes, parsed: tuple[str, int, bool] | None) -> None:
    assert parse_head(head, 1000) == parsed


def test_answer_is_framed_as_sanic_frames_it() -> None:
    assert answer(200, b"3", True) == [
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: keep-alive\r\n"
        b"content-type: application/json\r\n\r\n3"]
    (no_body,) = answer(204, b"ignored", False)
    assert no_body == (b"HTTP/1.1 204 No Content\r\nconnection: close\r\n"
                       b"content-type: application/json\r\n\r\n")
    (interim,) = answer(101, b"", True)  # a pod may not switch protocols on the caller
    assert interim.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b'"InternalError"' in interim
    head, big = answer(200, b"x" * 70_000, True)
    assert head.endswith(b"\r\n\r\n") and big == b"x" * 70_000
    assert answer(299, b"", True)[0].startswith(b"HTTP/1.1 299 \r\n")
