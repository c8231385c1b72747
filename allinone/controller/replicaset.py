"""The ReplicaSet controller: makes the function's pods (containers) match its ReplicaSet.

Shape, after the Kubernetes ReplicaSet controller and client-go:

- The ReplicaSet informer (list+watch) enqueues a function name on every change; a
  keyed work queue makes sure one key is synced by one worker at a time, and a key
  enqueued while it is being synced is synced again afterwards.
- ``sync(name)`` re-reads the ReplicaSet from the store, asks the pure
  :func:`~allinone.controller.planning.plan` what to do, and starts that work. It is
  idempotent: a second sync with nothing changed does nothing.
- The controller is the only writer of Pod objects, so it keeps the authoritative pod
  table in memory (``self.pods``) and updates it synchronously with its own writes;
  this is what Kubernetes calls "expectations" and avoids double creates while the
  watch catches up. etcd holds the same pods for everybody else and for restarts.

Pod lifecycle: ``Pending`` (Pod object written, container starting) -> ``Running``
with ``ready: true`` once ``GET /healthz`` answers -> ``Terminating`` (drained by the
activator: no new requests, removed after in-flight ones finish) -> deleted. A container
that dies makes its pod ``Failed``; the plan removes it and creates a replacement.

On start, running containers that match Pod objects are adopted (probed, then Ready);
Pod objects without a container are deleted and containers without a Pod object are
removed, so a restart never leaves duplicates or strays.

Paused pods (opt-in, ``keep_paused`` seconds > 0): a pod removed by a scale-down is
drained as usual, then frozen (``docker pause``) instead of removed, keeping its port.
The next scale-up of the same template unpauses it: ~20 ms to the first answer instead
of ~110 ms for a fresh container. A parked container is not a pod (no Pod object, not
counted in any replica number); it is removed after ``keep_paused`` seconds, when the
template changes or the ReplicaSet goes, and at a restart (as a container without a
Pod object). Off by default because it keeps memory and a container at zero replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp

from allinone import objects
from allinone.clock import Clock
from allinone.controller.planning import FAILED, PENDING, RUNNING, TERMINATING, PodView, plan
from allinone.informer import Informer
from allinone.runtime.base import ContainerRuntime, ContainerSpec
from allinone.store import Conflict, NotFound, Obj, Store, StoreError
from allinone.workqueue import WorkQueue

log = logging.getLogger(__name__)

CRASH_BACKOFF_MAX = 30.0  # s: the longest wait before replacing a crash-looping pod
PROBE_INTERVAL = 0.004  # s between /healthz polls: container start is ~110 ms, so poll finely
PROBE_TIMEOUT = 120.0   # s a pod may take to answer /healthz (big imports) before it fails
MONITOR_INTERVAL = 1.0  # s between checks that running containers are still alive
RESYNC_INTERVAL = 15.0  # s between full resyncs, a safety net like client-go's resync


class EndpointSink(Protocol):
    """What the controller tells the data plane (the activator implements it)."""

    def pod_ready(self, function: str, pod: str, address: str) -> None: ...

    def pod_failed(self, function: str, pod: str, message: str) -> None:
        """A pod failed (to start, or while running); requests held for it can stop waiting."""
        ...

    async def drain(self, function: str, pod: str, timeout: float) -> None:
        """Stop routing new requests to ``pod``; return when in-flight ones finished."""
        ...


ProbeFn = Callable[[str], Awaitable[bool]]


@dataclass
class PodRecord:
    name: str
    function: str
    template_hash: str
    port: int
    phase: str
    ready: bool
    created: float
    container_id: str | None = None
    obj: Obj | None = None  # as last stored in etcd
    message: str = ""

    def view(self) -> PodView:
        return PodView(self.name, self.template_hash, self.phase, self.ready, self.created)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Parked:
    """A drained pod's container, frozen for reuse by the next scale-up."""

    pod: str
    function: str
    template_hash: str
    port: int
    container_id: str
    since: float  # loop time it was parked


class PortAllocator:
    """Loopback ports for pods: never one we handed out, and never one in use already.

    It walks the range round-robin rather than always from the start, so a port just
    released (its container may still be exiting) is the last to be reused.
    """

    def __init__(self, start: int, stop: int,
                 is_free: Callable[[int], bool] = port_is_free) -> None:
        self.start, self.stop = start, stop
        self.is_free = is_free
        self.used: set[int] = set()
        self._next = start

    def allocate(self) -> int:
        for _ in range(self.stop - self.start):
            port = self._next
            self._next = self.start + (self._next + 1 - self.start) % (self.stop - self.start)
            if port in self.used or not self.is_free(port):
                continue
            self.used.add(port)
            return port
        raise RuntimeError(f"no free port left in {self.start}-{self.stop} for a pod")

    def release(self, port: int) -> None:
        self.used.discard(port)


class ReplicaSetController:
    def __init__(
        self,
        store: Store,
        runtime: ContainerRuntime,
        replicasets: Informer,
        endpoints: EndpointSink,
        clock: Clock,
        ports: PortAllocator,
        logs_dir: Path,
        probe: ProbeFn | None = None,
        workers: int = 4,
        crash_backoff: float = 0.5,
        keep_paused: float = 0.0,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.replicasets = replicasets
        self.endpoints = endpoints
        self.clock = clock
        self.ports = ports
        self.logs_dir = logs_dir
        self.probe = probe or self._http_probe
        self.pods: dict[str, PodRecord] = {}
        self.keep_paused = keep_paused
        self.parked: dict[str, list[Parked]] = {}
        # Crash-loop backoff per function: consecutive pod failures, and the loop time
        # before which no replacement is created. 0.5 s doubling to 30 s: 0.5, 1, 2, 4...
        self.crash_backoff = crash_backoff
        self._crashes: dict[str, tuple[int, float]] = {}
        self.queue = WorkQueue("replicaset-controller", self.sync, workers)
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.started = asyncio.Event()
        replicasets.add_handler(self._on_replicaset)

    # -- work queue --------------------------------------------------------------

    def enqueue(self, name: str) -> None:
        self.queue.add(name)

    def _on_replicaset(self, key: str, old: Obj | None, new: Obj | None) -> None:
        self.enqueue(key.rsplit("/", 1)[-1])

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- main loop ---------------------------------------------------------------

    async def run(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=1.0),
            connector=aiohttp.TCPConnector(force_close=True),
        )
        try:
            await self.replicasets.synced.wait()
            await self.adopt()
            self.started.set()
            await asyncio.gather(self._monitor(), self._resync(), self.queue.run())
        finally:
            for task in list(self._tasks):
                task.cancel()
            await self._session.close()

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_INTERVAL)
            for name in {rs["metadata"]["name"] for rs in self.replicasets.items()} | {
                p.function for p in self.pods.values()
            }:
                self.enqueue(name)

    # -- adoption ----------------------------------------------------------------

    async def adopt(self) -> None:
        """Match Pod objects in etcd with this instance's containers after a restart."""
        pod_objs, _ = await self.store.list(objects.PODS_PREFIX)
        containers = {c.pod: c for c in await self.runtime.list()}
        for obj in pod_objs:
            name = obj["metadata"]["name"]
            c = containers.pop(name, None)
            if c is None or not c.running:
                log.info("pod %s has no running container; removing it", name)
                if c is not None:
                    await self._save_logs(obj["spec"]["function"], name, c.id)
                    await self.runtime.remove(c.id)
                with contextlib.suppress(NotFound):
                    await self.store.delete(objects.pod_key(name))
                continue
            rec = PodRecord(
                name=name, function=obj["spec"]["function"],
                template_hash=obj["spec"]["templateHash"], port=int(obj["spec"]["port"]),
                phase=PENDING, ready=False, created=self.clock.now(), container_id=c.id, obj=obj,
            )
            self.pods[name] = rec
            self.ports.used.add(rec.port)
            log.info("adopting pod %s (container %s)", name, c.id[:12])
            self._spawn(self._await_ready(rec))
        for c in containers.values():
            log.info("removing orphan container %s (pod %s)", c.id[:12], c.pod)
            await self._save_logs(c.function, c.pod, c.id)
            await self.runtime.remove(c.id)
        for rs in self.replicasets.items():
            self.enqueue(rs["metadata"]["name"])
        for rec in self.pods.values():
            self.enqueue(rec.function)

    # -- sync --------------------------------------------------------------------

    def pods_of(self, function: str) -> list[PodRecord]:
        return [p for p in self.pods.values() if p.function == function]

    async def sync(self, name: str) -> None:
        try:
            rs = await self.store.get(objects.replicaset_key(name))
        except NotFound:
            rs = None
        if rs is None:
            desired, template, thash = 0, None, None
        else:
            desired = int(rs["spec"].get("replicas", 0))
            template = rs["spec"].get("template")
            thash = rs["spec"].get("templateHash") if template else None
        pods = self.pods_of(name)
        p = plan(desired, thash, [r.view() for r in pods])
        for pod_name in p.remove:
            rec = self.pods[pod_name]
            # Only a healthy pod of the current template, removed by a scale-down, is
            # worth keeping frozen; failed and outdated ones are gone for good.
            park = (self.keep_paused > 0 and rec.template_hash == thash and rec.ready
                    and rec.container_id is not None)
            rec.phase, rec.ready = TERMINATING, False
            self._spawn(self._terminate(rec, template, park))
        if rs is None and self.parked.get(name):
            self._spawn(self._evict(name, None))
        create = p.create
        crashes, not_before = self._crashes.get(name, (0, 0.0))
        wait = not_before - asyncio.get_running_loop().time()
        if create and wait > 0:
            log.info("%s: %d pod failures in a row; next pod in %.1f s", name, crashes, wait)
            self._spawn(self._enqueue_later(name, wait))
            create = 0
        for _ in range(create):
            assert template is not None and thash is not None
            parked = self._take_parked(name, thash)
            if parked is not None:
                rec = PodRecord(
                    name=parked.pod, function=name, template_hash=thash, port=parked.port,
                    phase=PENDING, ready=False, created=self.clock.now(),
                    container_id=parked.container_id,
                )
                self.pods[rec.name] = rec
                self._spawn(self._resume(rec, template))
                continue
            rec = PodRecord(
                name=f"{name}-{secrets.token_hex(3)}", function=name, template_hash=thash,
                port=self.ports.allocate(), phase=PENDING, ready=False, created=self.clock.now(),
            )
            self.pods[rec.name] = rec
            self._spawn(self._launch(rec, template))
        if rs is not None:
            await self._write_rs_status(rs)

    def _take_parked(self, function: str, thash: str) -> Parked | None:
        stack = self.parked.get(function)
        while stack:
            p = stack.pop()  # the most recently parked: the warmest
            if p.template_hash == thash:
                return p
            self._spawn(self._remove_parked(p))
        return None

    async def _resume(self, rec: PodRecord, template: Obj) -> None:
        assert rec.container_id is not None
        try:
            rec.obj = await self.store.create(objects.pod_key(rec.name),
                                              self._pod_object(rec, template))
            await self.runtime.unpause(rec.container_id)
        except Exception as exc:
            await self._start_failed(rec, f"paused container could not be resumed: {exc}")
            return
        log.info("pod %s resumed from pause", rec.name)
        await self._await_ready(rec)

    async def _start_failed(self, rec: PodRecord, message: str) -> None:
        log.warning("pod %s: %s", rec.name, message)
        self._pod_failed(rec, message)
        await self._write_pod(rec)
        self.enqueue(rec.function)

    async def _remove_parked(self, p: Parked) -> None:
        try:
            await self._save_logs(p.function, p.pod, p.container_id)
            await self.runtime.remove(p.container_id)
        except Exception as exc:
            log.warning("removing paused container of %s failed: %s", p.pod, exc)
            return
        self.ports.release(p.port)

    async def _evict(self, function: str, current_hash: str | None,
                     now: float | None = None) -> None:
        """Remove parked containers of another template (all, for None), or older than
        ``keep_paused`` at ``now``."""
        keep = []
        for p in self.parked.pop(function, []):
            expired = now is not None and now - p.since > self.keep_paused
            if p.template_hash != current_hash or expired:
                await self._remove_parked(p)
            else:
                keep.append(p)
        if keep:
            self.parked.setdefault(function, []).extend(keep)

    async def _evict_stale(self) -> None:
        now = asyncio.get_running_loop().time()
        for function in list(self.parked):
            rs = self.replicasets.get(function)
            await self._evict(function, rs["spec"].get("templateHash") if rs else None, now)

    async def _enqueue_later(self, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        self.enqueue(name)

    def _pod_failed(self, rec: PodRecord, message: str) -> None:
        """Record a failure: the data plane stops waiting for it, and replacements back off."""
        rec.phase, rec.ready, rec.message = FAILED, False, message
        n = self._crashes.get(rec.function, (0, 0.0))[0] + 1
        delay = min(self.crash_backoff * 2 ** (n - 1), CRASH_BACKOFF_MAX)
        self._crashes[rec.function] = (n, asyncio.get_running_loop().time() + delay)
        self.endpoints.pod_failed(rec.function, rec.name, message)

    async def _write_rs_status(self, rs: Obj) -> None:
        pods = [p for p in self.pods_of(rs["metadata"]["name"]) if p.phase != TERMINATING]
        status = {
            "replicas": len(pods),
            "readyReplicas": sum(1 for p in pods if p.ready),
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        if rs.get("status") == status:
            return  # write status only when it changed
        new = copy.deepcopy(rs)
        new["status"] = status
        try:
            await self.store.update(objects.replicaset_key(rs["metadata"]["name"]), new)
        except (Conflict, NotFound):
            self.enqueue(rs["metadata"]["name"])  # changed under us: sync again

    # -- pod lifecycle -----------------------------------------------------------

    def _pod_object(self, rec: PodRecord, template: Obj) -> Obj:
        obj = objects.new_object(
            "Pod", rec.name,
            {
                "function": rec.function, "image": template["image"], "port": rec.port,
                "templateHash": rec.template_hash, "functionGeneration": template.get("generation"),
            },
            namespace=objects.NAMESPACE,
            labels={"function": rec.function, "templateHash": rec.template_hash},
        )
        obj["status"] = self._pod_status(rec)
        return obj

    def _pod_status(self, rec: PodRecord) -> Obj:
        status: Obj = {"phase": rec.phase, "ready": rec.ready, "hostIP": "127.0.0.1",
                       "port": rec.port, "containerID": rec.container_id}
        if rec.message:
            status["message"] = rec.message
        return status

    async def _write_pod(self, rec: PodRecord) -> None:
        """Record the pod's phase in etcd. Best effort: the data plane must not wait on it."""
        if rec.obj is None:
            return
        new = copy.deepcopy(rec.obj)
        new["status"] = self._pod_status(rec)
        if new["status"] == rec.obj.get("status"):
            return
        try:
            rec.obj = await self.store.update(objects.pod_key(rec.name), new)
        except Conflict:
            rec.obj = await self.store.get(objects.pod_key(rec.name))
            await self._write_pod(rec)
        except (NotFound, StoreError) as exc:
            log.warning("could not record pod %s status: %s", rec.name, exc)

    async def _launch(self, rec: PodRecord, template: Obj) -> None:
        try:
            rec.obj = await self.store.create(objects.pod_key(rec.name),
                                              self._pod_object(rec, template))
            env = dict(template.get("env") or {})
            env["ALLINONE_HANDLER"] = template.get("handler", "run")
            res = template.get("resources") or {}
            rec.container_id = await self.runtime.start(ContainerSpec(
                pod=rec.name, function=rec.function, image=template["image"], port=rec.port,
                env=env, memory_mib=int(res.get("memoryMiB", 256)),
                cpus=float(res.get("cpus", 1.0)),
            ))
        except Exception as exc:
            await self._start_failed(rec, f"container failed to start: {exc}")
            return
        await self._await_ready(rec)

    async def _await_ready(self, rec: PodRecord) -> None:
        address = f"127.0.0.1:{rec.port}"
        loop = asyncio.get_running_loop()
        started = loop.time()
        next_liveness = started + 0.25
        while rec.phase == PENDING:
            if await self.probe(address):
                rec.phase, rec.ready = RUNNING, True
                self._crashes.pop(rec.function, None)
                # Tell the data plane first: the etcd write is for everybody else.
                self.endpoints.pod_ready(rec.function, rec.name, address)
                log.info("pod %s ready in %.0f ms", rec.name, (loop.time() - started) * 1000)
                self.enqueue(rec.function)
                await self._write_pod(rec)
                return
            now = loop.time()
            if now - started > PROBE_TIMEOUT:
                self._pod_failed(rec, f"did not answer /healthz within {PROBE_TIMEOUT:.0f} s")
                break
            if now >= next_liveness:
                next_liveness = now + 0.25
                if not await self._container_running(rec):
                    self._pod_failed(rec, "its container exited before it was ready (an import "
                                     f"error?): see `allinone logs {rec.function}`")
                    break
            await asyncio.sleep(PROBE_INTERVAL)
        if rec.phase == FAILED:
            await self._write_pod(rec)
            self.enqueue(rec.function)

    async def _container_running(self, rec: PodRecord) -> bool:
        for c in await self.runtime.list():
            if c.id == rec.container_id:
                return c.running
        return False

    async def _http_probe(self, address: str) -> bool:
        assert self._session is not None
        try:
            async with self._session.get(f"http://{address}/healthz") as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def _terminate(self, rec: PodRecord, template: Obj | None, park: bool = False) -> None:
        timeout = float((template or {}).get("timeoutSeconds", 60))
        try:
            await self._write_pod(rec)
            await self.endpoints.drain(rec.function, rec.name, timeout)
            if park and rec.container_id and await self._park(rec):
                with contextlib.suppress(NotFound):
                    await self.store.delete(objects.pod_key(rec.name))
                self.pods.pop(rec.name, None)  # its port stays allocated to the container
                self.enqueue(rec.function)
                return
            if rec.container_id:
                await self._save_logs(rec.function, rec.name, rec.container_id)
                await self.runtime.remove(rec.container_id)
            with contextlib.suppress(NotFound):
                await self.store.delete(objects.pod_key(rec.name))
        except Exception:
            log.exception("removing pod %s failed; will retry", rec.name)
            rec.phase = FAILED  # the plan removes Failed pods again
            self.enqueue(rec.function)
            return
        self.pods.pop(rec.name, None)
        self.ports.release(rec.port)
        self.enqueue(rec.function)

    async def _park(self, rec: PodRecord) -> bool:
        assert rec.container_id is not None
        try:
            await self.runtime.pause(rec.container_id)
        except Exception as exc:
            log.warning("could not pause pod %s (%s); removing it", rec.name, exc)
            return False
        self.parked.setdefault(rec.function, []).append(Parked(
            rec.name, rec.function, rec.template_hash, rec.port, rec.container_id,
            asyncio.get_running_loop().time()))
        return True

    async def _save_logs(self, function: str, pod: str, container_id: str) -> None:
        """Keep what a pod printed after its container is gone, for `allinone logs`."""
        text = await self.runtime.logs(container_id)
        if not text:
            return
        await asyncio.to_thread(self._append_log, function, f"--- pod {pod} ---\n{text}")

    def _append_log(self, function: str, text: str) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        with open(self.logs_dir / f"{function}.log", "a", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    async def live_logs(self, function: str, tail: int = 1000) -> str:
        parts = []
        for rec in self.pods_of(function):
            if rec.container_id:
                text = await self.runtime.logs(rec.container_id, tail)
                if text:
                    parts.append(f"--- pod {rec.name} ---\n{text}")
        return "".join(parts)

    async def _monitor(self) -> None:
        """Notice containers that died under a Running pod and fail the pod."""
        while True:
            await asyncio.sleep(MONITOR_INTERVAL)
            if self.parked:
                await self._evict_stale()
            try:
                running = {c.id for c in await self.runtime.list() if c.running}
            except Exception as exc:
                log.warning("cannot list containers: %s", exc)
                continue
            for rec in list(self.pods.values()):
                if rec.phase == RUNNING and rec.container_id not in running:
                    log.warning("container of pod %s died; replacing it", rec.name)
                    self._pod_failed(rec, f"its container exited: see `allinone logs "
                                     f"{rec.function}`")
                    await self.endpoints.drain(rec.function, rec.name, 0)
                    await self._write_pod(rec)
                    self.enqueue(rec.function)
