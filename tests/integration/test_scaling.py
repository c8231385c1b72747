"""Knative-grade scaling on real Docker (issue 3): bursts at zero, steady load to the
KPA's count and back to zero, rollouts and scale-down under load without one failed
request, and containerConcurrency enforced per pod.

Every scenario asserts behaviour (status codes, replica counts, what pods saw), never
timings: these machines are shared and noisy. The times printed with ``-s`` are for
the issue note.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from allinone.testing import FIXTURES, ServerProcess, wait_for
from loadtests.loadgen import burst, run_load

pytestmark = pytest.mark.integration


def ready(server: ServerProcess, name: str) -> int:
    n: int = server.get(name)["status"].get("readyReplicas", 0)
    return n


async def test_burst_of_100_at_zero_all_succeed(server: ServerProcess) -> None:
    spec = {"scaling": {"maxScale": 4}}
    assert server.deploy("burst", FIXTURES / "add.py", spec=spec).status_code == 201
    assert ready(server, "burst") == 0
    result = await burst(server.url + "/function/burst", 100, {"x": 1, "y": 2})
    assert len(result.outcomes) == 100
    assert result.failures == [], result.summary()
    assert result.outcomes and all(o.body == 3 for o in result.outcomes)


async def test_steady_load_reaches_kpa_count_then_zero(server: ServerProcess) -> None:
    # 40 users in a closed loop on a 200 ms function keep ~40 requests in flight.
    # target 5 at 100 % utilisation -> ceil(40 / 5) = 8 pods.
    users, target = 40, 5
    expected = math.ceil(users / target)
    spec = {"scaling": {"target": target, "targetUtilizationPercentage": 100, "maxScale": 10,
                        "stableWindowSeconds": 6, "scaleToZeroGracePeriodSeconds": 2}}
    assert server.deploy("steady", FIXTURES / "sleep.py", spec=spec).status_code == 201
    url = server.url + "/function/steady"
    stop = asyncio.Event()
    load = asyncio.ensure_future(run_load(url, users, 60, {"ms": 200}, stop=stop))
    t0 = time.monotonic()
    reached = None
    try:
        while time.monotonic() - t0 < 45:
            await asyncio.sleep(0.25)
            n = await asyncio.to_thread(ready, server, "steady")
            if n >= expected:
                reached = time.monotonic() - t0
                break
    finally:
        stop.set()
        result = await load
    assert reached is not None, f"ready pods never reached {expected}"
    print(f"\nstep 0 -> {users} users: {expected} pods Ready after {reached:.2f} s")
    assert result.failures == [], result.summary()
    assert server.replicaset("steady")["spec"]["replicas"] >= expected
    wait_for(lambda: server.replicaset("steady")["spec"]["replicas"] == 0, 60, "scale to zero")
    wait_for(lambda: server.containers("steady", all=True, standby=False) == [], 30,
             "containers removed")


async def test_rollout_under_load_fails_nothing(server: ServerProcess, tmp_path: Path) -> None:
    spec = {"scaling": {"minScale": 2, "maxScale": 4}}
    assert server.deploy("roll", FIXTURES / "concurrency.py", spec=spec).status_code == 201
    wait_for(lambda: ready(server, "roll") >= 2, 30, "2 ready pods")
    old_hash = server.replicaset("roll")["spec"]["templateHash"]
    url = server.url + "/function/roll"
    stop = asyncio.Event()
    load = asyncio.ensure_future(run_load(url, 8, 90, {"ms": 30}, stop=stop))
    try:
        await asyncio.sleep(1.5)
        v2 = tmp_path / "concurrency.py"  # the same function, answering "version": 2
        v2.write_text((FIXTURES / "concurrency.py").read_text().replace(
            '"version": 1}', '"version": 2}'))
        r = await asyncio.to_thread(server.update, "roll", v2)
        assert r.status_code == 200, r.text
        await asyncio.to_thread(server.wait_phase, "roll", "Ready")
        new_hash = server.replicaset("roll")["spec"]["templateHash"]
        assert new_hash != old_hash

        def only_new() -> bool:
            pods = server.pods("roll")
            return bool(pods) and all(p["spec"]["templateHash"] == new_hash and
                                      p["status"]["ready"] for p in pods)
        await asyncio.to_thread(wait_for, only_new, 60, "only new-generation pods")
        await asyncio.sleep(1.5)
    finally:
        stop.set()
        result = await load
    assert result.failures == [], result.summary()
    versions = [o.body["version"] for o in result.outcomes]
    assert versions[0] == 1 and versions[-1] == 2
    assert len(server.containers("roll", all=True)) == len(server.pods("roll"))


async def test_container_concurrency_one_is_never_exceeded(server: ServerProcess) -> None:
    spec = {"scaling": {"containerConcurrency": 1, "minScale": 4, "maxScale": 4}}
    assert server.deploy("cc1", FIXTURES / "concurrency.py", spec=spec).status_code == 201
    wait_for(lambda: ready(server, "cc1") == 4, 30, "4 ready pods")
    result = await run_load(server.url + "/function/cc1", 8, 5, {"ms": 50})
    assert result.failures == [], result.summary()
    assert {o.body["max_seen"] for o in result.outcomes} == {1}
    assert len({o.body["pod"] for o in result.outcomes}) == 4


async def test_scale_down_under_load_fails_nothing(server: ServerProcess) -> None:
    # 20 users / target 5 -> 4 pods; then 2 users -> the KPA scales down to 1 while
    # requests keep flowing, and the drained pods must finish what they were given.
    spec = {"scaling": {"target": 5, "targetUtilizationPercentage": 100, "maxScale": 6,
                        "stableWindowSeconds": 6, "scaleToZeroGracePeriodSeconds": 30}}
    assert server.deploy("down", FIXTURES / "sleep.py", spec=spec).status_code == 201
    url = server.url + "/function/down"
    high = await run_load(url, 20, 8, {"ms": 100})
    peak = server.replicaset("down")["spec"]["replicas"]
    assert peak >= 3, f"only {peak} replicas under 20 users"
    stop = asyncio.Event()
    low_task = asyncio.ensure_future(run_load(url, 2, 40, {"ms": 100}, stop=stop))
    stop_at = time.monotonic() + 40
    lowest = peak
    while time.monotonic() < stop_at and lowest > 1:
        await asyncio.sleep(0.5)
        lowest = min(lowest, await asyncio.to_thread(
            lambda: server.replicaset("down")["spec"]["replicas"]))
    await asyncio.sleep(2)  # keep the load on while the removed pods drain
    stop.set()
    low = await low_task
    # 2 users at target 5 need one pod: the KPA must get all the way down to it.
    assert lowest == 1, f"scaled down from {peak} only to {lowest} replicas"
    assert high.failures == [] and low.failures == [], (high.summary(), low.summary())
