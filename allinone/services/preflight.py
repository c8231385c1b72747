"""Checks ``allinone serve`` runs before it starts anything.

Without them a missing prerequisite shows up late and far from its cause: a port
taken by a second server surfaces as an etcd child exiting with a log line in a file,
a stopped Docker engine as the first build failing minutes later. Each check here
raises :class:`PreflightError` whose message is one line saying what is wrong and how
to fix it, which the CLI prints as is (no traceback) before exiting non-zero.

Invariants:

- Checks only look; they never start, stop or install anything (that is
  ``allinone setup``, :mod:`allinone.install`), except that :func:`check_state_dir`
  creates the state directory, which ``serve`` would do next anyway.
- Docker checks go through the docker SDK, the same path the server uses, with a short
  timeout so a hung daemon fails the check in seconds instead of hanging ``serve``.
- A port check binds the way the servers themselves do (``SO_REUSEADDR``), so a port
  left in TIME_WAIT by a server that just stopped counts as free, and a listener on
  any address that would collide with ours counts as taken.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DOCKER_TIMEOUT = 5.0


class PreflightError(Exception):
    """A prerequisite of ``allinone serve`` is missing; the message is one line with the
    reason and the fix."""

    def __init__(self, message: str) -> None:
        # Keep the promise of one line even when an OS message carries newlines.
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self.args[0])


def docker_host() -> str:
    """Where the docker SDK will connect (``docker.from_env`` reads ``DOCKER_HOST``)."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def _docker_client(timeout: float) -> docker.DockerClient:
    """A client that has already talked to the engine, or PreflightError."""
    host = docker_host()
    try:
        # from_env negotiates the API version, so constructing it is the first request.
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        if _permission_denied(exc):
            path = host.removeprefix("unix://")
            raise PreflightError(
                f"Docker at {host} refuses this user (permission denied on {path}): run as "
                "root, or add yourself to the docker group (`sudo usermod -aG docker $USER`, "
                "then log in again)"
            ) from None
        raise PreflightError(
            f"Docker does not answer at {host}: run `allinone setup` (or start dockerd)"
        ) from None


def _permission_denied(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PermissionError) or "Permission denied" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def check_docker(timeout: float = DOCKER_TIMEOUT) -> None:
    """The Docker engine answers a ping within ``timeout`` seconds."""
    _docker_client(timeout).close()


def check_base_image(name: str, timeout: float = DOCKER_TIMEOUT) -> None:
    """The base image every function image is built ``FROM`` exists in the engine.

    Builds never pull it (Docker Hub may be unreachable), so without it every deploy
    would fail; ``allinone setup`` pulls or builds it.
    """
    client = _docker_client(timeout)
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        raise PreflightError(
            f"the base image {name} is missing from Docker at {docker_host()}: "
            "run `allinone setup` (it pulls or builds it)"
        ) from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise PreflightError(
            f"Docker at {docker_host()} could not look up the base image {name} ({exc}): "
            "run `allinone setup`"
        ) from None
    finally:
        client.close()


def check_port_free(host: str, port: int, what: str, flag: str) -> None:
    """Nothing listens on ``host:port``, which ``what`` (say "the API" or "etcd") will
    listen on; ``flag`` is the option that picks another port, named in the fix."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PreflightError(
            f"cannot listen on {host}:{port} for {what}: {exc.strerror}: pass another host"
        ) from None
    family, socktype, proto, _, address = infos[0]
    with socket.socket(family, socktype, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(1)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PreflightError(
                    f"port {port} on {host} is in use (by another allinone serve?), "
                    f"and {what} needs it: stop it or pass {flag}"
                ) from None
            raise PreflightError(
                f"cannot listen on port {port} on {host} for {what} ({exc.strerror}): "
                f"pass another port with {flag}"
            ) from None


def check_state_dir(path: str | os.PathLike[str]) -> None:
    """The state directory exists (it is created if missing) and this user can write
    to it: etcd data, registry storage, sources and logs all live there."""
    state = Path(path).expanduser()
    fix = "fix its permissions or pass another --state-dir (or set ALLINONE_STATE_DIR)"
    if state.exists() and not state.is_dir():
        raise PreflightError(f"the state directory {state} is not a directory: {fix}")
    try:
        state.mkdir(parents=True, exist_ok=True)
        # Creating a file is the real test: access() lies on read-only mounts and
        # about root on some file systems.
        with tempfile.NamedTemporaryFile(dir=state, prefix=".preflight-"):
            pass
    except OSError as exc:
        raise PreflightError(
            f"the state directory {state} is not writable ({exc.strerror or exc}): {fix}"
        ) from None
