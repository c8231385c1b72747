"""The ReplicaSet controller: decides which pods a function has; the kubelet runs them.

Shape, after the Kubernetes ReplicaSet controller and client-go:

- The ReplicaSet informer (list+watch) enqueues a function name on every change; a
  keyed work queue makes sure one key is synced by one worker at a time, and a key
  enqueued while it is being synced is synced again afterwards. A sync that raises
  goes back to the queue with a backoff.
- ``sync(name)`` reads the ReplicaSet from the informer's cache (as a client-go
  controller reads its lister), asks the pure
  :func:`~allinone.controller.planning.plan` what to do, and starts that work: create
  a Pod object and hand it to the kubelet, or have the kubelet stop a pod and then
  delete its object. It is idempotent: a second sync with nothing changed does nothing.
  The cache may trail etcd by a watch event, never for good: every write the cache has
  not seen yet is followed by its event, which enqueues the key again (so a status
  write that meets a newer version just waits for it). A ReplicaSet the informer
  rejected as malformed is skipped: its pods stay as they are until it is fixed or
  deleted, never taken for a deletion.
- Every ``RESYNC_INTERVAL`` (15 s) every function is synced again, a safety net like
  client-go's resync for a change whose event reached no handler. It reads nothing
  from etcd: one GET per ReplicaSet every 15 s was a third of an idle server's CPU
  with 40 warm functions.
- The controller is the only writer of Pod objects' existence, so it keeps the
  authoritative pod table in memory (``self.pods``) and updates it synchronously with
  its own writes; this is what Kubernetes calls "expectations" and avoids double
  creates while the watch catches up. etcd holds the same pods for everybody else and
  for restarts. The kubelet (:mod:`allinone.kubelet`) owns everything about a running
  pod: container, socket directory, probes, liveness, paused pods, crash backoff, logs.

Pod lifecycle: ``Pending`` (Pod object written, container starting) -> ``Running``
with ``ready: true`` once its shim answers on its socket -> ``Terminating`` (drained
by the activator: no new requests, removed after in-flight ones finish) -> deleted. A
container that dies makes its pod ``Failed``; the plan removes it and creates a
replacement (after the kubelet's crash backoff).

On start, the kubelet adopts running containers that match Pod objects; the other Pod
objects are deleted, so a restart never leaves duplicates or strays. All time comes
from the injected :class:`~allinone.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Awaitable

from allinone import objects
from allinone.clock import Clock
from allinone.controller.planning import FAILED, TERMINATING, plan
from allinone.informer import Informer
from allinone.kubelet import parking
from allinone.kubelet.kubelet import Kubelet, PodRecord
from allinone.store import Conflict, NotFound, Obj, Store
from allinone.workqueue import WorkQueue

log = logging.getLogger(__name__)

RESYNC_INTERVAL = 15.0  # s between full resyncs, a safety net like client-go's resync


class ReplicaSetController:
    def __init__(self, store: Store, replicasets: Informer, kubelet: Kubelet, clock: Clock,
                 workers: int = 4) -> None:
        self.store = store
        self.replicasets = replicasets
        self.kubelet = kubelet
        self.clock = clock
        self.pods: dict[str, PodRecord] = {}
        self.queue = WorkQueue("replicaset-controller", self.sync, workers, clock=clock)
        self._tasks: set[asyncio.Task[None]] = set()
        # pod -> the write of its Pod object, while it is under way
        self._creating: dict[str, asyncio.Future[Obj]] = {}
        self.started = asyncio.Event()
        replicasets.add_handler(self._on_replicaset)
        kubelet.on_change = self.enqueue

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
        kubelet = asyncio.ensure_future(self.kubelet.run())
        try:
            await self.kubelet.watching.wait()
            await self.replicasets.synced.wait()
            await self.adopt()
            self.started.set()
            await asyncio.gather(kubelet, self._resync(), self.queue.run())
        finally:
            kubelet.cancel()
            for task in list(self._tasks):
                task.cancel()

    async def _resync(self) -> None:
        while True:
            await self.clock.sleep(RESYNC_INTERVAL)
            for name in {rs["metadata"]["name"] for rs in self.replicasets.items()} | {
                p.function for p in self.pods.values()
            }:
                self.enqueue(name)

    async def adopt(self) -> None:
        """Take over the pods of a previous run: the kubelet matches containers."""
        pod_objs, _ = await self.store.list(objects.PODS_PREFIX)
        for rec in await self.kubelet.adopt(pod_objs):
            self.pods[rec.name] = rec
        for obj in pod_objs:
            name = obj["metadata"]["name"]
            if name not in self.pods:
                with contextlib.suppress(NotFound):
                    await self.store.delete(objects.pod_key(name))
        for rs in self.replicasets.items():
            self.enqueue(rs["metadata"]["name"])
        for rec in self.pods.values():
            self.enqueue(rec.function)

    # -- sync --------------------------------------------------------------------

    def pods_of(self, function: str) -> list[PodRecord]:
        return [p for p in self.pods.values() if p.function == function]

    async def sync(self, name: str) -> None:
        if objects.replicaset_key(name) in self.replicasets.invalid:
            return  # malformed (the informer logged why): leave its pods be
        rs = self.replicasets.get(name)
        if rs is None:
            desired, template, thash = 0, None, None
        else:
            desired = int(rs["spec"].get("replicas", 0))
            template = rs["spec"].get("template")
            thash = rs["spec"].get("templateHash") if template else None
        p = plan(desired, thash, [r.view() for r in self.pods_of(name)])
        for pod_name in p.remove:
            rec = self.pods[pod_name]
            # Only a healthy pod of the current template, removed by a scale-down, is
            # worth keeping frozen; failed and outdated ones are gone for good.
            park = parking.worth_parking(self.kubelet.keep_paused, rec.template_hash, thash,
                                         rec.ready, rec.container_id is not None)
            rec.phase, rec.ready = TERMINATING, False
            self._spawn(self._delete(rec, template, park))
        if self.kubelet.has_spare(name):
            self._spawn(self.kubelet.evict(name, thash))
        create = p.create
        wait = self.kubelet.start_delay(name)
        if create and wait > 0:
            log.info("%s: %d pod failures in a row; next pod in %.1f s", name,
                     self.kubelet.crash_count(name), wait)
            self._spawn(self._enqueue_later(name, wait))
            create = 0
        for _ in range(create):
            assert template is not None and thash is not None
            rec = self.kubelet.new_pod(name, thash)
            self.pods[rec.name] = rec
            self._spawn(self._create(rec, template))
        # At zero, the next cold start finds its container created (the kubelet's
        # standby): only Docker's start is left on the request's path.
        self.kubelet.want_standby(name, desired, len(self.pods_of(name)), template, thash)
        if rs is not None:
            await self._write_rs_status(rs)

    async def _create(self, rec: PodRecord, template: Obj) -> None:
        # The Pod object is written while the kubelet creates the container (both take
        # milliseconds to hundreds of them; in a row they added up on every cold start).
        stored = asyncio.ensure_future(self.store.create(
            objects.pod_key(rec.name), self.kubelet.pod_object(rec, template)))
        self._creating[rec.name] = stored
        stored.add_done_callback(lambda f: self._created(rec.name, f))
        try:
            await self.kubelet.start(rec, template, stored)
        except Exception as exc:
            # No Pod object, no pod: the kubelet removed the container; forget it, and
            # the next sync plans it again.
            log.warning("could not create pod %s: %s", rec.name, exc)
            self.pods.pop(rec.name, None)
            self._spawn(self._enqueue_later(rec.function, 0.5))

    def _created(self, pod: str, stored: asyncio.Future[Obj]) -> None:
        self._creating.pop(pod, None)
        if not stored.cancelled():
            stored.exception()  # seen here even when the kubelet never awaited it

    async def _delete(self, rec: PodRecord, template: Obj | None, park: bool) -> None:
        timeout = float((template or {}).get("timeoutSeconds", 60))
        try:
            await self.kubelet.stop(rec, timeout, park)
            creating = self._creating.get(rec.name)
            if creating is not None:  # deleting before the create landed would leave it
                with contextlib.suppress(Exception):
                    await asyncio.shield(creating)
            with contextlib.suppress(NotFound):
                await self.store.delete(objects.pod_key(rec.name))
        except Exception:
            log.exception("removing pod %s failed; will retry", rec.name)
            rec.phase = FAILED  # the plan removes Failed pods again
            self.enqueue(rec.function)
            return
        self.pods.pop(rec.name, None)
        self.enqueue(rec.function)

    async def _enqueue_later(self, name: str, delay: float) -> None:
        await self.clock.sleep(delay)
        self.enqueue(name)

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
        with contextlib.suppress(Conflict, NotFound):
            # A newer version (or its deletion) is in etcd and its watch event, which
            # enqueues this key, is on its way: syncing again before it arrives would
            # read the same cached object and meet the same conflict.
            await self.store.update(objects.replicaset_key(rs["metadata"]["name"]), new)

