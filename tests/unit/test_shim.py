"""The runtime shim as a real process: HTTP contract, errors, concurrency, start-up failure.

Each test starts ``imagedata/shim.py`` with this interpreter on a free 127.0.0.1 port,
with the fixtures copied into ``tmp_path`` and put on PYTHONPATH, the way the image
lays them out under /function.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from allinone.testing import UnixHTTPConnection, free_port

# The shim is a real process on a Unix socket: waiting for it to answer or to write its
# log is polling another process, not waiting for a loop of this one.
pytestmark = pytest.mark.real_process("polls the shim subprocess's socket and log files")

ROOT = Path(__file__).resolve().parents[2]
SHIM = ROOT / "imagedata" / "shim.py"
FIXTURES = ROOT / "fixtures"

EXTRA_MODULES = {
    "nonjson.py": "def run():\n    return object()\n",
    "chatty.py": "def run(word='hello'):\n    print('said', word)\n    return word\n",
    "inner_typeerror.py": "def run(x):\n    return len(x)\n",
    "asyncfn.py": "import asyncio\n\nasync def run(x):\n    await asyncio.sleep(0)\n"
                  "    return x * 2\n",
    "broken.py": "import json\nraise RuntimeError('cannot start: missing config')\n",
    # Three calls meet here only if the shim serves them at once; served one after
    # another, the first waits alone and its barrier breaks (500).
    "meet.py": "import threading\n\n_b = threading.Barrier(3, timeout=20)\n\n"
               "def run():\n    _b.wait()\n    return 'met'\n",
}



@dataclass
class Shim:
    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    path: str = ""  # the Unix socket (the platform's pods) ...
    port: int = 0   # ... or the TCP port ($PORT, a Knative export)

    def conn(self) -> http.client.HTTPConnection:
        if self.path:
            return UnixHTTPConnection(self.path, timeout=10)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def raw(self) -> socket.socket:
        """A connected socket, for requests http.client cannot send."""
        if not self.path:
            return socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(self.path)
        return s

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
        conn = self.conn()
        try:
            conn.request(method, path, body, headers or {})
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None, dict(resp.getheaders())
        finally:
            conn.close()

    def post(self, payload: Any) -> tuple[int, Any]:
        status, body, _ = self.request("POST", "/", json.dumps(payload),
                                       {"Content-Type": "application/json"})
        return status, body


@pytest.fixture
def funcdir(tmp_path: Path) -> Path:
    d = tmp_path / "function"
    d.mkdir()
    shutil.copy(FIXTURES / "add.py", d / "func.py")
    for name in ("add", "raises", "sleep"):
        shutil.copy(FIXTURES / f"{name}.py", d / f"{name}.py")
    for name, text in EXTRA_MODULES.items():
        (d / name).write_text(text)
    shutil.copytree(FIXTURES / "realistic" / "app", d / "app")
    return d


@pytest.fixture
def start(funcdir: Path, tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def launch(handler: str, *, wait: bool = True, tcp: bool = False,
               extra_env: dict[str, str] | None = None) -> Shim:
        n = len(procs)
        out, err = tmp_path / f"stdout{n}", tmp_path / f"stderr{n}"
        port, path = (free_port(), "") if tcp else (0, str(tmp_path / f"pod{n}.sock"))
        listen = {"PORT": str(port)} if tcp else {"ALLINONE_SOCKET": path}
        env = {
            "PATH": os.environ.get("PATH", ""),
            "ALLINONE_HANDLER": handler,
            **listen,
            "PYTHONPATH": str(funcdir),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            **(extra_env or {}),
        }
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen([sys.executable, str(SHIM)], env=env, cwd=funcdir,
                                    stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
        procs.append(proc)
        shim = Shim(proc, out, err, path=path, port=port)
        if wait:
            wait_healthy(shim)
        return shim

    yield launch
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def wait_healthy(shim: Shim, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if shim.proc.poll() is not None:
            raise AssertionError(f"shim exited {shim.proc.returncode}: "
                                 f"{shim.stderr.read_text()}")
        try:
            status, body, _ = shim.request("GET", "/healthz")
            if status == 200:
                assert body == {"status": "ok"}
                return
        except OSError:
            time.sleep(0.01)
    raise AssertionError("shim did not answer /healthz in time")


def test_healthz_and_invoke(start: Any) -> None:
    shim = start("run")
    status, body, headers = shim.request("GET", "/healthz")
    assert (status, body) == (200, {"status": "ok"})
    assert headers["Content-Type"] == "application/json"
    assert shim.post({"x": 3, "y": 5}) == (200, 8)


def test_keep_alive_many_requests_one_connection(start: Any) -> None:
    shim = start("add.run")
    conn = shim.conn()
    try:
        for i in range(50):
            conn.request("POST", "/", json.dumps({"x": i, "y": 1}))
            resp = conn.getresponse()
            assert resp.getheader("Content-Length") is not None
            assert resp.getheader("Connection") == "keep-alive"
            assert json.loads(resp.read()) == i + 1
        # The same socket served all of them.
        assert conn.sock is not None
    finally:
        conn.close()


def test_http10_closes(start: Any) -> None:
    shim = start("run")
    with shim.raw() as s:
        s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" in data and data.endswith(b'{"status":"ok"}')


def test_chunked_and_expect_continue_bodies(start: Any) -> None:
    shim = start("run")
    conn = shim.conn()
    try:
        conn.request("POST", "/", iter([b'{"x": 2,', b' "y": 40}']),
                     {"Transfer-Encoding": "chunked"}, encode_chunked=True)
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())) == (200, 42)
    finally:
        conn.close()
    with shim.raw() as s:
        body = b'{"x": 1, "y": 1}'
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"2")


def test_bad_json_is_400(start: Any) -> None:
    shim = start("run")
    status, body, _ = shim.request("POST", "/", "{not json")
    assert status == 400
    assert body["error"]["code"] == "BadRequest"
    assert "not valid JSON" in body["error"]["message"]


@pytest.mark.parametrize("payload", [[1, 2], "text", 3, None])
def test_non_object_is_400(start: Any, payload: Any) -> None:
    shim = start("run")
    status, body = shim.post(payload)
    assert status == 400
    assert "must be a JSON object" in body["error"]["message"]


def test_missing_argument_is_400_naming_parameters(start: Any) -> None:
    shim = start("run")
    status, body = shim.post({"x": 1})
    assert status == 400
    assert body["error"]["code"] == "BadRequest"
    message = body["error"]["message"]
    assert "'y'" in message and "expected parameters: x, y" in message


def test_unexpected_argument_is_400(start: Any) -> None:
    shim = start("run")
    status, body = shim.post({"x": 1, "y": 2, "z": 3})
    assert status == 400
    assert "'z'" in body["error"]["message"] and "x, y" in body["error"]["message"]


def test_typeerror_inside_function_is_500(start: Any) -> None:
    shim = start("inner_typeerror.run")
    status, body = shim.post({"x": 5})
    assert status == 500
    assert body["error"]["code"] == "FunctionError"
    assert body["error"]["message"].startswith("TypeError: object of type 'int' has no len()")


def test_exception_is_500_with_type_and_message_and_logged_traceback(start: Any) -> None:
    shim = start("raises.run")
    status, body = shim.post({})
    assert status == 500
    assert body == {"error": {"code": "FunctionError", "message": "ValueError: boom"}}
    # The traceback reaches the log (stderr) and starts at the user's code.
    deadline = time.monotonic() + 5
    while "ValueError: boom" not in shim.stderr.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    log = shim.stderr.read_text()
    assert "Traceback (most recent call last)" in log and "raises.py" in log
    assert "ValueError: boom" in log


def test_non_serialisable_return_is_500(start: Any) -> None:
    shim = start("nonjson.run")
    status, body = shim.post({})
    assert status == 500
    assert "not JSON-serialisable" in body["error"]["message"]


def test_unknown_path_is_404_and_wrong_method_405(start: Any) -> None:
    shim = start("run")
    status, body, _ = shim.request("GET", "/nope")
    assert status == 404 and body["error"]["code"] == "NotFound"
    status, body, headers = shim.request("GET", "/")
    assert status == 405 and headers["Allow"] == "POST"


def test_empty_body_means_no_arguments(start: Any) -> None:
    shim = start("sleep.run")
    status, body, _ = shim.request("POST", "/", b"")
    assert (status, body) == (200, {"slept_ms": 100})


def test_async_handler(start: Any) -> None:
    shim = start("asyncfn.run")
    assert shim.post({"x": 21}) == (200, 42)


def test_package_handler_realistic(start: Any) -> None:
    shim = start("app.main.handle")
    status, body = shim.post({"text": "The cat sat. The cat ran away!", "top": 1})
    assert status == 200
    assert body["words"] == 7 and body["sentences"] == 2
    assert body["top_words"] == [{"word": "cat", "count": 2}]


def test_print_reaches_log_unbuffered(start: Any) -> None:
    shim = start("chatty.run")
    assert shim.post({"word": "bonjour"}) == (200, "bonjour")
    deadline = time.monotonic() + 5
    while "said bonjour" not in shim.stdout.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "said bonjour" in shim.stdout.read_text()
    # No per-request access log.
    assert "POST" not in shim.stderr.read_text()


def test_slow_requests_overlap(start: Any) -> None:
    shim = start("meet.run")
    results: list[tuple[int, Any]] = []

    def call() -> None:
        results.append(shim.post({}))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # All three were in the function at the same time (no wall-clock bound needed).
    assert results == [(200, "met")] * 3


def test_connections_over_the_limit_wait_in_the_backlog(start: Any) -> None:
    shim = start("add.run", extra_env={"ALLINONE_MAX_CONNECTIONS": "2"})
    held = [shim.conn(), shim.conn()]
    try:
        for c in held:  # both are served, and keep their threads (keep-alive)
            c.request("POST", "/", json.dumps({"x": 1, "y": 1}),
                      {"Content-Type": "application/json"})
            assert c.getresponse().read() == b"2"
        third = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        third.connect(shim.path)  # the backlog takes it; no thread serves it yet
        third.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n"
                      b'{"x":2,"y":3}')
        readable, _, _ = select.select([third], [], [], 0.3)
        assert readable == []
        held.pop().close()  # a thread ends: the waiting connection is accepted
        third.settimeout(10)
        assert third.recv(4096).endswith(b"\r\n\r\n5")
        third.close()
    finally:
        for c in held:
            c.close()


def test_broken_module_exits_nonzero_with_traceback(start: Any) -> None:
    shim = start("broken.run", wait=False)
    assert shim.proc.wait(timeout=10) != 0
    log = shim.stderr.read_text()
    assert "Traceback" in log and "RuntimeError: cannot start: missing config" in log
    assert "broken.run" in log


def test_missing_handler_attribute_exits_nonzero(start: Any) -> None:
    shim = start("add.nothere", wait=False)
    assert shim.proc.wait(timeout=10) != 0
    assert "has no attribute 'nothere'" in shim.stderr.read_text()


def test_sigterm_exits_promptly(start: Any) -> None:
    shim = start("run")
    shim.proc.send_signal(signal.SIGTERM)
    assert shim.proc.wait(timeout=2) == 0


def test_unix_socket_is_private_to_its_owner(start: Any) -> None:
    shim = start("run")
    assert stat.S_IMODE(os.stat(shim.path).st_mode) & 0o077 == 0  # nobody but its owner
    assert stat.S_ISSOCK(os.stat(shim.path).st_mode)


def test_tcp_port_mode_for_knative(start: Any) -> None:
    shim = start("add.run", tcp=True)
    assert shim.post({"x": 2, "y": 3}) == (200, 5)
    with shim.raw() as s:
        # Accepted TCP sockets get TCP_NODELAY (on the server side); the client side
        # sees the answer to a keep-alive request without a delayed-ACK stall.
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200 OK")
    assert f"0.0.0.0:{shim.port}" in shim.stderr.read_text()
