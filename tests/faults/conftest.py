"""The fault matrix (issue 8): real ``allinone serve`` processes, real etcd, registry
and Docker, and real faults (SIGKILL, SIGTERM, malformed objects, hostile uploads).

Each module shares one server (a fresh registry costs a ~250 MB base-image push, which
dominates a test's time on a loaded machine); its tests run in file order, and each
leaves the server recovered for the next, which is itself part of what is proven. Every
test prints, for the record, what it measured: time to recover and requests lost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from allinone.services.process import read_pidfile
from allinone.testing import ServerProcess, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(Path(tmp_path_factory.mktemp("faults")) / "state")
    srv.start()
    try:
        # The base image's ~250 MB go to the fresh registry first (minutes on a loaded
        # machine); builds wait for that push, so tests start after it.
        wait_for(lambda: registry_tags(srv, "allinone-base/python") == ["latest"], 600,
                 "the base image push")
        yield srv
    finally:
        srv.stop()
        srv.cleanup_containers()
        # A test may have SIGKILLed serve: stop what it left (etcd, registry).
        from allinone.services.process import stop_leftovers
        stop_leftovers(srv.state_dir / "run")


def registry_tags(server: ServerProcess, repo: str) -> list[str] | None:
    """Tags of ``repo`` in the server's registry; None while it does not answer (it is
    stopped for a second while its garbage is collected)."""
    try:
        resp = requests.get(f"http://{server.registry}/v2/{repo}/tags/list", timeout=5)
    except requests.ConnectionError:
        return None
    if resp.status_code == 404:
        return []
    tags: list[str] = resp.json().get("tags") or []
    return tags


def child_pid(server: ServerProcess, name: str) -> int:
    record = read_pidfile(server.state_dir / "run" / f"{name}.pid")
    assert record is not None and record.alive(), f"no live {name} recorded"
    return record.pid


def readyz(server: ServerProcess) -> dict[str, object]:
    try:
        resp = server.http.get(server.url + "/readyz", timeout=5)
    except Exception as exc:  # the server itself is down
        return {"status": f"unreachable: {exc}"}
    out: dict[str, object] = resp.json()
    return out


def record(row: str, **figures: object) -> None:
    """One line per row of the matrix, collected from the test output (-s or -rA)."""
    print(f"FAULT-MATRIX {row}: {json.dumps(figures)}")


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self) -> float:
        return round(time.monotonic() - self.started, 2)
