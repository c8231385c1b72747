"""allinone runtime shim: the HTTP server inside every function container.

Contract (the activator and the controller rely on it):

- ``GET /healthz`` answers 200 ``{"status":"ok"}`` once the handler module has been
  imported. If the import fails the traceback goes to stderr and the process exits
  with code 1 before it ever listens, so the platform sees a failed pod with a log.
- ``POST /`` with a JSON object body calls ``handler(**body)`` and answers 200 with the
  JSON of the return value. An empty body counts as ``{}``. Errors use the platform's
  body shape ``{"error": {"code": ..., "message": ...}}``: 400 ``BadRequest`` for a body
  that is not a JSON object or arguments that do not fit the handler's signature, 500
  ``FunctionError`` when the function raises (its traceback goes to stderr, the
  container log) or returns something JSON cannot encode.
- Anything else is 404 (unknown path) or 405 (known path, wrong method).

Configuration comes from the environment: ``ALLINONE_HANDLER`` (``run`` means ``run``
in module ``func``; ``pkg.mod.fn`` means ``fn`` in module ``pkg.mod``), and where to
listen: ``ALLINONE_SOCKET``, the path of a Unix socket (the platform's pods: they have
no network, the socket is in a per-pod directory the platform mounts), else TCP port
``$PORT`` (default 8080) on every interface of the container's own network namespace
(a Knative export, where the queue-proxy connects over TCP), or ``ALLINONE_PORT`` on
127.0.0.1 only (a container on the host network).

Why not ``http.server``: in the function image it costs about 20 ms of imports
(http.client pulls in ssl, email.utils pulls in the email package, datetime, random,
calendar...). Measured in the image, process start to first answer on /healthz, p50:
empty interpreter 7 ms, a raw-socket server 14 ms, this shim 22 ms, the same shim on
``http.server`` 42 ms; container start to first answer 98 ms with this shim vs 115 ms
with ``http.server``. So this file speaks the small part of HTTP/1.1 the platform needs
itself, on top of ``socketserver``: request line, headers, ``Content-Length`` or chunked
bodies, ``Expect: 100-continue``, keep-alive. Standard library only; ``traceback``,
``inspect`` and ``asyncio`` are imported only on the paths that need them.

Nothing is precompiled to .pyc: this file compiles in ~1.2 ms at each start, and a
function module of 1-3 KB in 0.01-0.1 ms, against ~100 ms for the container's start;
a .pyc launcher would add a moving part (and a magic-number dependency on the base
image's Python) for about 1%.

As PID 1 in the container, the shim handles SIGTERM itself (exit at once), or
``docker stop`` would wait out its whole grace period.

Latency invariants: every reply carries ``Content-Length`` and is written with one
``sendall``; on TCP, accepted sockets get ``TCP_NODELAY`` (without it, a keep-alive
reply that follows a small write waits for the peer's delayed ACK, about 40 ms); the
listen backlog is 1024 on both kinds of socket so a burst of new connections during
scale-up is not dropped; one daemon thread per connection lets requests to slow
functions overlap, at most ``ALLINONE_MAX_CONNECTIONS`` of them (the platform sets it
below the pod's pids limit): a connection over that waits in the backlog until a
thread ends, instead of failing to start a thread (which closed connections with
requests on them when 1,000 clients arrived on two pods). The Unix socket is created
under umask 077: only its owner (the pod's uid) and root (the platform) can connect.
"""

import json
import os
import signal
import socket
import socketserver
import sys
import threading
import types

# Limits on what a client may send; the activator is the only client and stays far
# below them, so they only stop a confused or hostile peer from exhausting memory.
MAX_LINE = 65536
MAX_HEADERS = 100
MAX_BODY = 64 * 1024 * 1024

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}

HEALTHZ_BODY = b'{"status":"ok"}'


class ProtocolError(Exception):
    """The request cannot be parsed; answer ``status`` and close the connection."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(code, message):
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def load_handler(spec):
    """Import the handler named by ``spec``; errors propagate to :func:`main`."""
    module_name, _, attr = spec.rpartition(".")
    if not module_name:
        # A single uploaded .py file is stored as func.py.
        module_name = "func"
    __import__(module_name)
    module = sys.modules[module_name]
    try:
        handler = getattr(module, attr)
    except AttributeError:
        raise AttributeError(
            f"handler {spec!r}: module {module_name!r} ({getattr(module, '__file__', '?')}) "
            f"has no attribute {attr!r}"
        ) from None
    if not callable(handler):
        raise TypeError(f"handler {spec!r} is a {type(handler).__name__}, not a function")
    return handler


class Invoker:
    """Calls the handler with a decoded body; returns ``(status, body bytes)``."""

    def __init__(self, handler, name):
        self.handler = handler
        self.name = name

    def __call__(self, raw):
        if raw.strip():
            try:
                args = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                return 400, error_body("BadRequest", f"the request body is not valid JSON: {exc}")
            except RecursionError:
                # The decoder recurses per level: a deeply nested body must not kill the pod.
                return 400, error_body(
                    "BadRequest", "the request body is nested too deeply to decode (JSON "
                    f"arrays and objects nest at most about {sys.getrecursionlimit()} "
                    "levels deep here); flatten it")
        else:
            args = {}
        if not isinstance(args, dict):
            return 400, error_body(
                "BadRequest",
                "the request body must be a JSON object of keyword arguments, "
                f'e.g. {{"x": 1}}; got a JSON {type(args).__name__}',
            )
        try:
            result = self.handler(**args)
            if type(result) is types.CoroutineType:
                # An ``async def`` handler: run it to completion in this thread. asyncio
                # is imported only for such handlers (it costs ~15 ms of imports).
                import asyncio

                result = asyncio.run(result)
        except TypeError as exc:
            mismatch = self.signature_mismatch(args)
            if mismatch is not None:
                return 400, error_body("BadRequest", mismatch)
            return self.function_error(exc)
        except BaseException as exc:  # any failure of user code is a 500
            return self.function_error(exc)
        try:
            return 200, json.dumps(result, allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            return 500, error_body(
                "FunctionError",
                f"the function returned a value that is not JSON-serialisable "
                f"({type(result).__name__}): {exc}",
            )

    def signature_mismatch(self, args):
        """Why ``args`` do not fit the handler's signature, or None when they do.

        Called only after the call raised TypeError, so the hot path never pays for
        ``inspect``: if the arguments do not bind, Python raised before entering the
        function (nothing ran) and the client is at fault (400); if they bind, the
        TypeError came from inside the function (500).
        """
        import inspect

        try:
            sig = inspect.signature(self.handler)
        except (TypeError, ValueError):
            return None
        try:
            sig.bind(**args)
        except TypeError as exc:
            params = ", ".join(sig.parameters) or "none"
            return (
                f"the arguments do not fit {self.name}{sig}: {exc}; "
                f"expected parameters: {params}"
            )
        return None

    def function_error(self, exc):
        import traceback

        # Skip the shim's own frame: the user's log should start at their code.
        tb = exc.__traceback__
        traceback.print_exception(type(exc), exc, tb.tb_next if tb else None, file=sys.stderr)
        sys.stderr.flush()
        text = str(exc)
        message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        return 500, error_body("FunctionError", message)


class _Quiet:
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    max_connections = 200  # replaced from ALLINONE_MAX_CONNECTIONS by make_server
    _slots = None

    def process_request(self, request, client_address):
        # Blocks the accept loop while every handler thread is busy: further
        # connections wait in the listen backlog, none is accepted and dropped.
        if self._slots is None:
            self._slots = threading.BoundedSemaphore(self.max_connections)
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        # A client that goes away mid-reply is routine (the activator drops a timed
        # out request); anything else is a shim bug worth a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class Server(_Quiet, socketserver.ThreadingTCPServer):
    """TCP ``$PORT``: the Knative export."""

    allow_reuse_address = True

    def get_request(self):
        conn, addr = self.socket.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


class UnixServer(_Quiet, socketserver.ThreadingUnixStreamServer):
    """The pod's Unix socket: the platform's data plane."""

    def server_bind(self):
        # A socket file left by an earlier run of this pod would make bind fail.
        try:
            os.unlink(self.server_address)
        except FileNotFoundError:
            pass
        old = os.umask(0o077)
        try:
            super().server_bind()
        finally:
            os.umask(old)


def make_server(environ):
    """The listening server the environment asks for, and a description of it."""
    limit = int(environ.get("ALLINONE_MAX_CONNECTIONS") or _Quiet.max_connections)
    if limit < 1:
        raise ValueError(f"ALLINONE_MAX_CONNECTIONS must be at least 1, not {limit}")
    _Quiet.max_connections = limit
    path = environ.get("ALLINONE_SOCKET")
    if path:
        return UnixServer(path, Handler), f"unix:{path}"
    # ALLINONE_PORT (a container on the host network, as some tests start one) serves
    # loopback only; anywhere else (Knative, plain docker run) the runtime sets PORT and
    # connects from outside the container.
    own_port = environ.get("ALLINONE_PORT")
    host = "127.0.0.1" if own_port else "0.0.0.0"
    port = int(own_port or environ.get("PORT") or "8080")
    return Server((host, port), Handler), f"{host}:{port}"


class Handler(socketserver.StreamRequestHandler):
    invoke = None  # set by main(): the Invoker of this process

    def handle(self):
        while self.handle_one():
            pass

    def handle_one(self):
        """Serve one request; True when the connection stays open for the next."""
        rfile = self.rfile
        line = rfile.readline(MAX_LINE + 1)
        if not line:
            return False
        try:
            method, target, version, headers = self.parse_head(line)
            keep_alive = self.wants_keep_alive(version, headers)
            # Read the body whatever the route: left unread it would be parsed as the
            # next request on this keep-alive connection.
            body = self.read_body(headers)
        except ProtocolError as exc:
            code = "PayloadTooLarge" if exc.status == 413 else "BadRequest"
            self.reply(exc.status, error_body(code, exc.message), False)
            return False
        path = target.split("?", 1)[0]
        if path == "/":
            if method == "POST":
                status, payload = self.invoke(body)
                self.reply(status, payload, keep_alive)
            else:
                self.reply(405, error_body("MethodNotAllowed", "invoke the function with POST /"),
                           keep_alive, b"Allow: POST\r\n")
        elif path == "/healthz":
            if method in ("GET", "HEAD"):
                self.reply(200, HEALTHZ_BODY, keep_alive, head=method == "HEAD")
            else:
                self.reply(405, error_body("MethodNotAllowed", "probe with GET /healthz"),
                           keep_alive, b"Allow: GET, HEAD\r\n")
        else:
            self.reply(404, error_body(
                "NotFound", f"no route {method} {path}: invoke with POST /, probe with GET /healthz"
            ), keep_alive)
        return keep_alive

    def parse_head(self, line):
        if len(line) > MAX_LINE:
            raise ProtocolError(400, "request line too long")
        parts = line.decode("latin-1").split()
        if len(parts) != 3:
            raise ProtocolError(400, f"malformed request line {line[:100]!r}")
        method, target, version = parts
        if not version.startswith("HTTP/1."):
            raise ProtocolError(505, f"unsupported protocol {version!r}; use HTTP/1.1")
        headers = {}
        for _ in range(MAX_HEADERS + 1):
            raw = self.rfile.readline(MAX_LINE + 1)
            if raw in (b"\r\n", b"\n"):
                return method, target, version, headers
            if not raw:
                raise ProtocolError(400, "connection closed inside the request headers")
            if len(raw) > MAX_LINE:
                raise ProtocolError(431, "header line too long")
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                raise ProtocolError(400, f"malformed header line {raw[:100]!r}")
            headers[name.strip().lower()] = value.strip()
        raise ProtocolError(431, f"more than {MAX_HEADERS} headers")

    @staticmethod
    def wants_keep_alive(version, headers):
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection

    def read_body(self, headers):
        if headers.get("expect", "").lower() == "100-continue":
            # curl waits up to 1 s for this before sending a body over 1 KB.
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self.read_chunked()
        length = headers.get("content-length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            raise ProtocolError(400, f"bad Content-Length {length!r}") from None
        if size < 0:
            raise ProtocolError(400, f"bad Content-Length {length!r}")
        if size > MAX_BODY:
            raise ProtocolError(413, f"request body over {MAX_BODY} bytes")
        body = self.rfile.read(size)
        if len(body) != size:
            raise ProtocolError(400, "connection closed inside the request body")
        return body

    def read_chunked(self):
        chunks = []
        total = 0
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(400, f"bad chunk size line {line[:100]!r}") from None
            if size == 0:
                # Trailers, if any, end with an empty line.
                while self.rfile.readline(MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                raise ProtocolError(413, f"request body over {MAX_BODY} bytes")
            chunk = self.rfile.read(size)
            self.rfile.readline(MAX_LINE + 1)  # the CRLF that ends the chunk
            if len(chunk) != size:
                raise ProtocolError(400, "connection closed inside a chunk")
            chunks.append(chunk)

    def reply(self, status, body, keep_alive, extra=b"", head=False):
        head_bytes = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
        ).encode() + extra + b"\r\n"
        # One write per reply: head and body in the same segment.
        self.wfile.write(head_bytes if head else head_bytes + body)


def main():
    handler_spec = os.environ.get("ALLINONE_HANDLER", "run")
    try:
        handler = load_handler(handler_spec)
    except BaseException:  # report any import failure, then exit
        import traceback

        print(f"allinone shim: cannot load handler {handler_spec!r}:", file=sys.stderr)
        traceback.print_exc()
        sys.stderr.flush()
        sys.exit(1)

    # As PID 1 in the container, SIGTERM would be ignored without a handler and
    # `docker stop` would wait its full grace period. The activator drains a pod
    # before it is removed, so exiting at once loses no request.
    def terminate(signum, frame):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, terminate)

    Handler.invoke = Invoker(handler, handler_spec.rpartition(".")[2])
    try:
        server, where = make_server(os.environ)
    except (OSError, ValueError) as exc:
        print(f"allinone shim: cannot listen: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"allinone shim: serving {handler_spec} on {where}", file=sys.stderr, flush=True)
    with server:
        server.serve_forever()


if __name__ == "__main__":
    main()
