"""Opt-in paused pods (``allinone serve --keep-paused``): a scaled-down pod is frozen and
the next request resumes the same container instead of starting a new one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from allinone.testing import FIXTURES, ServerProcess, wait_for

pytestmark = pytest.mark.integration


def test_scale_to_zero_pauses_and_the_next_request_resumes(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "state",
                        extra_args=("--keep-paused", "60", "--standby", "created"))
    srv.start()
    try:
        spec = {"scaling": {"scaleToZeroGracePeriodSeconds": 1, "stableWindowSeconds": 6}}
        assert srv.deploy("nap", FIXTURES / "add.py", spec=spec, wait=False).status_code == 201
        # The first build of a fresh server pushes the base image: minutes on a busy machine.
        srv.wait_phase("nap", "Ready", timeout=600)
        assert srv.invoke("nap", {"x": 1, "y": 1}).json() == 2
        (first,) = srv.containers("nap")
        wait_for(lambda: srv.replicaset("nap")["spec"]["replicas"] == 0, 30, "scale to zero")
        wait_for(lambda: srv.pods("nap") == [], 30, "pod objects gone")

        def paused() -> bool:
            # Not the standby (created, never started), if one was made while the
            # function first scaled up: a paused pod is used before it.
            (c,) = srv.containers("nap", all=True, standby=False)
            c.reload()
            return bool(c.status == "paused" and c.id == first.id)
        wait_for(paused, 10, "the container to be paused")
        assert srv.get("nap")["status"]["readyReplicas"] == 0

        t0 = time.monotonic()
        r = srv.invoke("nap", {"x": 2, "y": 3})
        print(f"\nfirst request after pause: {1000 * (time.monotonic() - t0):.0f} ms")
        assert r.status_code == 200 and r.json() == 5
        (again,) = srv.containers("nap", all=True, standby=False)
        assert again.id == first.id  # resumed, not a new container

        assert srv.delete("nap").status_code == 200
        wait_for(lambda: srv.containers("nap", all=True) == [], 30, "containers removed")
    finally:
        srv.stop()
        srv.cleanup_containers()
