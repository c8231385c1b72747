"""The pod-lifecycle component: runs the pods the ReplicaSet controller decides on.

The controller says *which* pods exist (it creates and deletes Pod objects); the
kubelet makes each one real and reports on it, as Kubernetes' kubelet does:

- **start** (:meth:`Kubelet.start`): the pod's socket directory
  (:class:`~allinone.kubelet.poddir.PodDirs`), then a sandboxed container
  (:class:`~allinone.runtime.base.ContainerSpec`), or the unpause of a parked one;
  then the readiness probe, ``GET /healthz`` over the pod's Unix socket, sent once
  the socket file exists (the shim binds it after importing the function): an inotify
  watch (:mod:`~allinone.kubelet.sockwatch`) wakes the probe when it appears, with a
  check every :data:`~allinone.kubelet.sockwatch.SLOW_POLL` as a safety net, then every
  :data:`PROBE_INTERVAL` until it answers; meanwhile the container is watched through
  the runtime's event stream (a ``die`` ends the wait at once; no container listing
  per pending pod).
  Ready -> the data plane is told first (``pod_ready``), then etcd.
- **liveness**: the same event stream fails a Running pod whose container dies, with
  the runtime's words for why (exit code, ``OOMKilled`` and the memory limit), which
  the data plane puts in the error of the requests that were on it; a container list
  every :data:`SAFETY_LIST_INTERVAL` catches events lost while the stream reconnected.
- **retire** (:meth:`Kubelet.retire`): a pod whose container lives but must not serve
  again (a handler outlived ``timeoutSeconds`` and may spin forever) is marked Failed
  without crash backoff; the controller drains and removes it and starts another.
- **crash backoff**: consecutive failures of a function's pods delay its next pod
  (0.5 s doubling to :data:`CRASH_BACKOFF_MAX`); the controller asks
  :meth:`Kubelet.start_delay` before it creates one.
- **stop** (:meth:`Kubelet.stop`): drain through the data plane, then park (paused
  pods, below) or remove the container (a pod deleted while Docker was still creating
  its container has it removed by :meth:`Kubelet.start` as soon as Docker answers),
  keep what it printed in ``logs/FUNCTION.log`` (``allinone logs``), and remove its
  socket directory.
- **adoption** after a restart: containers matching Pod objects are probed again;
  other containers and socket directories are removed.

Standby containers (``standby`` ``"frozen"`` or ``"created"``; ``allinone serve
--standby``, frozen by default): while a function is at zero, one container of its
current template waits with its socket directory; the next pod of that template takes
it (:meth:`Kubelet.new_pod` hands its name back).

- *created*: the container is created, not started (Docker's create off the cold
  path: a fifth to a third of create + start here). No process, no memory, no CPU.
- *frozen*: the container is also started, probed until its shim answers ``/healthz``
  (the function's imports are done) and then frozen (``docker pause``): the next pod
  only unpauses it, ~20 ms instead of ~400 ms, and forty functions at zero invoked at
  once no longer queue for Docker's starts (~4-5 a second on this machine). It costs
  the frozen process's memory (no CPU) while the function is at zero; the function's
  module code runs when the standby is made, as in Lambda's init phase. A template
  whose frozen standby never became healthy (its import fails, say) gets a created
  standby instead, until the template changes: a broken function must not loop
  through Docker starts while it sits at zero.

It is the idea of OpenWhisk's prewarmed (and paused) containers, per function.
Invariants: at most one per function and :data:`STANDBY_MAX` in all (those being made
count); it goes when the template changes, when the ReplicaSet goes
(:meth:`Kubelet.evict`), and at a restart (a container without a Pod object); a
standby that fails to start or resume is removed and the pod starts a fresh container.

Paused pods (opt-in, ``keep_paused`` seconds > 0): a healthy pod removed by a
scale-down is drained, then frozen (``docker pause``) with its socket directory kept;
the next scale-up of the same template resumes it (:meth:`Kubelet.new_pod` hands its
name back): ~20 ms to the first answer instead of a container start. A parked
container is not a pod (no Pod object, counted nowhere); it goes after
``keep_paused`` seconds, when the template changes or the ReplicaSet goes, and at a
restart (as a container without a Pod object).

All time comes from the injected :class:`~allinone.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from allinone import objects
from allinone.clock import Clock
from allinone.controller.planning import FAILED, PENDING, RUNNING, TERMINATING, PodView
from allinone.kubelet import parking
from allinone.kubelet.parking import PARKED_CHECK_INTERVAL, STANDBY_MODES
from allinone.kubelet.poddir import PodDirs
from allinone.kubelet.sockwatch import SLOW_POLL, SocketWatch
from allinone.podclient import probe as socket_probe
from allinone.runtime.base import ContainerEvent, ContainerRuntime, ContainerSpec
from allinone.store import Conflict, NotFound, Obj, Store, StoreError

log = logging.getLogger(__name__)

CRASH_BACKOFF_MAX = 30.0  # s: the longest wait before replacing a crash-looping pod
PROBE_INTERVAL = 0.004  # s between /healthz probes: a container starts in ~100 ms
PROBE_TIMEOUT = 120.0   # s a pod may take to answer /healthz (big imports) before it fails
SAFETY_LIST_INTERVAL = 5.0   # s between container lists that catch lost events
# How a pod's container started, for the pod-start metric (``Kubelet.on_started``).
START_KINDS = ("created", "standby", "resumed")
# Standby containers at most: a created one is a config and an empty writable layer (a
# few KB), a frozen one holds its process's memory (measured: 6 MiB of cgroup memory,
# 12 MiB resident for a small function; more with big imports), and every container
# list of the safety net returns them. 100 frozen small functions: ~1 GB.
STANDBY_MAX = 100
# Saved logs of a function (logs/NAME.log): rotated to NAME.log.1 past this size, so
# what all its retired pods printed takes at most twice this on disk.
SAVED_LOG_MAX_BYTES = 10 * 1024 * 1024


class EndpointSink(Protocol):
    """What the kubelet tells the data plane (the activator implements it)."""

    def pod_ready(self, function: str, pod: str, address: str) -> None:
        """``address`` is the path of the pod's Unix socket (connectable as given)."""
        ...

    def pod_failed(self, function: str, pod: str, message: str) -> None:
        """A pod failed (to start, or while running); requests held for it can stop waiting."""
        ...

    async def drain(self, function: str, pod: str, timeout: float) -> None:
        """Stop routing new requests to ``pod``; return when in-flight ones finished."""
        ...


ProbeFn = Callable[[str], Awaitable[bool]]


@dataclass
class PodRecord:
    """One pod; shared by the controller (desired side) and the kubelet (actual side)."""

    name: str
    function: str
    template_hash: str
    phase: str
    ready: bool
    created: float
    container_id: str | None = None
    obj: Obj | None = None  # as last stored in etcd
    message: str = ""
    # Pods of the function that failed in a row before this one started: a crashed pod
    # is replaced, not restarted in place, so this is what Kubernetes' restartCount
    # counts (shown as ``status.restartCount``).
    restarts: int = 0
    # The standby container this pod starts (created) or resumes (frozen) instead of
    # creating one; its id becomes ``container_id`` once it runs, so the safety net
    # never takes a container that was never started for a dead one.
    standby: Standby | None = None
    # The standby still being made when this pod was created: the pod waits for it
    # (it is ahead of a fresh container) and takes what it gives (None: start afresh).
    standby_wait: asyncio.Future[Standby | None] | None = None
    # How its container started (a ``START_KINDS`` word) and the clock time the kubelet
    # began it; None for an adopted pod (its start was another run's).
    start_kind: str = ""
    start_began: float | None = None

    def view(self) -> PodView:
        return PodView(self.name, self.template_hash, self.phase, self.ready, self.created)


@dataclass(frozen=True)
class Parked:
    """A drained pod's container, frozen for reuse by the next scale-up."""

    pod: str
    function: str
    template_hash: str
    container_id: str
    since: float  # clock time it was parked


@dataclass(frozen=True)
class Standby:
    """A container waiting for a function's next pod (see the module doc)."""

    pod: str
    function: str
    template_hash: str
    container_id: str
    # "created" (never started), "paused" (frozen: started, healthy, paused) or
    # "running" (healthy, handed to a pod that was waiting for it before its pause).
    state: str = "created"


@dataclass
class _Making:
    """A standby being made: its pod name, and whether a pod waits for it."""

    pod: str
    template_hash: str
    handed: asyncio.Future[Standby | None]
    claimed: bool = False


class Kubelet:
    def __init__(
        self,
        store: Store,
        runtime: ContainerRuntime,
        endpoints: EndpointSink,
        clock: Clock,
        pods_dir: Path,
        logs_dir: Path,
        probe: ProbeFn | None = None,
        crash_backoff: float = 0.5,
        keep_paused: float = 0.0,
        standby: str = "off",
    ) -> None:
        if standby not in STANDBY_MODES:
            raise ValueError(f"standby must be one of {', '.join(STANDBY_MODES)}, "
                             f"got {standby!r}")
        self.store = store
        self.runtime = runtime
        self.endpoints = endpoints
        self.clock = clock
        self.dirs = PodDirs(pods_dir)
        self.logs_dir = logs_dir
        self.probe = probe or socket_probe
        # The real probe waits for the socket file (inotify) before it connects; a test's
        # probe stands for the whole pod, files included.
        self.sockets = SocketWatch(pods_dir) if probe is None else None
        self.crash_backoff = crash_backoff
        self.keep_paused = keep_paused
        # Called with a function's name whenever one of its pods changed state.
        self.on_change: Callable[[str], None] = lambda function: None
        # Called when a pod turned Ready: (function, START_KINDS word, seconds since the
        # kubelet began starting it); the app records it as allinone_pod_start_seconds.
        self.on_started: Callable[[str, str, float], None] = lambda f, kind, s: None
        self.pods: dict[str, PodRecord] = {}
        self.parked: dict[str, list[Parked]] = {}
        self.standby_mode = standby
        self.standby_on = standby != "off"
        # function -> the template hash whose frozen standby never became healthy: it
        # gets created standbys until its template changes (one entry per function).
        self._unfreezable: dict[str, str] = {}
        self.standby: dict[str, Standby] = {}  # function -> its standby container
        self._making: dict[str, _Making] = {}  # function -> its standby being made
        # Consecutive pod failures per function and the clock time before which no
        # replacement starts.
        self._crashes: dict[str, tuple[int, float]] = {}
        self._dead: set[str] = set()  # container ids seen dying
        # container id -> set when it dies (and, while it starts, when its socket appears)
        self._died: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.watching = asyncio.Event()  # the event stream is subscribed

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- loops -----------------------------------------------------------------------

    async def run(self) -> None:
        events = self.runtime.events()
        self.watching.set()
        try:
            await asyncio.gather(self._watch(events), self._expire_parked(), self._safety_net())
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self.sockets is not None:
                self.sockets.stop()
            close = getattr(events, "aclose", None)  # stops Docker's event reader thread
            if close is not None:
                with contextlib.suppress(RuntimeError):  # already closing with its task
                    await close()

    async def _watch(self, events: AsyncIterator[ContainerEvent]) -> None:
        async for ev in events:
            try:
                if ev.action == "resync":
                    await self._check_containers()
                elif ev.action in ("die", "destroy"):
                    await self._container_died(ev.id)
            except Exception:  # one bad event must not stop the watch
                log.exception("handling container event %s failed", ev)

    async def _container_died(self, container_id: str) -> None:
        self._dead.add(container_id)
        died = self._died.get(container_id)
        if died is not None:
            died.set()  # a pod waiting to be ready stops waiting
        for rec in list(self.pods.values()):
            if rec.container_id == container_id and rec.phase == RUNNING:
                try:
                    why = await self.runtime.exit_reason(container_id)
                except Exception as exc:  # the message is a courtesy; the failure is not
                    why = f"its container exited ({exc})"
                log.warning("container of pod %s died (%s); replacing it", rec.name, why)
                self._fail(rec, f"{why or 'its container exited'}: see "
                           f"`allinone logs {rec.function}`")
                await self.endpoints.drain(rec.function, rec.name, 0)
                await self.write_status(rec)
                self.on_change(rec.function)

    async def _check_containers(self) -> None:
        """Treat pods whose containers are gone as if their ``die`` had been seen.

        Only containers known before the list was asked for: one created while the
        list was under way (seconds, on a busy engine) is missing from it but alive, and
        taking it for dead failed a cold burst's first pod ("exited before it was ready").
        """
        known = {rec.container_id for rec in self.pods.values() if rec.container_id}
        running = {c.id for c in await self.runtime.list() if c.running}
        for rec in list(self.pods.values()):
            if rec.container_id in known and rec.phase in (PENDING, RUNNING) \
                    and rec.container_id not in running:
                await self._container_died(rec.container_id)

    async def _safety_net(self) -> None:
        while True:
            await self.clock.sleep(SAFETY_LIST_INTERVAL)
            try:
                await self._check_containers()
            except Exception as exc:
                log.warning("cannot list containers: %s", exc)

    async def _expire_parked(self) -> None:
        while True:
            await self.clock.sleep(PARKED_CHECK_INTERVAL)
            now = self.clock.now()
            for function in list(self.parked):
                try:
                    await self._evict(function, None, keep_current_until=now)
                except Exception:
                    log.exception("evicting parked pods of %s failed", function)

    # -- what the controller calls ------------------------------------------------------

    def retire(self, function: str, pod: str, reason: str) -> None:
        """Replace a Running pod whose container lives on but must not serve again (a
        handler outlived timeoutSeconds there and may run forever). Not a crash: no
        backoff. The controller removes the Failed pod (drained first, so its other
        requests finish) and starts another."""
        rec = self.pods.get(pod)
        if rec is None or rec.phase != RUNNING:
            return
        log.warning("retiring pod %s: %s", pod, reason)
        rec.phase, rec.ready, rec.message = FAILED, False, reason
        self._spawn(self.write_status(rec))
        self.on_change(function)

    def start_delay(self, function: str) -> float:
        """Seconds before a new pod of ``function`` may start (crash-loop backoff)."""
        crashes = self._crashes.get(function)
        return 0.0 if crashes is None else max(crashes[1] - self.clock.now(), 0.0)

    def crash_count(self, function: str) -> int:
        return self._crashes.get(function, (0, 0.0))[0]

    def new_pod(self, function: str, template_hash: str) -> PodRecord:
        """A record for the next pod: a parked container of that template if there is
        one (it keeps its name and socket directory), else a fresh name."""
        rec = PodRecord(name=f"{function}-{secrets.token_hex(3)}", function=function,
                        template_hash=template_hash, phase=PENDING, ready=False,
                        created=self.clock.now(), restarts=self.crash_count(function))
        stack = self.parked.get(function)
        if stack:
            p, stale = parking.take(stack, template_hash)
            if p is not None:
                rec.name, rec.container_id = p.pod, p.container_id
            for old in stale:
                self._spawn(self._remove_parked(old))
        if rec.container_id is None and (s := self.standby.pop(function, None)) is not None:
            if s.template_hash == template_hash:
                rec.name, rec.standby = s.pod, s
            else:
                self._spawn(self._remove_standby(s))
        m = self._making.get(function)
        if rec.container_id is None and rec.standby is None and m is not None \
                and m.template_hash == template_hash and not m.claimed:
            # Deployed and invoked at once: the standby started a moment ago is ahead
            # of a fresh container, and two starts would share the engine.
            m.claimed = True
            rec.name, rec.standby_wait = m.pod, m.handed
        return rec

    def pod_object(self, rec: PodRecord, template: Obj) -> Obj:
        obj = objects.new_object(
            "Pod", rec.name,
            {
                "function": rec.function, "image": template["image"],
                "network": template.get("network", "none"),
                "templateHash": rec.template_hash, "functionGeneration": template.get("generation"),
            },
            namespace=objects.NAMESPACE,
            labels={"function": rec.function, "templateHash": rec.template_hash},
        )
        obj["status"] = self._status(rec)
        return obj

    async def start(self, rec: PodRecord, template: Obj,
                    recorded: Awaitable[Obj] | None = None) -> None:
        """Run the pod until it is Ready or Failed.

        ``recorded`` is the write of its Pod object, under way while the container is
        created (a cold start waits for Docker, not for etcd and then Docker). If that
        write fails, the container is removed and the error raised: no Pod object, no
        pod. Without it, the Pod object exists already (``rec.obj``)."""
        rec.start_began = self.clock.now()
        if rec.standby_wait is not None:
            rec.standby, rec.standby_wait = await rec.standby_wait, None
        if rec.phase == TERMINATING:  # deleted before it started
            await self._drop_standby(rec)
            return
        self.pods[rec.name] = rec
        # A frozen standby resumes as a parked pod does: for the metric it is a resume.
        state = rec.standby.state if rec.standby is not None else None
        rec.start_kind = "resumed" if rec.container_id is not None or state == "paused" \
            else "standby" if state is not None else "created"
        if rec.container_id is not None:  # a parked container: resume it
            if recorded is not None:
                await self._recorded(rec, recorded)
            try:
                await self.runtime.unpause(rec.container_id)
            except Exception as exc:
                await self._start_failed(rec, f"paused container could not be resumed: {exc}")
                return
            log.info("pod %s resumed from pause", rec.name)
        else:
            try:
                if rec.standby is not None:
                    rec.container_id = await self._run_standby(rec, template)
                else:
                    rec.container_id = await self.runtime.start(
                        await self._container_spec(rec.name, rec.function, template))
            except Exception as exc:
                if recorded is not None:
                    await self._recorded(rec, recorded)
                await self._start_failed(rec, f"container failed to start: {exc}")
                return
            if recorded is not None:
                await self._recorded(rec, recorded)
            if rec.phase == TERMINATING or rec.name not in self.pods:
                # Deleted while its container was being created: :meth:`stop` found no
                # container to remove, so the container is ours to remove now.
                await self._remove_late(rec)
                return
        await self._await_ready(rec)

    async def _container_spec(self, pod: str, function: str, template: Obj) -> ContainerSpec:
        """The pod's container, with its socket directory made (the one place a pod
        template becomes a :class:`ContainerSpec`)."""
        env = dict(template.get("env") or {})
        env["ALLINONE_HANDLER"] = template.get("handler", "run")
        res = template.get("resources") or {}
        socket_dir = await asyncio.to_thread(self.dirs.create, pod)
        return ContainerSpec(
            pod=pod, function=function, image=template["image"],
            socket_dir=socket_dir, user=self.dirs.user,
            network=template.get("network", "none"), env=env,
            memory_mib=int(res.get("memoryMiB", 256)), cpus=float(res.get("cpus", 1.0)),
        )

    async def _run_standby(self, rec: PodRecord, template: Obj) -> str:
        """Start (or resume, if frozen) the pod's standby container; if that fails
        (removed behind our back, say), remove it and start a fresh one: a standby only
        ever saves time."""
        assert rec.standby is not None
        s, rec.standby = rec.standby, None
        try:
            if s.state == "paused":
                await self.runtime.unpause(s.container_id)
            elif s.state == "created":
                await self.runtime.run(s.container_id)
            log.info("pod %s: took its %s standby container", rec.name, s.state)
            return s.container_id
        except Exception as exc:
            log.warning("pod %s: its %s standby container would not run (%s); creating one",
                        rec.name, s.state, exc)
            rec.start_kind = "created"
            with contextlib.suppress(Exception):
                await self.runtime.remove(s.container_id)
        return await self.runtime.start(
            await self._container_spec(rec.name, rec.function, template))

    # -- standby containers ----------------------------------------------------------

    def want_standby(self, function: str, desired: int, pods: int, template: Obj | None,
                     template_hash: str | None) -> None:
        """Called by the controller at each sync: make sure a standby of the current
        template exists or is being made when the rule (:func:`parking.wants_standby`)
        says the function wants one, and that none is left when it does not (one made
        while the function scaled up would hold a frozen process beside its pods)."""
        if template is None or template_hash is None or function in self._making:
            return
        if not parking.wants_standby(self.standby_on, desired, pods, template_hash,
                                     self.parked.get(function, ())):
            if (s := self.standby.pop(function, None)) is not None:
                self._spawn(self._remove_standby(s))
            return
        s = self.standby.get(function)
        if s is not None and s.template_hash == template_hash:
            return
        # Those being made count too: a thousand functions deployed at once must not
        # start a thousand Docker creates.
        if s is None and len(self.standby) + len(self._making) >= STANDBY_MAX:
            return
        m = _Making(f"{function}-{secrets.token_hex(3)}", template_hash,
                    asyncio.get_running_loop().create_future())
        self._making[function] = m
        self._spawn(self._prepare(function, template, m))

    async def _prepare(self, function: str, template: Obj, m: _Making) -> None:
        made: Standby | None = None
        try:
            frozen = self.standby_mode == "frozen" \
                and self._unfreezable.get(function) != m.template_hash
            made = await self._make_standby(function, template, m, m.pod, frozen)
            if made is None and frozen:
                # A created standby still saves the create (a waiting pod starts its
                # own container at once instead).
                if not m.claimed:
                    made = await self._make_standby(
                        function, template, m, f"{function}-{secrets.token_hex(3)}", False)
        finally:
            del self._making[function]
            # The waiting pod takes it (or starts afresh on None); a pod whose start
            # was cancelled meanwhile left the future cancelled: keep it as a standby.
            handed = m.claimed and not m.handed.done()
            if handed:
                m.handed.set_result(made)
        if made is None or handed:
            return
        if made.state == "running":  # handed over no more: freeze it as usual
            try:
                await self.runtime.pause(made.container_id)
                made = Standby(made.pod, function, made.template_hash, made.container_id,
                               "paused")
            except Exception as exc:
                log.warning("could not pause the standby of %s: %s", function, exc)
                await self._remove_standby(made)
                return
        old = self.standby.get(function)
        self.standby[function] = made
        if old is not None:
            await self._remove_standby(old)
        # The function may have been deleted, changed or scaled up meanwhile: the
        # controller looks again (and evicts it if it is no longer wanted).
        self.on_change(function)

    async def _make_standby(self, function: str, template: Obj, m: _Making, pod: str,
                            frozen: bool) -> Standby | None:
        """Create a standby container; with ``frozen``, also start it, wait until it
        is healthy and pause it, unless a pod claimed it meanwhile (then it is handed
        over running). None when that failed (logged)."""
        cid = None
        try:
            spec = await self._container_spec(pod, function, template)
            cid = await self.runtime.create(spec)
            state = "created"
            if frozen:
                await self.runtime.run(cid)
                why = await self._until_healthy(pod, cid, lambda: True)
                if why is not None:
                    # Its imports fail or hang (the logs say why): its template gets
                    # created standbys, so nothing loops through Docker starts at zero.
                    self._unfreezable[function] = m.template_hash
                    raise RuntimeError(why.format(function=function))
                state = "running"
                if not m.claimed:
                    await self.runtime.pause(cid)
                    state = "paused"
            return Standby(pod, function, m.template_hash, cid, state)
        except Exception as exc:
            log.warning("could not make a %s standby container for %s: %s",
                        "frozen" if frozen else "created", function, exc)
            if cid is not None:
                with contextlib.suppress(Exception):
                    if frozen:  # what its imports printed is the user's clue
                        await self._save_logs(function, pod, cid)
                    await self.runtime.remove(cid)
                self._died.pop(cid, None)
                self._dead.discard(cid)
            await asyncio.to_thread(self.dirs.remove, pod)
            return None

    async def _remove_standby(self, s: Standby) -> None:
        self._died.pop(s.container_id, None)
        try:
            await self.runtime.remove(s.container_id)
            await asyncio.to_thread(self.dirs.remove, s.pod)
        except Exception as exc:
            log.warning("removing standby container of %s failed: %s", s.function, exc)

    async def _drop_standby(self, rec: PodRecord) -> None:
        """A pod that took a standby but was deleted before starting it removes it."""
        if rec.standby is not None:
            s, rec.standby = rec.standby, None
            self._died.pop(s.container_id, None)
            await self.runtime.remove(s.container_id)  # raises: the caller retries
            await asyncio.to_thread(self.dirs.remove, s.pod)

    def has_spare(self, function: str) -> bool:
        """Whether ``function`` has parked or standby containers (for :meth:`evict`)."""
        return bool(self.parked.get(function)) or function in self.standby

    async def _recorded(self, rec: PodRecord, recorded: Awaitable[Obj]) -> None:
        try:
            rec.obj = await recorded
        except BaseException:
            log.warning("pod %s: its Pod object could not be written; removing its "
                        "container", rec.name)
            if rec.container_id is not None:
                with contextlib.suppress(Exception):
                    await self.runtime.remove(rec.container_id)
            await asyncio.to_thread(self.dirs.remove, rec.name)
            self._forget(rec)
            raise

    async def _remove_late(self, rec: PodRecord) -> None:
        assert rec.container_id is not None
        log.info("pod %s was deleted while starting; removing its container", rec.name)
        await self.runtime.remove(rec.container_id)
        await asyncio.to_thread(self.dirs.remove, rec.name)
        self._forget(rec)

    async def stop(self, rec: PodRecord, timeout: float, park: bool = False) -> None:
        """Drain the pod, then park or remove its container. Raises when removal failed
        (the caller retries); the Pod object is the caller's to delete afterwards."""
        await self.write_status(rec)
        await self.endpoints.drain(rec.function, rec.name, timeout)
        await self._drop_standby(rec)
        if park and rec.container_id and await self._park(rec):
            self._forget(rec)
            return
        if rec.container_id:
            await self._save_logs(rec.function, rec.name, rec.container_id)
            await self.runtime.remove(rec.container_id)
        await asyncio.to_thread(self.dirs.remove, rec.name)
        self._forget(rec)

    def _forget(self, rec: PodRecord) -> None:
        self.pods.pop(rec.name, None)
        if rec.container_id:
            self._died.pop(rec.container_id, None)
            self._dead.discard(rec.container_id)

    async def evict(self, function: str, current_hash: str | None) -> None:
        """Remove parked and standby containers of ``function`` of another template
        (all, for None)."""
        s = self.standby.get(function)
        if s is not None and s.template_hash != current_hash:
            del self.standby[function]
            await self._remove_standby(s)
        await self._evict(function, current_hash)

    async def adopt(self, pod_objs: list[Obj]) -> list[PodRecord]:
        """Match Pod objects with this instance's containers after a restart.

        Returns the adopted pods (they are probed again); the Pod objects of the others
        are the caller's to delete. Containers and socket directories without a Pod
        object are removed.
        """
        containers = {c.pod: c for c in await self.runtime.list()}
        adopted = []
        for obj in pod_objs:
            name = obj["metadata"]["name"]
            c = containers.pop(name, None)
            # A Pod of the old data plane (a loopback port, no socket) cannot be reached.
            if c is None or not c.running or "port" in obj["spec"]:
                log.info("pod %s has no usable container; removing it", name)
                if c is not None:
                    await self._save_logs(obj["spec"]["function"], name, c.id)
                    await self.runtime.remove(c.id)
                await asyncio.to_thread(self.dirs.remove, name)
                continue
            rec = PodRecord(
                name=name, function=obj["spec"]["function"],
                template_hash=obj["spec"]["templateHash"], phase=PENDING, ready=False,
                created=self.clock.now(), container_id=c.id, obj=obj,
                restarts=int((obj.get("status") or {}).get("restartCount") or 0),
            )
            self.pods[name] = rec
            adopted.append(rec)
            log.info("adopting pod %s (container %s)", name, c.id[:12])
            self._spawn(self._await_ready(rec))
        for c in containers.values():
            log.info("removing orphan container %s (pod %s)", c.id[:12], c.pod)
            await self._save_logs(c.function, c.pod, c.id)
            await self.runtime.remove(c.id)
        for name in await asyncio.to_thread(self.dirs.existing):
            if name not in self.pods:
                await asyncio.to_thread(self.dirs.remove, name)
        return adopted

    async def live_logs(self, function: str, tail: int = 1000) -> str:
        parts = []
        for rec in list(self.pods.values()):
            if rec.function == function and rec.container_id:
                text = await self.runtime.logs(rec.container_id, tail)
                if text:
                    parts.append(f"--- pod {rec.name} ---\n{text}")
        return "".join(parts)

    # -- readiness -------------------------------------------------------------------

    async def _await_ready(self, rec: PodRecord) -> None:
        assert rec.container_id is not None
        address = self.dirs.connect_path(rec.name)
        started = self.clock.now()
        why = await self._until_healthy(rec.name, rec.container_id,
                                        lambda: rec.phase == PENDING)
        if rec.phase != PENDING:
            return  # terminated while it started
        if why is not None:
            self._fail(rec, why.format(function=rec.function))
            await self.write_status(rec)
            self.on_change(rec.function)
            return
        rec.phase, rec.ready = RUNNING, True
        self._crashes.pop(rec.function, None)
        # Tell the data plane first: the etcd write is for everybody else.
        self.endpoints.pod_ready(rec.function, rec.name, address)
        log.info("pod %s ready in %.0f ms", rec.name, (self.clock.now() - started) * 1000)
        if rec.start_began is not None:
            self.on_started(rec.function, rec.start_kind, self.clock.now() - rec.start_began)
        self.on_change(rec.function)
        await self.write_status(rec)

    async def _until_healthy(self, pod: str, container_id: str,
                             wanted: Callable[[], bool]) -> str | None:
        """Probe ``pod`` until it answers ``/healthz`` (None), its container dies or
        :data:`PROBE_TIMEOUT` passes (the reason, with ``{function}`` to fill in), or
        ``wanted()`` turns false (None: the caller looks at why)."""
        address = self.dirs.connect_path(pod)
        socket_file = self.dirs.socket_path(pod)
        started = self.clock.now()
        # One wake-up event per starting pod: set when its container dies and when its
        # socket file appears (the socket watch); the loop re-checks which it was.
        wake = self._died.setdefault(container_id, asyncio.Event())
        if self.sockets is not None:
            self.sockets.start()
            self.sockets.watch(pod, wake)
        try:
            while wanted():
                # Nothing listens before the socket file exists: skip the connect, and
                # with the socket watch, sleep until it appears (or the container dies).
                watched = self.sockets is not None and self.sockets.active
                # A stat of a local file: cheaper than the thread hop aiofiles would take.
                if self.sockets is not None and not os.path.exists(socket_file):  # noqa: ASYNC240
                    healthy = False
                    interval = SLOW_POLL if watched else PROBE_INTERVAL
                else:
                    interval = PROBE_INTERVAL  # bound, not yet listening: a moment away
                    try:
                        healthy = await self.probe(address)
                    except Exception:  # a probe bug must not leave the pod Pending forever
                        log.exception("probing pod %s failed", pod)
                        healthy = False
                if healthy:
                    return None
                if container_id in self._dead:
                    return ("its container exited before it was ready (an import "
                            "error?): see `allinone logs {function}`")
                if self.clock.now() - started > PROBE_TIMEOUT:
                    return f"did not answer /healthz within {PROBE_TIMEOUT:.0f} s"
                if not wake.is_set():
                    try:  # the next probe, or at once when the socket appears or it dies
                        await self.clock.wait_for(wake.wait(), interval)
                    except TimeoutError:
                        pass
                wake.clear()
            return None
        finally:
            if self.sockets is not None:
                self.sockets.forget(pod)

    # -- failures and backoff -------------------------------------------------------

    def _fail(self, rec: PodRecord, message: str) -> None:
        """Record a failure: the data plane stops waiting for it, and replacements back off."""
        rec.phase, rec.ready, rec.message = FAILED, False, message
        n = self._crashes.get(rec.function, (0, 0.0))[0] + 1
        delay = min(self.crash_backoff * 2 ** (n - 1), CRASH_BACKOFF_MAX)
        self._crashes[rec.function] = (n, self.clock.now() + delay)
        self.endpoints.pod_failed(rec.function, rec.name, message)

    async def _start_failed(self, rec: PodRecord, message: str) -> None:
        log.warning("pod %s: %s", rec.name, message)
        self._fail(rec, message)
        await self.write_status(rec)
        self.on_change(rec.function)

    # -- status in etcd --------------------------------------------------------------

    def _status(self, rec: PodRecord) -> Obj:
        status: Obj = {"phase": rec.phase, "ready": rec.ready,
                       "socket": self.dirs.socket_path(rec.name),
                       "containerID": rec.container_id, "restartCount": rec.restarts}
        if rec.message:
            status["message"] = rec.message
        return status

    async def write_status(self, rec: PodRecord) -> None:
        """Record the pod's phase in etcd. Best effort: the data plane must not wait on it."""
        for _ in range(5):
            if rec.obj is None:
                return
            new = copy.deepcopy(rec.obj)
            new["status"] = self._status(rec)
            if new["status"] == rec.obj.get("status"):
                return
            try:
                rec.obj = await self.store.update(objects.pod_key(rec.name), new)
                return
            except Conflict:
                try:
                    rec.obj = await self.store.get(objects.pod_key(rec.name))
                except (NotFound, StoreError):
                    return
            except (NotFound, StoreError) as exc:
                log.warning("could not record pod %s status: %s", rec.name, exc)
                return

    # -- paused pods -----------------------------------------------------------------

    async def _park(self, rec: PodRecord) -> bool:
        assert rec.container_id is not None
        try:
            await self.runtime.pause(rec.container_id)
        except Exception as exc:
            log.warning("could not pause pod %s (%s); removing it", rec.name, exc)
            return False
        self.parked.setdefault(rec.function, []).append(Parked(
            rec.name, rec.function, rec.template_hash, rec.container_id, self.clock.now()))
        return True

    async def _remove_parked(self, p: Parked) -> None:
        try:
            await self._save_logs(p.function, p.pod, p.container_id)
            await self.runtime.remove(p.container_id)
            await asyncio.to_thread(self.dirs.remove, p.pod)
        except Exception as exc:
            log.warning("removing paused container of %s failed: %s", p.pod, exc)

    async def _evict(self, function: str, current_hash: str | None,
                     keep_current_until: float | None = None) -> None:
        """Remove parked containers of ``function`` of another template than
        ``current_hash``, or (with ``keep_current_until`` = now) the expired ones."""
        keep = []
        for p in self.parked.pop(function, []):
            if keep_current_until is not None:
                gone = parking.expired(p, keep_current_until, self.keep_paused)
            else:
                gone = p.template_hash != current_hash
            if gone:
                await self._remove_parked(p)
            else:
                keep.append(p)
        if keep:
            self.parked.setdefault(function, []).extend(keep)
        elif keep_current_until is not None and function not in self.parked:
            self.on_change(function)  # the last one expired: the controller may want a standby

    # -- the log archive -------------------------------------------------------------

    async def _save_logs(self, function: str, pod: str, container_id: str) -> None:
        """Keep what a pod printed after its container is gone, for `allinone logs`."""
        text = await self.runtime.logs(container_id)
        if not text:
            return
        await asyncio.to_thread(self._append_log, function, f"--- pod {pod} ---\n{text}")

    def _append_log(self, function: str, text: str) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        append_bounded(self.logs_dir / f"{function}.log", text, SAVED_LOG_MAX_BYTES)


def append_bounded(path: Path, text: str, limit: int) -> None:
    """Append ``text`` (its last ``limit`` bytes) to ``path``, first moving a file that
    would grow past ``limit`` to ``path.1`` (replacing an older one): bounded, rotated."""
    data = (text if text.endswith("\n") else text + "\n").encode("utf-8", "replace")
    data = data[-limit:]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    if size and size + len(data) > limit:
        path.replace(path.with_name(path.name + ".1"))
    with open(path, "ab") as f:
        f.write(data)

