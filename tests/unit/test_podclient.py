"""The pooled pod client against scripted Unix-socket servers: keep-alive reuse, bounds
on what a hostile pod may answer, which failures are safe to retry, and the probe."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from allinone.podclient import ConnectError, PodClient, PodError, probe
from allinone.testing import until

Reply = Callable[[bytes], Awaitable[bytes | None]]


class Server:
    """Reads one request head+body at a time and answers with ``reply(request)``."""

    def __init__(self, path: Path, reply: Reply) -> None:
        self.path = str(path)
        self.reply = reply
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                req = head + await reader.readexactly(length)
                self.requests.append(req)
                out = await self.reply(req)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_unix_server(self._serve, self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def ok(body: bytes, keep_alive: bool = True) -> bytes:
    conn = b"keep-alive" if keep_alive else b"close"
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: %s\r\n\r\n%s" % (len(body), conn, body))


async def echo(req: bytes) -> bytes:
    return ok(req.split(b"\r\n\r\n", 1)[1])


async def test_requests_reuse_one_keep_alive_connection(tmp_path: Path) -> None:
    async with Server(tmp_path / "s", echo) as srv:
        client = PodClient(srv.path)
        for i in range(20):
            assert await client.request("POST", "/", b'{"i": %d}' % i) == (200, b'{"i": %d}' % i)
        assert srv.connections == 1
        assert srv.requests[0].startswith(b"POST / HTTP/1.1\r\n")
        assert b"Content-Length: 8\r\n" in srv.requests[0]
        client.close()


async def test_concurrent_requests_open_more_connections_then_pool_them(tmp_path: Path) -> None:
    gate = asyncio.Event()

    async def slow(req: bytes) -> bytes:
        await gate.wait()
        return ok(b"1")

    async with Server(tmp_path / "s", slow) as srv:
        client = PodClient(srv.path, max_idle=3)
        calls = [asyncio.ensure_future(client.request("POST", "/")) for _ in range(5)]
        await until(lambda: srv.connections == 5, "five connections opened")
        gate.set()
        assert [r[0] for r in await asyncio.gather(*calls)] == [200] * 5
        assert srv.connections == 5
        await asyncio.gather(*(client.request("POST", "/") for _ in range(3)))
        assert srv.connections == 5  # the three pooled connections served these
        client.close()


async def test_connection_close_answer_is_not_reused(tmp_path: Path) -> None:
    async def closing(req: bytes) -> bytes:
        return ok(b"1", keep_alive=False)

    async with Server(tmp_path / "s", closing) as srv:
        client = PodClient(srv.path)
        for _ in range(3):
            assert (await client.request("GET", "/healthz"))[0] == 200
        assert srv.connections == 3
        client.close()


async def test_missing_socket_is_a_connect_error(tmp_path: Path) -> None:
    client = PodClient(str(tmp_path / "nothing-here"))
    with pytest.raises(ConnectError):
        await client.request("POST", "/")


async def test_closed_before_answering_is_not_a_connect_error(tmp_path: Path) -> None:
    async def hang_up(req: bytes) -> None:
        return None

    async with Server(tmp_path / "s", hang_up) as srv:
        client = PodClient(srv.path)
        with pytest.raises(PodError) as info:
            await client.request("POST", "/")
        assert not isinstance(info.value, ConnectError)  # it may have run: never retried


async def test_oversized_answer_is_refused(tmp_path: Path) -> None:
    async def huge(req: bytes) -> bytes:
        return ok(b"x" * 5000)

    async with Server(tmp_path / "s", huge) as srv:
        client = PodClient(srv.path, max_body=4096)
        with pytest.raises(PodError, match="larger than 4096"):
            await client.request("POST", "/")
        assert not client._idle  # that connection is not pooled


@pytest.mark.parametrize("answer", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n1",
])
async def test_broken_answers_are_errors(tmp_path: Path, answer: bytes) -> None:
    async def bad(req: bytes) -> bytes:
        return answer

    async with Server(tmp_path / "s", bad) as srv:
        client = PodClient(srv.path)
        with pytest.raises(PodError):
            await client.request("POST", "/")


async def test_cancelled_request_closes_its_connection(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def late(req: bytes) -> bytes:
        if b"slow" in req:
            await release.wait()
            return ok(b"late")
        return ok(b"fresh")

    async with Server(tmp_path / "s", late) as srv:
        client = PodClient(srv.path)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.request("POST", "/", b"slow"), 0.05)
        release.set()
        # The late answer must not be read as the next request's.
        assert await client.request("POST", "/", b"next") == (200, b"fresh")
        assert srv.connections == 2
        client.close()


async def test_probe(tmp_path: Path) -> None:
    assert await probe(str(tmp_path / "none")) is False
    async with Server(tmp_path / "s", echo) as srv:
        assert await probe(srv.path) is True

    async def unhealthy(req: bytes) -> bytes:
        return b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n"

    async with Server(tmp_path / "u", unhealthy) as srv:
        assert await probe(srv.path) is False
