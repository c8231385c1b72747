"""The ReplicaSet controller and the kubelet against the in-memory store and container
runtime, on a manual clock: every backoff, expiry and safety-net check happens when the
test moves the clock, never by sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from allinone import objects
from allinone.clock import ManualClock
from allinone.controller.replicaset import RESYNC_INTERVAL, ReplicaSetController
from allinone.informer import Informer
from allinone.kubelet import kubelet as kubelet_module
from allinone.kubelet.kubelet import SAFETY_LIST_INTERVAL, Kubelet
from allinone.kubelet.poddir import SUN_PATH_MAX, PodDirs
from allinone.runtime.base import POD_SOCKET_DIR, ContainerInfo, ContainerSpec
from allinone.runtime.memory import MemoryRuntime
from allinone.store.memory import MemoryStore


class Sink:
    """Records what the kubelet tells the data plane."""

    def __init__(self) -> None:
        self.ready: dict[str, str] = {}
        self.drained: list[str] = []
        self.failed: list[tuple[str, str]] = []
        # Set to an unset Event to keep drains going (requests still in flight) until set.
        self.hold: asyncio.Event | None = None

    def pod_failed(self, function: str, pod: str, message: str) -> None:
        self.failed.append((pod, message))

    def pod_ready(self, function: str, pod: str, address: str) -> None:
        self.ready[pod] = address

    async def drain(self, function: str, pod: str, timeout: float) -> None:
        self.drained.append(pod)
        self.ready.pop(pod, None)
        if self.hold is not None:
            await self.hold.wait()


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


class CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor (``asyncio.to_thread``: the kubelet makes socket
    directories there, as Docker's calls run there in production), counting the work
    not yet done, so that :meth:`Env.settle` can wait for it before the clock moves on.
    Without it a step could pass while a start was still in a thread on a loaded
    machine, and everything after it (a backoff, a retry) came later in virtual time
    than the test counted on."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.pending = 0
        self._lock = threading.Lock()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            self.pending += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    def _done(self, _: Future[Any]) -> None:
        with self._lock:
            self.pending -= 1


class Env:
    def __init__(self, tmp: Path, keep_paused: float = 0.0, standby: str = "off") -> None:
        self.keep_paused = keep_paused
        self.standby = standby
        self.store = MemoryStore()
        self.runtime = MemoryRuntime()
        self.sink = Sink()
        self.clock = ManualClock(auto_advance=False)
        self.tmp = tmp
        self.healthy = True
        self.probes = 0
        self.executor = CountingExecutor()  # the loop's default, in running_env
        self.new_controller()

    def new_controller(self) -> None:
        self.rs = Informer(self.store, objects.REPLICASETS_PREFIX, objects.check_replicaset)
        self.kubelet = Kubelet(self.store, self.runtime, self.sink, self.clock,
                               self.tmp / "pods", self.tmp / "logs", probe=self.probe,
                               crash_backoff=0.05, keep_paused=self.keep_paused,
                               standby=self.standby)
        self.controller = ReplicaSetController(self.store, self.rs, self.kubelet, self.clock)

    async def probe(self, address: str) -> bool:
        self.probes += 1
        return self.healthy

    async def until(self, cond: Callable[[], object], what: str = "the condition") -> None:
        """Let the event loop run (no clock moves) until ``cond`` holds."""
        deadline = time.monotonic() + 5
        while not cond():
            assert time.monotonic() < deadline, f"never reached: {what}"
            await asyncio.sleep(0)

    async def settle(self) -> None:
        """Run everything that is runnable without moving the clock, including what
        waits for a worker thread (see :class:`CountingExecutor`)."""
        deadline = time.monotonic() + 5
        for _ in range(300):
            await asyncio.sleep(0)
        while self.executor.pending:
            assert time.monotonic() < deadline, "a worker thread never finished"
            await asyncio.sleep(0)
        for _ in range(100):  # what the thread's answer wakes
            await asyncio.sleep(0)

    async def advance(self, seconds: float, step: float = 0.01) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            await self.settle()

    def running(self, function: str = "f") -> list[str]:
        return sorted(c.pod for c in self.runtime.containers.values()
                      if c.function == function and c.running)

    async def pods(self) -> list[dict[str, object]]:
        return (await self.store.list(objects.PODS_PREFIX))[0]


@contextlib.asynccontextmanager
async def running_env(tmp_path: Path, keep_paused: float = 0.0,
                      env: Env | None = None) -> AsyncIterator[Env]:
    env = env or Env(tmp_path, keep_paused)
    asyncio.get_running_loop().set_default_executor(env.executor)
    tasks = [asyncio.ensure_future(env.rs.run()), asyncio.ensure_future(env.controller.run())]
    await env.controller.started.wait()
    try:
        yield env
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_scales_up_and_down_with_sandbox_and_limits(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        await put_rs(env.store, "f", 2)
        await env.until(lambda: len(env.sink.ready) == 2, "two ready pods")
        assert len(env.running()) == 2
        spec = next(iter(env.runtime.specs.values()))
        assert spec.memory_mib == 128 and spec.cpus == 0.5
        assert spec.env["ALLINONE_HANDLER"] == "run" and spec.env["A"] == "1"
        assert spec.network == "none" and spec.user != "0" and not spec.user.startswith("0:")
        assert spec.socket_dir == str(tmp_path / "pods" / spec.pod)
        assert stat.S_IMODE(os.stat(spec.socket_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(tmp_path / "pods").st_mode) == 0o700
        assert env.sink.ready[spec.pod] == f"{spec.socket_dir}/http.sock"
        await env.until(lambda: env.store.revision > 0)
        await env.settle()
        pods = await env.pods()
        assert {p["status"]["phase"] for p in pods} == {"Running"}  # type: ignore[index]
        assert all(p["status"]["ready"] for p in pods)  # type: ignore[index]
        assert all("port" not in p["spec"] for p in pods)  # type: ignore[operator]
        rs = await env.store.get(objects.replicaset_key("f"))
        assert rs["status"]["readyReplicas"] == 2

        await put_rs(env.store, "f", 0)
        await env.until(lambda: not env.running() and not env.kubelet.pods, "pods removed")
        await env.settle()
        assert len(env.sink.drained) == 2
        assert await env.pods() == []
        assert list((tmp_path / "pods").iterdir()) == []  # socket directories went too
        assert "logs of" in (tmp_path / "logs" / "f.log").read_text()


class CountingStore(MemoryStore):
    """Counts reads of single ReplicaSets (the controller's resync used to make one
    per function)."""

    def __init__(self) -> None:
        super().__init__()
        self.rs_gets = 0

    async def get(self, key: str) -> dict[str, object]:
        if key.startswith(objects.REPLICASETS_PREFIX):
            self.rs_gets += 1
        return await super().get(key)


async def test_the_resync_repairs_what_no_event_reached_without_reading_etcd(
        tmp_path: Path) -> None:
    env = Env(tmp_path)
    env.store = store = CountingStore()
    env.new_controller()
    async with running_env(tmp_path, env=env):
        await put_rs(env.store, "f", 1)
        await put_rs(env.store, "g", 1)
        await env.until(lambda: len(env.sink.ready) == 2, "one ready pod each")
        await env.settle()  # the follow-up syncs and status writes are done
        env.rs.handlers.clear()  # from now on no change reaches the controller by event
        await put_rs(env.store, "f", 3)
        await env.until(lambda: env.rs.get("f")["spec"]["replicas"] == 3,  # type: ignore[index]
                        "the informer's cache updated")
        await env.settle()
        assert len(env.running("f")) == 1  # drift: 3 wanted, 1 running
        reads = store.rs_gets
        await env.advance(RESYNC_INTERVAL + 0.5, step=0.5)
        await env.until(lambda: len(env.running("f")) == 3, "the resync's repair")
        assert len(env.running("g")) == 1
        assert store.rs_gets == reads  # from the informer's cache, not one GET each


async def test_a_malformed_replicaset_is_skipped_and_its_pods_kept(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(env.sink.ready) == 1)
        (pod,) = env.running()
        key = objects.replicaset_key("f")
        rs = await env.store.get(key)
        rs["spec"]["replicas"] = "two"  # not a count: the informer rejects it
        await env.store.update(key, rs)
        await env.until(lambda: key in env.rs.invalid, "the informer's rejection")
        await env.advance(RESYNC_INTERVAL + 0.5, step=0.5)  # a resync as well
        assert env.running() == [pod] and env.sink.drained == []  # not taken for a deletion
        await put_rs(env.store, "f", 2)  # fixed
        await env.until(lambda: len(env.running()) == 2, "synced again once valid")


async def test_egress_template_asks_for_egress(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        await put_rs(env.store, "f", 1, template={**TEMPLATE, "network": "egress"})
        await env.until(lambda: len(env.sink.ready) == 1)
        assert [s.network for s in env.runtime.specs.values()] == ["egress"]
        assert POD_SOCKET_DIR.startswith("/run/")


async def test_sync_is_idempotent(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(env.sink.ready) == 1)
        first = env.running()
        for _ in range(3):
            await env.controller.sync("f")
        await env.settle()
        assert env.running() == first


async def test_starting_pods_are_watched_not_polled(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        env.healthy = False
        listed = env.runtime.list_calls
        await put_rs(env.store, "f", 3)
        await env.advance(1.0)  # 3 pods probing every 4 ms for a second
        assert env.probes >= 3 * 90  # about one probe per pod per clock step
        assert env.runtime.list_calls == listed  # no container listing while they start
        env.runtime.crash(next(iter(env.runtime.containers)))
        await env.settle()  # the die event ends that pod's wait at once
        assert len(env.sink.failed) == 1 and "exited before it was ready" in env.sink.failed[0][1]


async def test_dead_container_is_replaced_after_backoff(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(env.sink.ready) == 1)
        (cid,) = list(env.runtime.containers)
        env.runtime.crash(cid)
        await env.until(lambda: cid not in env.runtime.containers, "the dead container removed")
        assert env.sink.failed and "its container exited" in env.sink.failed[0][1]
        assert env.running() == []  # the replacement waits out the backoff (0.05 s)...
        await env.advance(0.06)
        await env.until(lambda: len(env.running()) == 1, "a replacement")


async def test_lost_die_event_is_caught_by_the_safety_net(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(env.sink.ready) == 1)
        (cid,) = list(env.runtime.containers)
        env.runtime.crash(cid, silently=True)
        await env.settle()
        assert cid in env.runtime.containers  # nobody knows yet
        await env.advance(SAFETY_LIST_INTERVAL + 0.1, step=0.05)
        await env.until(lambda: cid not in env.runtime.containers and len(env.running()) == 1,
                        "the dead pod replaced")


async def test_rollout_keeps_old_pods_until_new_are_ready(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        await put_rs(env.store, "f", 2, thash="h1")
        await env.until(lambda: len(env.sink.ready) == 2)
        old = set(env.running())
        env.healthy = False  # the new pods are not ready yet: the old ones stay
        await put_rs(env.store, "f", 2, thash="h2", template={**TEMPLATE, "image": "reg/x@2"})
        await env.until(lambda: len(env.running()) == 4, "new pods started")
        await env.advance(0.1)
        assert old <= set(env.running())
        env.healthy = True
        await env.advance(0.02)
        await env.until(lambda: len(env.running()) == 2, "old pods removed")
        assert not (set(env.running()) & old)
        assert {s.image for s in env.runtime.specs.values()} == {"reg/x@2"}


async def test_scale_down_removes_a_container_only_after_its_drain_finished(
        tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(env.sink.ready) == 1, "one ready pod")
        [pod] = env.running()
        env.sink.hold = asyncio.Event()  # a request is still in flight on the pod
        await put_rs(env.store, "f", 0)
        await env.until(lambda: pod in env.sink.drained, "the drain began")
        await env.advance(1.0)  # the drain takes its time; the container must wait
        assert env.running() == [pod]
        env.sink.hold.set()
        await env.until(lambda: not env.running() and not env.kubelet.pods, "pod removed")


async def test_restart_adopts_running_pods_and_removes_strays(tmp_path: Path) -> None:
    env = Env(tmp_path)
    async with running_env(tmp_path, env=env):
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(env.sink.ready) == 1)
        (pod,) = env.running()
    # A stray container of this instance with no Pod object, and a stray socket dir.
    await env.runtime.start(ContainerSpec(pod="f-stray", function="f", image="x",
                                          socket_dir=str(tmp_path / "pods" / "f-stray")))
    (tmp_path / "pods" / "f-gone").mkdir()
    env.sink.ready.clear()
    env.new_controller()
    async with running_env(tmp_path, env=env):
        await env.until(lambda: pod in env.sink.ready, "the pod adopted")
        await env.settle()
        assert env.running() == [pod]  # adopted, no duplicate, stray gone
        assert sorted(p.name for p in (tmp_path / "pods").iterdir()) == [pod]


async def test_failed_start_is_reported_and_retried_after_backoff(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        env.runtime.fail_next_start = "no such image"
        await put_rs(env.store, "f", 1)
        await env.until(lambda: env.sink.failed, "the failure")
        assert [m for _, m in env.sink.failed] == ["container failed to start: no such image"]
        await env.settle()
        assert env.running() == []
        await env.advance(0.06)  # the first backoff is 0.05 s
        await env.until(lambda: len(env.running()) == 1, "the retry")


class CrashingRuntime(MemoryRuntime):
    """Every container exits right after it starts (an import error)."""

    async def start(self, spec: ContainerSpec) -> str:
        cid = await super().start(spec)
        asyncio.get_running_loop().call_soon(self.crash, cid)
        return cid


async def test_crash_loop_backs_off_exponentially(tmp_path: Path) -> None:
    env = Env(tmp_path)
    env.runtime = CrashingRuntime()
    env.healthy = False
    env.new_controller()
    async with running_env(tmp_path, env=env):
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(env.sink.failed) == 1)
        t0 = env.clock.now()
        # Backoff 0.05, 0.1, 0.2 s after failures 1, 2, 3: the fourth near 0.35 s. Each
        # start makes its socket directory in a worker thread (as Docker's work is), and
        # on a loaded machine a step may pass before it lands, which delays the later
        # starts in virtual time too: step until the fourth, then bound when it came.
        for _ in range(100):
            if len(env.sink.failed) >= 4:
                break
            await env.advance(0.01)
        assert len(env.sink.failed) == 4, env.sink.failed
        # 0.35 s plus slack for late threads; three times 0.05, 0.15, 0.45 would be 0.65.
        assert env.clock.now() - t0 <= 0.6
        assert all("exited before it was ready" in m for _, m in env.sink.failed)
        await env.advance(0.3)  # the fifth waits 0.4 s after the fourth (near 0.75 s)
        assert len(env.sink.failed) == 4


class CrashingTwice(MemoryRuntime):
    """The first two containers exit right after they start; the others keep running."""

    async def start(self, spec: ContainerSpec) -> str:
        cid = await super().start(spec)
        if len(self.specs) + len(self.exits) <= 2:
            asyncio.get_running_loop().call_soon(self.crash, cid)
        return cid


async def test_a_pod_replacing_crashed_ones_counts_them_as_restarts(tmp_path: Path) -> None:
    env = Env(tmp_path)
    env.runtime = CrashingTwice()
    env.healthy = False  # the two crashing pods never answer their probe
    env.new_controller()
    async with running_env(tmp_path, env=env):
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(env.sink.failed) == 1, "the first failure")
        await env.advance(0.06)  # backoff 0.05 s: the second pod starts and crashes
        await env.until(lambda: len(env.sink.failed) == 2, "the second failure")
        env.healthy = True
        await env.advance(0.12)  # backoff 0.1 s: the third pod starts and stays
        await env.until(lambda: len(env.sink.ready) == 1, "the third pod ready")
        await env.settle()
        (pod,) = [p for p in await env.pods() if p["status"]["phase"] == "Running"]  # type: ignore[index]
        assert pod["status"]["restartCount"] == 2  # type: ignore[index]
        await put_rs(env.store, "f", 2)  # a ready pod ended the crash loop: no restarts
        await env.until(lambda: len(env.sink.ready) == 2, "the scale-up's pod ready")
        await env.settle()
        counts = sorted(p["status"]["restartCount"] for p in await env.pods())  # type: ignore[index]
        assert counts == [0, 2]


async def test_deleted_replicaset_removes_pods(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        await put_rs(env.store, "f", 2)
        await env.until(lambda: len(env.sink.ready) == 2)
        await env.store.delete(objects.replicaset_key("f"))
        await env.until(lambda: not env.running() and not env.kubelet.pods)


async def test_scale_down_parks_and_scale_up_resumes_the_same_container(tmp_path: Path) -> None:
    async with running_env(tmp_path, keep_paused=60) as env:
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(env.sink.ready) == 1)
        (cid,) = env.runtime.containers
        (pod,) = env.sink.ready
        await put_rs(env.store, "f", 0)
        await env.until(lambda: env.runtime.paused == {cid}, "frozen, not removed")
        await env.settle()
        assert await env.pods() == []
        assert (tmp_path / "pods" / pod).is_dir()  # its socket directory stays
        rs = await env.store.get(objects.replicaset_key("f"))
        assert rs["status"]["replicas"] == 0  # a parked container is not a pod

        await put_rs(env.store, "f", 1)
        await env.until(lambda: pod in env.sink.ready, "resumed")
        await env.settle()
        assert list(env.runtime.containers) == [cid] and env.runtime.paused == set()
        pods = await env.pods()
        assert len(pods) == 1 and pods[0]["status"]["ready"] is True  # type: ignore[index]


async def test_parked_containers_are_evicted_on_template_change_and_expiry(
    tmp_path: Path,
) -> None:
    async with running_env(tmp_path, keep_paused=60) as env:
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(env.sink.ready) == 1)
        (old,) = env.runtime.containers
        await put_rs(env.store, "f", 0)
        await env.until(lambda: env.runtime.paused == {old})
        # A new template: the parked container is useless and goes; a fresh one starts.
        await put_rs(env.store, "f", 1, thash="h2", template={**TEMPLATE, "image": "new"})
        await env.until(lambda: old not in env.runtime.containers and len(env.running()) == 1)
        assert [s.image for s in env.runtime.specs.values()] == ["new"]

    async with running_env(tmp_path / "b", keep_paused=0.5) as env:
        await put_rs(env.store, "g", 1)
        await env.until(lambda: len(env.sink.ready) == 1)
        await put_rs(env.store, "g", 0)
        await env.until(lambda: len(env.runtime.paused) == 1)
        await env.advance(0.4, step=0.1)
        assert len(env.runtime.paused) == 1  # not expired yet
        await env.advance(1.0, step=0.1)  # older than keep_paused at a 1 s check
        await env.until(lambda: env.runtime.containers == {}, "the expired container removed")


async def test_failed_pods_are_never_parked(tmp_path: Path) -> None:
    async with running_env(tmp_path, keep_paused=60) as env:
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(env.sink.ready) == 1)
        (cid,) = env.runtime.containers
        env.runtime.crash(cid)
        await env.until(lambda: cid not in env.runtime.containers)
        assert env.runtime.paused == set()


def test_long_socket_paths_go_through_a_directory_descriptor(tmp_path: Path) -> None:
    dirs = PodDirs(tmp_path / ("x" * 60))
    pod = "p" * 70
    dirs.create(pod)
    path = dirs.connect_path(pod)
    assert len(path) <= SUN_PATH_MAX and path.startswith("/proc/self/fd/")
    assert os.path.samefile(os.path.dirname(path), dirs.path(pod))
    dirs.remove(pod)
    assert not dirs.path(pod).exists()
    short = PodDirs(tmp_path / "s")
    short.create("q")
    assert short.connect_path("q") == str(tmp_path / "s" / "q" / "http.sock")


async def test_a_crash_names_docker_s_reason(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(env.sink.ready) == 1)
        (cid,) = list(env.runtime.containers)
        env.runtime.crash(cid, exit_code=137, oom=True)
        await env.until(lambda: env.sink.failed, "the failure")
        (_, message), = env.sink.failed
        assert "ran out of memory" in message and "memory limit of 128 MiB" in message
        assert "OOMKilled" in message


class SlowRuntime(MemoryRuntime):
    """``start`` (or, with ``create=True``, ``create``) blocks until the test lets it
    finish (a slow Docker); ``starting`` counts the calls waiting or done."""

    def __init__(self, create: bool = False) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.starting = 0
        self.gated_create = create

    async def start(self, spec: ContainerSpec) -> str:
        if not self.gated_create:
            self.starting += 1
            await self.gate.wait()
        return await super().start(spec)

    async def create(self, spec: ContainerSpec) -> str:
        if self.gated_create:
            self.starting += 1
            await self.gate.wait()
        return await super().create(spec)


async def test_a_pod_deleted_while_its_container_is_created_leaves_no_container(
        tmp_path: Path) -> None:
    env = Env(tmp_path)
    env.runtime = runtime = SlowRuntime()
    env.new_controller()
    async with running_env(tmp_path, env=env):
        await put_rs(env.store, "f", 2)
        await env.until(lambda: runtime.starting == 2, "two containers being created")
        await env.store.delete(objects.replicaset_key("f"))
        await env.until(lambda: not env.kubelet.pods and not env.controller.pods,
                        "the pods deleted")
        runtime.gate.set()  # Docker answers only now, with two containers
        await env.until(lambda: not env.runtime.containers, "the late containers removed")
        await env.settle()
        assert env.sink.ready == {} and await env.pods() == []
        assert list((tmp_path / "pods").iterdir()) == []


async def test_a_retired_pod_is_replaced_without_backoff(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(env.sink.ready) == 1)
        (pod,) = env.running()
        env.kubelet.retire("f", pod, "a request outlived timeoutSeconds")
        await env.until(lambda: pod not in env.running() and len(env.running()) == 1,
                        "the retired pod replaced")
        assert env.sink.failed == [] and env.kubelet.crash_count("f") == 0
        assert pod in env.sink.drained


class PodWriteFailsOnce(MemoryStore):
    """The first Pod object write fails (etcd refused it) after the container started."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    async def create(self, key: str, obj: dict[str, object]) -> dict[str, object]:
        if key.startswith(objects.PODS_PREFIX) and not self.failed:
            self.failed = True
            raise RuntimeError("etcd refused the write")
        return await super().create(key, obj)


async def test_a_pod_whose_object_cannot_be_written_leaves_no_container(
        tmp_path: Path) -> None:
    # The Pod object is written while the container is created; when the write fails,
    # the container goes and the controller plans the pod again (no pod without object).
    env = Env(tmp_path)
    env.store = store = PodWriteFailsOnce()
    env.new_controller()
    async with running_env(tmp_path, env=env):
        await put_rs(env.store, "f", 1)
        await env.until(lambda: store.failed, "the first write refused")
        await env.advance(0.6)  # the controller's retry
        await env.until(lambda: len(env.sink.ready) == 1, "a replacement pod ready")
        await env.settle()
        pods = await env.pods()
        assert [p["metadata"]["name"] for p in pods] == list(env.sink.ready)  # type: ignore[index]
        assert env.running() == list(env.sink.ready)
        assert [p.name for p in (tmp_path / "pods").iterdir()] == list(env.sink.ready)


class SlowListRuntime(MemoryRuntime):
    """Once ``slow`` is set, a container list answers with what ran when it was asked,
    but only when the test releases it (a busy engine takes seconds to list)."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = False
        self.listing = asyncio.Event()
        self.release = asyncio.Event()

    async def list(self) -> list[ContainerInfo]:
        snapshot = await super().list()
        if self.slow:
            self.listing.set()
            await self.release.wait()
        return snapshot


async def test_a_container_created_while_containers_are_listed_is_not_taken_for_dead(
        tmp_path: Path) -> None:
    # A cold burst's first pod was failed as "exited before it was ready": the safety
    # net's list was asked before its container existed and answered after.
    env = Env(tmp_path)
    env.runtime = runtime = SlowListRuntime()
    env.new_controller()
    async with running_env(tmp_path, env=env):
        runtime.slow = True
        check = asyncio.create_task(env.kubelet._check_containers())
        await env.until(runtime.listing.is_set, "the list asked for")
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(runtime.containers) == 1, "its container created")
        runtime.release.set()
        await check
        await env.until(lambda: len(env.sink.ready) == 1, "the pod ready")
        await env.settle()
        assert env.sink.failed == [] and len(env.running()) == 1


# -- standby containers: created at zero, started by the next cold start ---------------

def standbys(env: Env, function: str = "f") -> list[str]:
    """Containers of ``function`` that exist but never ran."""
    return [c.id for c in env.runtime.containers.values()
            if c.function == function and not c.running]


async def test_at_zero_a_standby_is_created_and_the_next_pod_only_starts_it(
        tmp_path: Path) -> None:
    async with running_env(tmp_path, env=Env(tmp_path, standby="created")) as env:
        await put_rs(env.store, "f", 0)
        await env.until(lambda: len(standbys(env)) == 1, "a standby at zero")
        (cid,) = standbys(env)
        spec = env.runtime.specs[cid]
        assert spec.memory_mib == 128 and spec.env["A"] == "1"  # the template's sandbox
        assert (tmp_path / "pods" / spec.pod).is_dir()  # its socket directory is made
        assert env.sink.ready == {} and await env.pods() == []  # not a pod

        created = env.runtime.created
        await put_rs(env.store, "f", 2)
        await env.until(lambda: len(env.sink.ready) == 2, "two ready pods")
        # One pod started the standby (same id, same name); only the other was created.
        assert env.runtime.containers[cid].running and spec.pod in env.sink.ready
        assert env.runtime.created == created + 1
        assert standbys(env) == []  # none while the function has pods

        await put_rs(env.store, "f", 0)
        await env.until(lambda: not env.running() and len(standbys(env)) == 1,
                        "pods gone, a new standby")
        assert cid not in env.runtime.containers
        await env.settle()
        assert len(env.kubelet.standby) == 1 and len(env.runtime.containers) == 1


async def test_a_standby_of_an_old_template_or_a_deleted_function_goes(
        tmp_path: Path) -> None:
    async with running_env(tmp_path, env=Env(tmp_path, standby="created")) as env:
        await put_rs(env.store, "f", 0)
        await env.until(lambda: len(standbys(env)) == 1)
        (old,) = standbys(env)
        await put_rs(env.store, "f", 0, thash="h2", template={**TEMPLATE, "image": "new"})
        await env.until(lambda: old not in env.runtime.containers
                        and len(standbys(env)) == 1, "replaced by one of the new template")
        (new,) = standbys(env)
        assert env.runtime.specs[new].image == "new"
        old_pod = env.runtime.specs[new].pod
        await env.store.delete(objects.replicaset_key("f"))
        await env.until(lambda: env.runtime.containers == {}, "no container left")
        await env.until(lambda: not (tmp_path / "pods" / old_pod).exists(),
                        "its socket directory removed")
        assert env.kubelet.standby == {}


async def test_a_function_deleted_while_its_standby_is_created_leaves_nothing(
        tmp_path: Path) -> None:
    env = Env(tmp_path, standby="created")
    env.runtime = runtime = SlowRuntime(create=True)
    env.new_controller()
    async with running_env(tmp_path, env=env):
        await put_rs(env.store, "f", 0)
        await env.until(lambda: runtime.starting == 1, "the standby being created")
        await env.store.delete(objects.replicaset_key("f"))
        await env.settle()
        runtime.gate.set()  # Docker answers only now
        await env.until(lambda: runtime.created == 1 and not runtime.containers,
                        "the late standby removed")
        await env.until(lambda: list((tmp_path / "pods").iterdir()) == [],
                        "its socket directory removed")
        assert env.kubelet.standby == {}


class StandbyLost(MemoryRuntime):
    """The standby was removed behind the kubelet's back: starting (created) or
    resuming (frozen) it fails."""

    lost = ""

    async def run(self, container_id: str) -> None:
        if container_id == self.lost:
            self.containers.pop(container_id, None)
            raise RuntimeError("no such container")
        await super().run(container_id)

    async def unpause(self, container_id: str) -> None:
        if container_id == self.lost:
            self.containers.pop(container_id, None)
            raise RuntimeError(f"Container {container_id} is not paused")
        await super().unpause(container_id)


def frozen(env: Env, function: str = "f") -> list[str]:
    """Containers of ``function`` that run but are paused."""
    return [c.id for c in env.runtime.containers.values()
            if c.function == function and c.running and c.id in env.runtime.paused]


async def at_zero(env: Env, waiting: Callable[[Env], list[str]] = standbys) -> str:
    """Put ``f`` at zero and wait for its one standby; its container id."""
    await put_rs(env.store, "f", 0)
    await env.until(lambda: len(waiting(env)) == 1, "a standby at zero")
    (cid,) = waiting(env)
    return cid


@pytest.mark.parametrize("mode", ["created", "frozen"])
async def test_a_standby_that_cannot_start_or_resume_is_replaced_by_a_fresh_container(
        tmp_path: Path, mode: str) -> None:
    env = Env(tmp_path, standby=mode)
    env.runtime = runtime = StandbyLost()
    env.new_controller()
    waiting = standbys if mode == "created" else frozen
    async with running_env(tmp_path, env=env):
        runtime.lost = await at_zero(env, waiting)
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(env.sink.ready) == 1, "a ready pod all the same")
        assert env.sink.failed == [] and runtime.lost not in runtime.containers
        assert len(env.running()) == 1 and runtime.paused == set()
        assert env.kubelet.standby == {}


async def test_a_pod_deleted_before_it_started_its_standby_removes_it(
        tmp_path: Path) -> None:
    env = Env(tmp_path, standby="created")
    async with running_env(tmp_path, env=env):
        await put_rs(env.store, "f", 0)
        await env.until(lambda: len(standbys(env)) == 1)
        (cid,) = standbys(env)
        rec = env.kubelet.new_pod("f", "h1")
        assert rec.standby is not None and rec.standby.container_id == cid
        assert env.kubelet.standby == {}
        rec.phase = "Terminating"
        await env.kubelet.start(rec, TEMPLATE)
        assert cid not in env.runtime.containers and rec.container_id is None


@pytest.mark.parametrize("mode", ["created", "frozen"])
async def test_a_restart_removes_standby_containers(tmp_path: Path, mode: str) -> None:
    env = Env(tmp_path, standby=mode)
    waiting = standbys if mode == "created" else frozen
    async with running_env(tmp_path, env=env):
        cid = await at_zero(env, waiting)
    env.new_controller()  # the server restarted: no Pod object names the standby
    async with running_env(tmp_path, env=env):
        await env.until(lambda: cid not in env.runtime.containers
                        and len(waiting(env)) == 1, "the old standby replaced")
        assert len(env.runtime.containers) == 1


async def test_a_frozen_standby_whose_import_hangs_gives_up_and_is_created(
        tmp_path: Path) -> None:
    # Hostile code at zero: a module that never finishes importing (its shim never
    # answers). The standby is bounded by PROBE_TIMEOUT, then only created.
    env = Env(tmp_path, standby="frozen")
    env.healthy = False
    async with running_env(tmp_path, env=env):
        await put_rs(env.store, "f", 0)
        await env.until(lambda: len(env.running()) == 1 and env.probes > 0,
                        "the standby started and probed")
        (hung,) = env.running()
        await env.advance(kubelet_module.PROBE_TIMEOUT + 2, step=1.0)
        await env.until(lambda: len(standbys(env)) == 1 and env.running() == [],
                        "the hung standby removed, a created one instead")
        assert env.kubelet.standby["f"].state == "created"
        assert all(c.pod != hung for c in env.runtime.containers.values())


async def test_a_paused_pod_stands_in_for_the_standby_until_it_expires(
        tmp_path: Path) -> None:
    async with running_env(tmp_path, env=Env(tmp_path, keep_paused=0.5, standby="created")) as env:
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(env.sink.ready) == 1)
        await put_rs(env.store, "f", 0)
        await env.until(lambda: len(env.runtime.paused) == 1, "parked")
        await env.settle()
        assert standbys(env) == [] and env.kubelet.standby == {}
        await env.advance(1.5, step=0.1)  # expired at a 1 s check
        await env.until(lambda: env.runtime.paused == set() and len(standbys(env)) == 1,
                        "the paused pod gone, a standby instead")


async def test_each_start_is_reported_with_how_the_container_started(
        tmp_path: Path) -> None:
    env = Env(tmp_path, keep_paused=60, standby="created")
    started: list[tuple[str, str, float]] = []
    env.kubelet.on_started = lambda f, kind, s: started.append((f, kind, s))
    async with running_env(tmp_path, env=env):
        await put_rs(env.store, "f", 0)
        await env.until(lambda: len(standbys(env)) == 1, "a standby at zero")
        await put_rs(env.store, "f", 2)
        await env.until(lambda: len(started) == 2, "two pods started")
        assert sorted(kind for _, kind, _ in started) == ["created", "standby"]
        await put_rs(env.store, "f", 1)
        await env.until(lambda: len(env.runtime.paused) == 1, "one parked")
        await put_rs(env.store, "f", 2)
        await env.until(lambda: len(started) == 3, "a third start")
        assert started[2][:2] == ("f", "resumed")
        assert all(s >= 0 for _, _, s in started)


async def test_standby_containers_are_bounded_while_they_are_being_created(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kubelet_module, "STANDBY_MAX", 2)
    env = Env(tmp_path, standby="created")
    env.runtime = runtime = SlowRuntime(create=True)
    env.new_controller()
    async with running_env(tmp_path, env=env):
        for name in ("f", "g", "h"):
            await put_rs(env.store, name, 0)
        await env.until(lambda: runtime.starting == 2, "two standbys being created")
        await env.settle()
        assert runtime.starting == 2  # the third function waits for room
        runtime.gate.set()
        await env.until(lambda: len(env.kubelet.standby) == 2, "two standbys")
        await env.settle()
        assert runtime.created == 2


# -- frozen standbys: started, healthy, paused at zero; the next pod resumes it ---------

async def test_at_zero_a_frozen_standby_is_made_healthy_and_the_next_pod_resumes_it(
        tmp_path: Path) -> None:
    env = Env(tmp_path, standby="frozen")
    started: list[tuple[str, str, float]] = []
    env.kubelet.on_started = lambda f, kind, s: started.append((f, kind, s))
    async with running_env(tmp_path, env=env):
        await put_rs(env.store, "f", 0)
        await env.until(lambda: len(frozen(env)) == 1, "a frozen standby at zero")
        (cid,) = frozen(env)
        assert env.probes >= 1  # paused only once its shim answered
        assert env.sink.ready == {} and await env.pods() == []  # not a pod
        assert env.kubelet.standby["f"].state == "paused"

        created, probes = env.runtime.created, env.probes
        await put_rs(env.store, "f", 2)
        await env.until(lambda: len(env.sink.ready) == 2, "two ready pods")
        # One pod resumed the standby (same id, same name, probed again); one was made.
        assert env.runtime.specs[cid].pod in env.sink.ready
        assert env.runtime.paused == set() and env.runtime.created == created + 1
        assert env.probes >= probes + 2
        assert sorted(kind for _, kind, _ in started) == ["created", "resumed"]

        await put_rs(env.store, "f", 0)
        await env.until(lambda: len(frozen(env)) == 1 and len(env.runtime.containers) == 1,
                        "pods gone, a new frozen standby")
        assert cid not in env.runtime.containers
        await env.store.delete(objects.replicaset_key("f"))
        await env.until(lambda: env.runtime.containers == {}, "removed with the function")
        await env.until(lambda: list((tmp_path / "pods").iterdir()) == [],
                        "its socket directory removed")


async def test_a_frozen_standby_that_dies_on_import_leaves_a_created_one_and_its_log(
        tmp_path: Path) -> None:
    env = Env(tmp_path, standby="frozen")
    env.healthy = False  # the shim never answers: its import fails
    async with running_env(tmp_path, env=env):
        await put_rs(env.store, "f", 0)
        await env.until(lambda: len(env.running()) == 1 and env.probes > 0,
                        "the standby started and probed")
        (first,) = [c.id for c in env.runtime.containers.values() if c.running]
        env.runtime.crash(first)
        await env.until(lambda: first not in env.runtime.containers
                        and len(standbys(env)) == 1, "a created standby instead")
        assert env.kubelet.standby["f"].state == "created"
        assert f"logs of {first}" in (tmp_path / "logs" / "f.log").read_text()
        # It stays created (no Docker start loop at zero) ...
        env.kubelet.on_change("f")
        await env.settle()
        assert len(env.runtime.containers) == 1 and env.runtime.paused == set()
        # ... until the template changes: the new code gets a frozen standby again.
        env.healthy = True
        await put_rs(env.store, "f", 0, thash="h2", template={**TEMPLATE, "image": "new"})
        await env.until(lambda: len(frozen(env)) == 1 and len(env.runtime.containers) == 1,
                        "a frozen standby of the new template")


async def test_a_pod_wanted_while_the_standby_is_made_takes_it_over(
        tmp_path: Path) -> None:
    env = Env(tmp_path, standby="frozen")
    started: list[tuple[str, str, float]] = []
    env.kubelet.on_started = lambda f, kind, s: started.append((f, kind, s))
    env.healthy = False  # hold the standby in its probe: deployed and invoked at once
    async with running_env(tmp_path, env=env):
        await put_rs(env.store, "f", 0)
        await env.until(lambda: len(env.running()) == 1 and env.probes > 0,
                        "the standby started and probed")
        (cid,) = env.runtime.containers
        await put_rs(env.store, "f", 2)
        await env.until(lambda: env.runtime.created == 2, "the second pod's own container")
        env.healthy = True
        await env.advance(0.05)  # the next probes
        await env.until(lambda: len(env.sink.ready) == 2, "both pods ready")
        # The first pod took the standby's container (its name too) without a pause.
        assert env.runtime.specs[cid].pod in env.sink.ready
        assert env.runtime.created == 2 and env.runtime.paused == set()
        assert env.kubelet.standby == {} and env.kubelet._making == {}
        assert sorted(kind for _, kind, _ in started) == ["created", "standby"]


async def test_a_standby_of_a_function_that_has_pods_is_removed(tmp_path: Path) -> None:
    env = Env(tmp_path, standby="frozen")
    async with running_env(tmp_path, env=env):
        cid = await at_zero(env, frozen)
        # A sync that finds pods (say, adopted after a restart) while a standby waits.
        env.kubelet.want_standby("f", 1, 1, TEMPLATE, "h1")
        await env.until(lambda: cid not in env.runtime.containers, "the standby removed")
        assert env.kubelet.standby == {}


def test_an_unknown_standby_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frozen, created, off"):
        Env(tmp_path, standby="warm")
