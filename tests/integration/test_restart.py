"""A restart of ``allinone serve`` adopts running pods: no duplicate, no stray (issue 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from allinone.testing import FIXTURES, ServerProcess, wait_for

pytestmark = pytest.mark.integration


def test_restart_adopts_running_pod(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "state")
    srv.start()
    try:
        spec = {"scaling": {"minScale": 1}}
        assert srv.deploy("sticky", FIXTURES / "add.py", spec=spec).status_code == 201
        assert srv.invoke("sticky", {"x": 2, "y": 2}).json() == 4
        wait_for(lambda: len(srv.containers("sticky")) == 1, 30, "one pod")
        (before,) = srv.containers("sticky")

        srv.stop()
        # The pod outlives the server.
        assert [c.id for c in srv.containers("sticky")] == [before.id]
        srv.start()

        assert srv.invoke("sticky", {"x": 2, "y": 3}).json() == 5
        wait_for(lambda: srv.get("sticky")["status"].get("readyReplicas") == 1, 30, "adopted")
        after = srv.containers("sticky", all=True)
        assert [c.id for c in after] == [before.id]  # adopted, not replaced or duplicated
        assert len(srv.pods("sticky")) == 1
    finally:
        srv.stop()
        srv.cleanup_containers()
