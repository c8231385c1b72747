"""A real ``allinone serve`` in a subprocess, spoken to through :mod:`allinone.client`.

Used by the integration tests and by ``python -m loadtests`` when it starts its own
server; :func:`live_server` is the one body of the test fixtures that serve one.

:class:`ServerProcess` runs the CLI exactly as a user does (``allinone serve``), in a
temporary state directory on free ports, with its own embedded etcd and registry. It
can be stopped and started again on the same state (the adoption test does). On
teardown it removes every container labelled with its instance, so a failed test never
leaves pods behind for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib.util
import io
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import docker
import requests

from allinone.client import Client, NotFound, Timeout, Unreachable, poll

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
# Debian's chromium (``allinone setup`` installs it), driven by Playwright without a
# browser download, with the flags that work offline and as root: the dashboard's
# browser tests and its first-paint benchmark.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--no-first-run")
# Where test servers find a registry storage that already holds the base image's layers.
SEED_ROOT = Path(os.environ.get("ALLINONE_TEST_REGISTRY_SEED", "/tmp/allinone-registry-seed"))


def registry_seed(base_image: str | None = None) -> Path | None:
    """A registry storage holding the base image, made once per base image id.

    Every test server starts its own empty registry, and its first build pushed the
    ~250 MB base layer into it: 9 s on an idle 2-core machine, 90-140 s while other
    work loaded it (past the deploy waits). The storage made here once is copied into
    each test server's state dir before it starts (:func:`seed_registry`), so its
    ``warm`` push finds every layer present. Returns None where it cannot be made (no
    Docker, no base image): the server then pushes as a user's server does.
    """
    from allinone.builder.builder import Builder
    from allinone.config import Settings
    from allinone.services.registry import RegistryProcess

    image = base_image or Settings().base_image
    try:
        image_id = str(docker.from_env(timeout=30).api.inspect_image(image)["Id"])
    except Exception:
        return None
    seed = SEED_ROOT / image_id.removeprefix("sha256:")[:16]
    if (seed / "registry").is_dir():
        return seed / "registry"
    SEED_ROOT.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".tmp-", dir=SEED_ROOT))
    registry = RegistryProcess(scratch, free_port())

    async def push() -> None:
        await registry.start()
        try:
            await Builder(image, registry.address, scratch / "build").warm()
        finally:
            await registry.stop()

    try:
        asyncio.run(push())
        os.rename(scratch, seed)  # appears whole or not at all
    except OSError:
        if not (seed / "registry").is_dir():  # not a lost race with another process
            return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return seed / "registry"


def seed_registry(state_dir: Path) -> None:
    """Give a new test server's registry the base image's layers (see :func:`registry_seed`).

    Blob data files are content-addressed and never written again, so they are hard
    links to the seed; everything else (links, upload state) is copied, so nothing a
    server writes reaches the seed.
    """
    target = state_dir / "registry"
    if target.exists():
        return  # a restarted server keeps its own storage
    seed = registry_seed()
    if seed is None:
        return

    def link_or_copy(src: str, dst: str) -> object:
        if os.path.basename(src) == "data" and "/blobs/" in src:
            try:
                os.link(src, dst)
                return dst
            except OSError:
                pass
        return shutil.copy2(src, dst)

    shutil.copytree(seed, target, copy_function=link_or_copy)


def free_port(pair: bool = False) -> int:
    """A free loopback port (and port+1 free too when ``pair``, for etcd's peer port).

    For a pair, the first port stays bound while port+1 is tried: released in between,
    another process (a parallel test asking for a port) could take it, and the pair
    handed out would not be free. Free ports are still only free at the moment of the
    check; the servers that take them bind soon after.
    """
    for _ in range(200):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            if not pair:
                return port
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port pair")


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket: how the platform reaches a pod."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("pod", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def make_zip(entries: dict[str, bytes], *, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip archive in memory holding ``entries`` (name -> bytes), as an upload."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def load_module(path: Path, name: str) -> ModuleType:
    """Import the Python file at ``path`` as module ``name`` (fixtures are no package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.asynccontextmanager
async def running(*loops: Coroutine[Any, Any, Any]) -> AsyncIterator[None]:
    """Run ``loops`` as tasks for the body of the ``async with``; cancel them after."""
    tasks = [asyncio.ensure_future(c) for c in loops]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def until(cond: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Let the event loop run until ``cond()`` is true; AssertionError after ``timeout``.

    The unit tests' wait for another task (an informer, a loop, a fake pod's I/O): it
    waits for a condition, never for a while. Each turn yields to the loop for 1 ms at
    most (the unit tests' sleep guard, tests/unit/conftest.py, allows that); the time-out
    only bounds a test whose condition never comes.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {timeout:g} s: {what}")
        await asyncio.sleep(0.001)


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``cond`` until true (the client's one wait loop); AssertionError on time-out."""
    try:
        return poll(cond, timeout, what, interval)
    except Timeout as exc:
        raise AssertionError(str(exc)) from None


class ServerProcess:
    def __init__(self, state_dir: Path, tick: float = 0.5,
                 extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 nofile_soft: int | None = None) -> None:
        self.extra_args = extra_args
        # The soft open-files limit serve starts with (None: this process's), e.g. 1024
        # as systemd gives a service: serve must raise it itself (allinone.fdlimit).
        self.nofile_soft = nofile_soft
        # Added to (or overriding) this process's environment for the server.
        self.env = dict(env or {})
        self.state_dir = state_dir
        self.port = free_port()
        self.etcd_port = free_port(pair=True)
        self.registry_port = free_port()
        self.tick = tick
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir / "serve.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = Client(self.url)

    @property
    def http(self) -> requests.Session:
        """The client's session (with the token), for tests of the raw HTTP contract."""
        return self.client.session

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    def start(self, timeout: float = 60.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if "--registry" not in self.extra_args:
            seed_registry(self.state_dir)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "allinone.cli", "serve", "--state-dir", str(self.state_dir),
             "--port", str(self.port), "--etcd-port", str(self.etcd_port),
             "--registry-port", str(self.registry_port), "--tick", str(self.tick),
             *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **self.env},
            preexec_fn=None if self.nofile_soft is None else self._lower_nofile,
        )
        log.close()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"allinone serve exited {self.proc.returncode}:\n"
                                     + self.log_tail())
            try:
                return self.client.request("GET", "/healthz", timeout=1).status_code == 200
            except Unreachable:
                # Also a time-out: serve listens before its start-up is done (it owns its
                # socket), so an early connection waits in the backlog.
                return False
        wait_for(up, timeout, "allinone serve to answer /healthz")
        # The server made its API token at start; send it (ignored where not required).
        self.client = Client(self.url, token=self.token())

    def _lower_nofile(self) -> None:
        """In the child before exec: only a setrlimit call (preexec_fn runs after fork)."""
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert self.nofile_soft is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(self.nofile_soft, hard), hard))

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the server and remove every container of its instance."""
        self.stop()
        self.cleanup_containers()

    def token(self) -> str:
        from allinone.auth import TOKEN_FILENAME, read_token
        token = read_token(self.state_dir / TOKEN_FILENAME)
        if token is None:
            raise AssertionError(f"the server wrote no token to {self.state_dir}")
        return token

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def instance(self) -> str:
        from allinone.config import Settings
        return Settings(state_dir=self.state_dir).instance

    @property
    def standby_status(self) -> str | None:
        """Docker's status of this server's standby containers (the kubelet's, for a
        function at zero): ``paused`` when frozen (the default), ``created``, or None."""
        from allinone.config import Settings
        args = list(self.extra_args)
        if "--no-standby" in args:
            return None
        mode = args[args.index("--standby") + 1] if "--standby" in args else Settings.standby
        return {"frozen": "paused", "created": "created"}.get(mode)

    def containers(self, function: str | None = None, all: bool = False,
                   standby: bool = True) -> list[Any]:
        """This server's containers (of ``function``): running ones (paused count as
        running for Docker), or ``all``; without ``standby``, not those with the status
        of its standby containers (:attr:`standby_status`: on a server that also keeps
        paused pods, start it with ``--standby created`` to tell them apart)."""
        client = docker.from_env()
        try:
            labels = ["allinone.managed=1", f"allinone.instance={self.instance()}"]
            if function:
                labels.append(f"allinone.function={function}")
            # ignore_removed: a pod removed between the list and its inspect is no error.
            found = client.containers.list(all=all, filters={"label": labels},
                                           ignore_removed=True)
            hidden = None if standby else self.standby_status
            return [c for c in found if c.status != hidden]
        finally:
            client.close()

    def cleanup_containers(self) -> None:
        """Remove every container of this server's instance, then the local images it
        pushed to its registry (the server is gone: nothing else removes them, and each
        test run left some 180 MB images behind)."""
        for c in self.containers(all=True):
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass
        client = docker.from_env()
        try:
            prefix = f"{self.registry}/"
            for image in client.images.list():
                for tag in image.tags:
                    if tag.startswith(prefix):  # not forced: an image in use stays
                        with contextlib.suppress(docker.errors.APIError):
                            client.images.remove(tag)
        finally:
            client.close()

    # -- API helpers (thin: the client does the work) ----------------------------------

    def deploy(self, name: str, path: Path, spec: dict[str, Any] | None = None,
               wait: bool = True, filename: str | None = None) -> requests.Response:
        resp = self.client.raw_create(name, (filename or path.name, path.read_bytes()), spec)
        if wait and resp.status_code == 201:
            self.wait_phase(name, "Ready")
        return resp

    def update(self, name: str, path: Path | None = None,
               spec: dict[str, Any] | None = None) -> requests.Response:
        return self.client.raw_update(name, (path.name, path.read_bytes()) if path else None,
                                      spec)

    def get(self, name: str) -> dict[str, Any]:
        return self.client.get(name)

    def wait_phase(self, name: str, phase: str, timeout: float = 300) -> dict[str, Any]:
        """The function once its latest generation is ``phase`` (Ready or Failed).

        300 s: the first build of a fresh server pushes the base image, which takes two
        minutes on a 2-core machine busy with other test runs.
        """
        try:
            fn = self.client.wait_built(name, timeout=timeout)
        except Timeout as exc:
            raise AssertionError(str(exc)) from None
        if fn["status"]["phase"] != phase:
            raise AssertionError(f"{name} is {fn['status']['phase']}, not {phase}: "
                                 f"{fn['status'].get('message')}")
        return fn

    def invoke(self, name: str, body: Any, timeout: float = 120) -> requests.Response:
        return self.client.invoke(name, body, timeout=timeout)

    def replicaset(self, name: str) -> dict[str, Any]:
        return self.client.replicaset(name)

    def pods(self, name: str) -> list[dict[str, Any]]:
        return self.client.pods(name)

    def gone(self, name: str) -> bool:
        """Neither the function nor its ReplicaSet exists."""
        try:
            self.client.replicaset(name)
        except NotFound:
            return self.client.find(name) is None
        return False

    def delete(self, name: str) -> requests.Response:
        return self.client.request("DELETE", f"/api/v1/functions/{name}")

    def registry_tags(self, name: str) -> list[str]:
        resp = requests.get(f"http://{self.registry}/v2/allinone/{name}/tags/list", timeout=5)
        if resp.status_code == 404:
            return []
        tags: list[str] = resp.json().get("tags") or []
        return tags


def live_server(tmp_path_factory: Any, name: str, **kwargs: Any) -> Iterator[ServerProcess]:
    """The body of a pytest fixture serving one ``ServerProcess`` (``kwargs``: its
    options) in a fresh temporary state dir named after ``name``: started, yielded, then
    stopped and its containers removed, however the tests went. Use it with
    ``yield from``."""
    with ServerProcess(Path(tmp_path_factory.mktemp(name)), **kwargs) as srv:
        yield srv


def launch_chromium(playwright: Any) -> Any:
    """A headless :data:`CHROMIUM` browser from a started Playwright (sync API)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS),
                                      headless=True)
