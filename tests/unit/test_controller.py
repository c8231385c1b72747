"""The ReplicaSet controller against the in-memory store and container runtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from allinone import objects
from allinone.clock import ManualClock
from allinone.controller.replicaset import PortAllocator, ReplicaSetController
from allinone.informer import Informer
from allinone.runtime.memory import MemoryRuntime
from allinone.store.memory import MemoryStore


class Sink:
    """Records what the controller tells the data plane."""

    def __init__(self) -> None:
        self.ready: dict[str, str] = {}
        self.drained: list[str] = []
        self.failed: list[tuple[str, str]] = []

    def pod_failed(self, function: str, pod: str, message: str) -> None:
        self.failed.append((pod, message))

    def pod_ready(self, function: str, pod: str, address: str) -> None:
        self.ready[pod] = address

    async def drain(self, function: str, pod: str, timeout: float) -> None:
        self.drained.append(pod)
        self.ready.pop(pod, None)


TEMPLATE = {"image": "reg/allinone/f@sha256:1", "handler": "run", "env": {"A": "1"},
            "resources": {"memoryMiB": 128, "cpus": 0.5}, "timeoutSeconds": 5, "generation": 1}


async def put_rs(store: MemoryStore, name: str, replicas: int, thash: str = "h1",
                 template: dict[str, object] | None = TEMPLATE) -> None:
    key = objects.replicaset_key(name)
    try:
        rs = await store.get(key)
    except Exception:
        rs = objects.new_object("ReplicaSet", name, {}, namespace=objects.NAMESPACE)
        rs["spec"] = {"replicas": replicas, "template": template, "templateHash": thash}
        await store.create(key, rs)
        return
    rs["spec"].update(replicas=replicas, template=template, templateHash=thash)
    await store.update(key, rs)


class Env:
    def __init__(self, tmp: Path, keep_paused: float = 0.0) -> None:
        self.keep_paused = keep_paused
        self.store = MemoryStore()
        self.runtime = MemoryRuntime()
        self.sink = Sink()
        self.rs = Informer(self.store, objects.REPLICASETS_PREFIX)
        self.tmp = tmp
        self.healthy = True
        self.controller = self.new_controller()

    def new_controller(self) -> ReplicaSetController:
        self.rs = Informer(self.store, objects.REPLICASETS_PREFIX)
        return ReplicaSetController(self.store, self.runtime, self.rs, self.sink, ManualClock(),
                                    PortAllocator(41000, 41100), self.tmp / "logs",
                                    probe=self.probe, crash_backoff=0.05,
                                    keep_paused=self.keep_paused)

    async def probe(self, address: str) -> bool:
        return self.healthy

    async def settle(self) -> None:
        for _ in range(200):
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)

    def running(self, function: str = "f") -> list[str]:
        return sorted(c.pod for c in self.runtime.containers.values()
                      if c.function == function and c.running)


@contextlib.asynccontextmanager
async def running_env(tmp_path: Path, keep_paused: float = 0.0) -> AsyncIterator[Env]:
    env = Env(tmp_path, keep_paused)
    tasks = [asyncio.ensure_future(env.rs.run()), asyncio.ensure_future(env.controller.run())]
    await env.controller.started.wait()
    try:
        yield env
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_scales_up_and_down_with_labels_and_limits(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        await put_rs(env.store, "f", 2)
        await env.settle()
        assert len(env.running()) == 2
        spec = next(iter(env.runtime.specs.values()))
        assert spec.memory_mib == 128 and spec.cpus == 0.5
        assert spec.env["ALLINONE_HANDLER"] == "run" and spec.env["A"] == "1"
        pods, _ = await env.store.list(objects.PODS_PREFIX)
        assert {p["status"]["phase"] for p in pods} == {"Running"}
        assert all(p["status"]["ready"] for p in pods)
        rs = await env.store.get(objects.replicaset_key("f"))
        assert rs["status"]["readyReplicas"] == 2
        assert len(env.sink.ready) == 2

        await put_rs(env.store, "f", 0)
        await env.settle()
        assert env.running() == []
        assert len(env.sink.drained) == 2
        pods, _ = await env.store.list(objects.PODS_PREFIX)
        assert pods == []


async def test_sync_is_idempotent(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        await put_rs(env.store, "f", 1)
        await env.settle()
        first = env.running()
        for _ in range(3):
            await env.controller.sync("f")
        await env.settle()
        assert env.running() == first


async def test_dead_container_is_replaced(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        await put_rs(env.store, "f", 1)
        await env.settle()
        (cid,) = [c.id for c in env.runtime.containers.values()]
        env.runtime.crash(cid)
        await asyncio.sleep(1.3)  # the monitor checks every second
        await env.settle()
        assert len(env.running()) == 1
        assert cid not in env.runtime.containers


async def test_rollout_keeps_old_pods_until_new_are_ready(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        await put_rs(env.store, "f", 2, thash="h1")
        await env.settle()
        old = set(env.running())
        await put_rs(env.store, "f", 2, thash="h2", template={**TEMPLATE, "image": "reg/x@2"})
        await env.settle()
        now = set(env.running())
        assert len(now) == 2 and not (now & old)
        images = {s.image for s in env.runtime.specs.values()}
        assert images == {"reg/x@2"}


async def test_restart_adopts_running_pods_and_removes_strays(tmp_path: Path) -> None:
    env = Env(tmp_path)
    tasks = [asyncio.ensure_future(env.rs.run()), asyncio.ensure_future(env.controller.run())]
    await put_rs(env.store, "f", 1)
    await env.settle()
    (pod,) = env.running()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # A stray container of this instance with no Pod object: must be removed.
    from allinone.runtime.base import ContainerSpec
    await env.runtime.start(ContainerSpec(pod="f-stray", function="f", image="x", port=1))

    env.controller = env.new_controller()
    tasks = [asyncio.ensure_future(env.rs.run()), asyncio.ensure_future(env.controller.run())]
    try:
        await env.controller.started.wait()
        await env.settle()
        assert env.running() == [pod]  # adopted, no duplicate, stray gone
        assert pod in env.sink.ready
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_failed_start_is_reported_and_retried(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        env.runtime.fail_next_start = "no such image"
        await put_rs(env.store, "f", 1)
        await env.settle()
        assert [m for _, m in env.sink.failed] == ["container failed to start: no such image"]
        await asyncio.sleep(0.1)  # the first backoff is 0.05 s
        await env.settle()
        assert len(env.running()) == 1


async def test_crash_loop_backs_off(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        env.healthy = False  # every container exits before answering /healthz

        async def crash_all() -> None:
            while True:
                for c in list(env.runtime.containers.values()):
                    if c.running:
                        env.runtime.crash(c.id)
                await asyncio.sleep(0.01)
        crasher = asyncio.ensure_future(crash_all())
        try:
            await put_rs(env.store, "f", 1)
            await asyncio.sleep(1.5)
        finally:
            crasher.cancel()
        # Backoff 0.05, 0.1, 0.2, 0.4, 0.8 s (+0.25 s to notice each exit): a handful of
        # attempts in 1.5 s, not the hundreds a tight loop would make.
        assert 2 <= len(env.sink.failed) <= 6, env.sink.failed
        assert all("exited before it was ready" in m for _, m in env.sink.failed)


async def test_deleted_replicaset_removes_pods(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        await put_rs(env.store, "f", 2)
        await env.settle()
        await env.store.delete(objects.replicaset_key("f"))
        await env.settle()
        assert env.running() == []


def test_port_allocator_never_reuses_live_ports() -> None:
    busy = {41202}  # taken by some other program
    ports = PortAllocator(41200, 41205, is_free=lambda p: p not in busy)
    got = [ports.allocate() for _ in range(4)]
    assert got == [41200, 41201, 41203, 41204]
    with pytest.raises(RuntimeError, match="no free port"):
        ports.allocate()
    ports.release(41201)
    assert ports.allocate() == 41201


def test_port_is_free_sees_a_bound_port() -> None:
    import socket

    from allinone.controller.replicaset import port_is_free
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert not port_is_free(s.getsockname()[1])


async def test_scale_down_parks_and_scale_up_resumes_the_same_container(tmp_path: Path) -> None:
    async with running_env(tmp_path, keep_paused=60) as env:
        await put_rs(env.store, "f", 1)
        await env.settle()
        (cid,) = env.runtime.containers
        await put_rs(env.store, "f", 0)
        await env.settle()
        assert env.runtime.paused == {cid}  # frozen, not removed
        assert await env.store.list(objects.PODS_PREFIX) == ([], env.store.revision)
        rs = await env.store.get(objects.replicaset_key("f"))
        assert rs["status"]["replicas"] == 0  # a parked container is not a pod

        await put_rs(env.store, "f", 1)
        await env.settle()
        assert list(env.runtime.containers) == [cid] and env.runtime.paused == set()
        pods, _ = await env.store.list(objects.PODS_PREFIX)
        assert len(pods) == 1 and pods[0]["status"]["ready"] is True


async def test_parked_containers_are_evicted_on_template_change_and_expiry(
    tmp_path: Path,
) -> None:
    async with running_env(tmp_path, keep_paused=60) as env:
        await put_rs(env.store, "f", 1)
        await env.settle()
        (old,) = env.runtime.containers
        await put_rs(env.store, "f", 0)
        await env.settle()
        # A new template: the parked container is useless and goes; a fresh one starts.
        await put_rs(env.store, "f", 1, thash="h2", template={**TEMPLATE, "image": "new"})
        await env.settle()
        assert old not in env.runtime.containers
        assert [s.image for s in env.runtime.specs.values()] == ["new"]

    async with running_env(tmp_path / "b", keep_paused=0.5) as env:
        await put_rs(env.store, "g", 1)
        await env.settle()
        await put_rs(env.store, "g", 0)
        await env.settle()
        assert len(env.runtime.paused) == 1
        await asyncio.sleep(1.6)  # older than keep_paused, seen by the 1 s monitor
        assert env.runtime.containers == {}


async def test_failed_pods_are_never_parked(tmp_path: Path) -> None:
    async with running_env(tmp_path, keep_paused=60) as env:
        await put_rs(env.store, "f", 1)
        await env.settle()
        (cid,) = env.runtime.containers
        env.runtime.crash(cid)
        await asyncio.sleep(1.3)
        await env.settle()
        assert cid not in env.runtime.containers and env.runtime.paused == set()
