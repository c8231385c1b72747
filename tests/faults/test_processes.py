"""Rows of the matrix where a process dies: serve (SIGKILL, SIGTERM), etcd, registry.

In file order on one server: the registry, etcd, then serve itself are killed; the
SIGTERM drain ends the server, so it comes last.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
import requests

from allinone.services.process import read_pidfile
from allinone.testing import FIXTURES, ServerProcess, wait_for
from tests.faults.conftest import Stopwatch, child_pid, readyz, record

pytestmark = pytest.mark.faults


def test_etcd_killed_is_restarted_and_watches_resume(server: ServerProcess) -> None:
    assert server.deploy("steady", FIXTURES / "add.py",
                         spec={"scaling": {"minScale": 1}}).status_code == 201
    wait_for(lambda: server.get("steady")["status"].get("readyReplicas") == 1, 30, "warm pod")
    pid = child_pid(server, "etcd")

    clock = Stopwatch()
    os.kill(pid, signal.SIGKILL)
    served = failed = 0
    # The warm function keeps serving through the outage (the data plane routes from
    # memory) while the supervisor restarts etcd.
    def api_ok() -> bool:
        nonlocal served, failed
        r = server.invoke("steady", {"x": 1, "y": 1}, timeout=10)
        served, failed = served + (r.status_code == 200), failed + (r.status_code != 200)
        return server.http.get(server.url + "/api/v1/functions/steady",
                               timeout=10).status_code == 200
    wait_for(api_ok, 30, "the API to answer again")
    api_back = clock()
    new_pid = child_pid(server, "etcd")
    assert new_pid != pid
    status: Any = readyz(server)
    assert status["components"]["etcd"]["restarts"] >= 1
    wait_for(lambda: readyz(server).get("status") == "ready", 30, "/readyz ready")
    # Watches resumed: a change made now reaches the informers (the build reconciler
    # sees the new generation and the activator the new status).
    assert server.update("steady", spec={"timeoutSeconds": 30}).status_code == 200
    server.wait_phase("steady", "Ready", timeout=30)
    assert server.invoke("steady", {"x": 2, "y": 2}).json() == 4
    assert failed == 0
    record("etcd killed", seconds_to_api=api_back, invocations_during_outage=served,
           requests_lost=failed)


def test_readyz_reports_a_dead_child_and_healthz_stays_liveness(
        server: ServerProcess) -> None:
    pid = child_pid(server, "registry")
    os.kill(pid, signal.SIGSTOP)  # hung, not dead: reported, not yet killed (30 s)
    try:
        def unhealthy() -> bool:
            body: Any = readyz(server)
            return body["components"]["registry"]["state"] == "unhealthy"
        wait_for(unhealthy, 15, "/readyz to report the registry unhealthy")
        assert server.http.get(server.url + "/readyz").status_code == 503
        assert server.http.get(server.url + "/healthz").status_code == 200
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: readyz(server).get("status") == "ready", 15, "/readyz ready again")


def test_registry_killed_then_deploy_builds_by_itself(server: ServerProcess) -> None:
    pid = child_pid(server, "registry")
    clock = Stopwatch()
    os.kill(pid, signal.SIGKILL)
    resp = server.deploy("after-registry", FIXTURES / "add.py", wait=False)
    assert resp.status_code == 201
    server.wait_phase("after-registry", "Ready", timeout=90)
    ready = clock()
    assert child_pid(server, "registry") != pid
    assert server.invoke("after-registry", {"x": 1, "y": 2}).json() == 3
    record("registry killed, then deploy", seconds_to_ready=ready, deploys_lost=0)


def test_failed_function_is_rebuilt_when_the_same_source_is_deployed(
        server: ServerProcess) -> None:
    assert server.deploy("again", FIXTURES / "add.py").status_code == 201
    fn = server.get("again")
    # A failure recorded by an earlier run (say the engine was gone then), written
    # straight into etcd as the reconciler would have.
    import asyncio

    from allinone import objects
    from allinone.store.etcd import EtcdStore

    async def fail_it() -> None:
        store = await EtcdStore.connect(f"http://127.0.0.1:{server.etcd_port}")
        try:
            obj = await store.get(objects.function_key("again"))
            obj["status"] = {"phase": "Failed", "message": "engine unreachable",
                             "observedGeneration": obj["metadata"]["generation"]}
            await store.update(objects.function_key("again"), obj)
        finally:
            await store.close()
    asyncio.run(fail_it())
    wait_for(lambda: server.get("again")["status"]["phase"] == "Failed", 10, "Failed")
    resp = server.update("again", path=FIXTURES / "add.py")
    assert resp.status_code == 200
    assert resp.json()["metadata"]["generation"] == fn["metadata"]["generation"] + 1
    server.wait_phase("again", "Ready", timeout=60)
    assert server.invoke("again", {"x": 4, "y": 4}).json() == 8


def test_sigkill_serve_then_same_command_recovers(server: ServerProcess) -> None:
    assert server.deploy("sticky", FIXTURES / "add.py",
                         spec={"scaling": {"minScale": 1}}).status_code == 201
    wait_for(lambda: server.get("sticky")["status"].get("readyReplicas") == 1, 30, "warm pod")
    (pod,) = server.containers("sticky")
    etcd, registry = child_pid(server, "etcd"), child_pid(server, "registry")
    old = {n: read_pidfile(server.state_dir / "run" / f"{n}.pid") for n in ("etcd", "registry")}

    assert server.proc is not None
    server.proc.kill()
    server.proc.wait()
    server.proc = None
    # The children outlive serve, holding their ports: what used to refuse the restart.
    assert all(r is not None and r.alive() for r in old.values())

    clock = Stopwatch()
    server.start()  # the same command, same state dir and ports
    started = clock()
    assert all(r is not None and not r.alive() for r in old.values()), \
        "the children of the killed run were not stopped"
    assert child_pid(server, "etcd") != etcd and child_pid(server, "registry") != registry
    assert server.invoke("sticky", {"x": 2, "y": 3}).json() == 5
    wait_for(lambda: server.get("sticky")["status"].get("readyReplicas") == 1, 30, "adopted")
    assert [c.id for c in server.containers("sticky", all=True)] == [pod.id]  # no duplicate
    assert len(server.pods("sticky")) == 1
    wait_for(lambda: readyz(server).get("status") == "ready", 30, "/readyz ready")
    record("serve SIGKILL + same command", seconds_to_healthz=started, requests_lost=0,
           adopted_pods=1, strays=0)


def test_sigterm_drains_requests_in_flight(server: ServerProcess) -> None:
    assert server.deploy("slow", FIXTURES / "sleep.py",
                         spec={"scaling": {"minScale": 2}}).status_code == 201
    wait_for(lambda: server.get("slow")["status"].get("readyReplicas") == 2, 30, "warm pods")
    results: list[int | str] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            r = requests.post(server.url + "/function/slow", json={"ms": 3000}, timeout=30)
            out: int | str = r.status_code
        except requests.RequestException as exc:
            out = type(exc).__name__
        with lock:
            results.append(out)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    # All 20 are in flight once the activator counts them on pods.
    time.sleep(1.0)
    assert server.proc is not None
    clock = Stopwatch()
    server.proc.send_signal(signal.SIGTERM)
    # Stopped accepting at once: a new connection is refused while the 20 drain.
    def refused() -> bool:
        try:
            requests.get(server.url + "/healthz", timeout=1)
            return False
        except requests.ConnectionError:
            return True
    wait_for(refused, 2, "new connections to be refused")
    for t in threads:
        t.join(30)
    server.proc.wait(40)
    stopped = clock()
    server.proc = None
    lost = [r for r in results if r != 200]
    assert len(results) == 20 and not lost, results
    assert "drained" in server.log_tail(200)
    record("SIGTERM with 20 x 3 s in flight", requests_lost=len(lost),
           seconds_to_exit=stopped)
