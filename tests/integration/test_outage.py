"""The data plane keeps serving warm functions while etcd and the registry are down
(DESIGN.md): the activator routes from memory, and the control plane catches up after."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from allinone.testing import FIXTURES, ServerProcess, wait_for

pytestmark = pytest.mark.integration


def child_pids(server: ServerProcess, marker: str) -> list[int]:
    """Pids of processes whose command line mentions ``marker`` (under our state dir)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(server.state_dir) in cmd and marker in cmd:
            pids.append(int(entry))
    return pids


@contextmanager
def frozen(pids: list[int]) -> Iterator[None]:
    """SIGSTOP: the process holds its sockets but answers nothing, like a hung service."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def test_warm_function_serves_while_etcd_and_registry_are_down(server: ServerProcess) -> None:
    spec = {"scaling": {"minScale": 1}}
    assert server.deploy("outage", FIXTURES / "add.py", spec=spec).status_code == 201
    wait_for(lambda: server.get("outage")["status"].get("readyReplicas") == 1, 30, "warm pod")
    etcd = child_pids(server, "etcd --name")
    registry = child_pids(server, "registry.yml")
    assert etcd and registry
    with frozen(etcd + registry):
        for i in range(50):
            r = server.invoke("outage", {"x": i, "y": 1}, timeout=5)
            assert r.status_code == 200 and r.json() == i + 1
    # The control plane works again afterwards.
    assert server.update("outage", spec={"scaling": {"maxScale": 2}}).status_code == 200
    server.wait_phase("outage", "Ready")
