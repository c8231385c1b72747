"""loadtests.loadgen: every request ends as one outcome, answered or not (loopback only)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from allinone.testing import free_port
from loadtests.loadgen import burst, sequence, storm


class Adder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    paths: list[str] = []  # every path POSTed to, in arrival order

    def do_POST(self) -> None:
        self.paths.append(self.path)
        args = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        out = json.dumps(args["x"] + args["y"]).encode()
        self.send_response(200 if args["x"] >= 0 else 400)
        if args["y"] >= 0:  # a negative y: an answer without Content-Length
            self.send_header("Content-Length", str(len(out)))
        else:
            self.close_connection = True
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Adder)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}/function/add"
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_burst_gets_one_outcome_per_request_with_its_body(url: str) -> None:
    res = asyncio.run(burst(url, 20, {"x": 1, "y": 2}))
    assert len(res.outcomes) == 20 and res.failures == []
    assert {o.body for o in res.outcomes} == {3}


def test_an_error_status_is_a_failure_with_its_body(url: str) -> None:
    res = asyncio.run(burst(url, 3, {"x": -5, "y": 1}))
    assert [o.status for o in res.failures] == [400, 400, 400]
    assert res.failures[0].body == -4


def test_an_answer_without_content_length_fails_instead_of_hanging(url: str) -> None:
    res = asyncio.run(burst(url, 2, {"x": 1, "y": -1}, timeout=30))
    assert [o.status for o in res.outcomes] == [-1, -1]
    assert "Content-Length" in res.outcomes[0].body


def test_a_refused_connection_is_a_failure() -> None:
    res = asyncio.run(burst(f"http://127.0.0.1:{free_port()}/f", 2, {}))
    assert [o.status for o in res.outcomes] == [-1, -1]
    assert "Refused" in res.summary()


def test_a_sequence_sends_exactly_n_one_after_another(url: str) -> None:
    ms = sequence(url, 7, b'{"x": 1, "y": 2}')
    assert len(ms) == 7 and all(m > 0 for m in ms)


def test_a_sequence_with_a_failed_answer_raises_with_the_codes(url: str) -> None:
    with pytest.raises(RuntimeError, match=re.escape("codes {400: 3}")):
        sequence(url, 3, b'{"x": -1, "y": 2}')


def test_a_storm_sends_one_request_to_each_url_at_once(url: str) -> None:
    Adder.paths.clear()
    paths = [f"/function/add-{i}" for i in range(6)]
    refused = f"http://127.0.0.1:{free_port()}/function/gone"
    res = storm([url.removesuffix("/function/add") + p for p in paths] + [refused],
                b'{"x": 2, "y": 3}')
    assert sorted(Adder.paths) == paths
    assert sorted(o.status for o in res.outcomes) == [-1] + [200] * 6
    assert {o.body for o in res.outcomes if o.status == 200} == {5}
