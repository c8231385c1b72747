"""The checks ``allinone serve`` runs before starting: each failure is one line naming
the cause and the fix. Port and state-dir checks use real sockets and a temporary
directory; the Docker checks use a fake ``docker.from_env`` so no engine is needed."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from allinone.services.preflight import (
    PreflightError,
    check_base_image,
    check_docker,
    check_port_free,
    check_state_dir,
)


@pytest.fixture
def listener() -> Iterator[int]:
    """A port on 127.0.0.1 that something listens on, as another server would."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_taken_port_names_the_port_and_the_flag(listener: int) -> None:
    with pytest.raises(PreflightError) as info:
        check_port_free("127.0.0.1", listener, "the API", "--port")
    message = str(info.value)
    assert f"port {listener} on 127.0.0.1 is in use" in message
    assert "--port" in message
    assert "\n" not in message


def test_port_taken_on_all_interfaces_counts_as_taken() -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        with pytest.raises(PreflightError, match="--etcd-port"):
            check_port_free("127.0.0.1", port, "etcd", "--etcd-port")


def listen_again(port: int) -> None:
    """What the server does after the check: it must be able to listen on the port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(1)


def test_free_port_passes() -> None:
    port = free_port()
    assert check_port_free("127.0.0.1", port, "the API", "--port") is None
    listen_again(port)  # the check let go of the port it probed


def test_port_in_time_wait_counts_as_free() -> None:
    # A server that just stopped leaves its port in TIME_WAIT; it can listen again at
    # once (SO_REUSEADDR), so the check must not send the user to --port.
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # the server side closes first, so it holds the TIME_WAIT
        client.close()
    assert check_port_free("127.0.0.1", port, "the API", "--port") is None
    listen_again(port)


def test_state_dir_is_created_and_left_clean(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b"
    check_state_dir(state)
    assert state.is_dir()
    assert list(state.iterdir()) == []


def test_state_dir_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(PreflightError, match="not a directory"):
        check_state_dir(path)


def as_user(uid: int, check: Callable[[], None]) -> str:
    """Run ``check`` in a forked child with ``uid`` (root may drop to any user); the
    PreflightError message it raised, or "passed"."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        try:
            os.setgid(uid)
            os.setuid(uid)
            try:
                check()
                out = "passed"
            except PreflightError as exc:
                out = str(exc)
        except BaseException as exc:  # report anything else to the parent
            out = f"unexpected {exc!r}"
        os.write(write, out.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        out = pipe.read().decode()
    os.waitpid(pid, 0)
    return out


def test_state_dir_not_writable() -> None:
    # Root writes anywhere, and CI runs as root: there the check runs in a child that
    # dropped to an unprivileged uid, on a directory that uid can reach but not write.
    base = Path(tempfile.mkdtemp(prefix="allinone-preflight-"))
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        if os.geteuid() == 0:
            message = as_user(65534, lambda: check_state_dir(locked))
        else:
            with pytest.raises(PreflightError) as info:
                check_state_dir(locked)
            message = str(info.value)
        assert message.startswith(f"the state directory {locked} is not writable ("), message
        assert message.endswith("pass another --state-dir (or set ALLINONE_STATE_DIR)")
        assert list(locked.iterdir()) == []  # the probe file left nothing behind
    finally:
        shutil.rmtree(base)


class FakeImages:
    def __init__(self, present: set[str]) -> None:
        self.present = present

    def get(self, name: str) -> object:
        if name not in self.present:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return object()


class FakeClient:
    def __init__(self, present: set[str]) -> None:
        self.images = FakeImages(present)
        self.closed = False

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


def test_missing_base_image_says_run_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeClient(present=set())
    monkeypatch.setattr(docker, "from_env", lambda **_: client)
    with pytest.raises(PreflightError) as info:
        check_base_image("allinone/python-base:bookworm")
    message = str(info.value)
    assert "allinone/python-base:bookworm is missing" in message
    assert "allinone setup" in message
    assert client.closed


def test_present_base_image_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    clients: list[FakeClient] = []

    def from_env(**kw: Any) -> FakeClient:
        assert kw == {"timeout": 5.0}  # a hung daemon fails the check in seconds
        clients.append(FakeClient(present={"img:1"}))
        return clients[-1]

    monkeypatch.setattr(docker, "from_env", from_env)
    assert check_base_image("img:1") is None
    assert check_docker() is None
    assert [c.closed for c in clients] == [True, True]  # no client left open


def test_docker_not_answering(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**_: Any) -> None:
        raise docker.errors.DockerException("Error while fetching server API version")

    monkeypatch.setattr(docker, "from_env", refuse)
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/allinone-test-nope.sock")
    with pytest.raises(PreflightError) as info:
        check_docker()
    assert str(info.value) == (
        "Docker does not answer at unix:///tmp/allinone-test-nope.sock: "
        "run `allinone setup` (or start dockerd)"
    )


def test_docker_socket_permission_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    def deny(**_: Any) -> None:
        try:
            raise PermissionError(13, "Permission denied")
        except PermissionError as exc:
            raise docker.errors.DockerException("Error while fetching server API version") \
                from exc

    monkeypatch.setattr(docker, "from_env", deny)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    with pytest.raises(PreflightError, match="docker group"):
        check_docker()


def test_message_is_one_line() -> None:
    assert str(PreflightError("a\nb  c")) == "a b c"
