"""The Docker implementation of :class:`~allinone.runtime.base.ContainerRuntime`.

Pods are sandboxed containers (see :mod:`allinone.runtime.base`): ``network_mode``
``none`` (``bridge`` for egress), ``user`` unprivileged, ``cap_drop ALL``,
``no-new-privileges``, a read-only root and a tmpfs ``/tmp``, memory/CPU/pids limits,
a ``json-file`` log capped at :data:`LOG_MAX_SIZE` x :data:`LOG_MAX_FILES` (``docker
logs``, hence ``allinone logs``, reads it), and the pod's socket directory mounted at
:data:`~allinone.runtime.base.POD_SOCKET_DIR`; the shim listens there
(``ALLINONE_SOCKET``).

The docker SDK is synchronous, so every call runs in a worker thread; we use the
low-level API (create + start: two requests) because ``containers.run`` adds a third
round trip that shows up directly in the cold-start time. :meth:`DockerRuntime.events`
reads Docker's event stream in one dedicated thread for the whole instance (not one
``wait`` per pod, which would pin a worker thread per starting pod).
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import docker
from docker.errors import APIError, NotFound
from docker.types import LogConfig

from allinone.runtime.base import (
    LABEL_FUNCTION,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_POD,
    POD_MAX_CONNECTIONS,
    POD_SOCKET_DIR,
    SOCKET_NAME,
    ContainerEvent,
    ContainerInfo,
    ContainerSpec,
    describe_exit,
)

log = logging.getLogger(__name__)

LOG_MAX_SIZE = "5m"  # per log file of a pod; rotated, LOG_MAX_FILES kept
LOG_MAX_FILES = 2
# Docker events the kubelet acts on.
EVENTS = ("start", "die", "oom", "destroy")
# runc's cgroup-v1 freezer gives up ("OCI runtime pause failed: unable to freeze") when
# the container's tasks change while it freezes, as a just-started shim's do: 2 of 40
# fresh standbys on a busy engine. Tried again after 50, 100, 200 ms, it freezes.
PAUSE_TRIES = 4


def host_config_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """The sandbox of a pod, as ``create_host_config`` arguments (one place: the
    benchmark starts its bare containers with exactly these)."""
    return {
        "network_mode": "bridge" if spec.network == "egress" else "none",
        "mem_limit": f"{spec.memory_mib}m",
        # 1.0 cpus = 1e9 nano-CPUs; CFS quota enforced by the kernel.
        "nano_cpus": int(spec.cpus * 1_000_000_000),
        "pids_limit": spec.pids_limit,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={spec.tmp_mib}m,mode=1777"},
        "binds": {spec.socket_dir: {"bind": POD_SOCKET_DIR, "mode": "rw"}},
        "log_config": LogConfig(type="json-file",
                                config={"max-size": LOG_MAX_SIZE, "max-file": str(LOG_MAX_FILES)}),
        "init": False,
    }


def container_env(spec: ContainerSpec) -> dict[str, str]:
    # HOME on the tmpfs: libraries that cache under ~ find a writable place.
    return {**spec.env, "ALLINONE_SOCKET": f"{POD_SOCKET_DIR}/{SOCKET_NAME}", "HOME": "/tmp",
            "ALLINONE_MAX_CONNECTIONS": str(POD_MAX_CONNECTIONS)}


class DockerRuntime:
    def __init__(self, instance: str, client: Any | None = None) -> None:
        self.instance = instance
        self._client = client or docker.from_env(timeout=30)
        self._api = self._client.api

    def container_name(self, pod: str) -> str:
        # Docker names are global to the engine; the instance keeps two servers apart.
        return f"allinone-{self.instance[:8]}-{pod}"

    async def start(self, spec: ContainerSpec) -> str:
        return await asyncio.to_thread(self._start, spec)

    async def create(self, spec: ContainerSpec) -> str:
        return await asyncio.to_thread(self._create, spec)

    async def run(self, container_id: str) -> None:
        await asyncio.to_thread(self._run, container_id, container_id[:12])

    def _start(self, spec: ContainerSpec) -> str:
        cid = self._create(spec)
        self._run(cid, spec.pod)
        return cid

    def _create(self, spec: ContainerSpec) -> str:
        env = container_env(spec)
        host_config = self._api.create_host_config(**host_config_kwargs(spec))
        labels = {
            LABEL_MANAGED: "1",
            LABEL_FUNCTION: spec.function,
            LABEL_POD: spec.pod,
            LABEL_INSTANCE: self.instance,
        }
        name = self.container_name(spec.pod)
        try:
            created = self._api.create_container(
                spec.image, environment=env, labels=labels, name=name, user=spec.user,
                host_config=host_config, detach=True,
            )
        except APIError as exc:
            if exc.status_code == 409:
                # A container of that name survived an earlier attempt; replace it.
                self._remove(name)
                created = self._api.create_container(
                    spec.image, environment=env, labels=labels, name=name, user=spec.user,
                    host_config=host_config, detach=True,
                )
            else:
                raise RuntimeError(f"cannot create container for pod {spec.pod}: "
                                   f"{exc.explanation or exc}") from exc
        cid: str = created["Id"]
        return cid

    def _run(self, cid: str, pod: str) -> None:
        try:
            self._api.start(cid)
        except APIError as exc:
            self._remove(cid)
            raise RuntimeError(f"cannot start container for pod {pod}: "
                               f"{exc.explanation or exc}") from exc

    async def remove(self, container_id: str) -> None:
        await asyncio.to_thread(self._remove, container_id)

    def _remove(self, container_id: str) -> None:
        try:
            # Drained before we get here, so no grace period is needed: kill at once.
            self._api.remove_container(container_id, force=True)
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise

    async def list(self) -> builtins.list[ContainerInfo]:
        return await asyncio.to_thread(self._list)

    def _list(self) -> builtins.list[ContainerInfo]:
        rows = self._api.containers(
            all=True, filters={"label": [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={self.instance}"]}
        )
        out = []
        for row in rows:
            labels = row.get("Labels") or {}
            out.append(ContainerInfo(
                id=row["Id"],
                pod=labels.get(LABEL_POD, ""),
                function=labels.get(LABEL_FUNCTION, ""),
                running=row.get("State") in ("running", "paused"),
                labels=labels,
            ))
        return out

    def events(self) -> AsyncIterator[ContainerEvent]:
        # The reader thread starts now, not at the first iteration.
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ContainerEvent] = asyncio.Queue()
        stop = threading.Event()
        stream: builtins.list[Any] = []
        thread = threading.Thread(target=self._pump, args=(loop, queue, stop, stream),
                                  name="allinone-docker-events", daemon=True)
        thread.start()
        return self._read(queue, stop, stream)

    async def _read(self, queue: asyncio.Queue[ContainerEvent], stop: threading.Event,
                    stream: builtins.list[Any]) -> AsyncIterator[ContainerEvent]:
        try:
            while True:
                yield await queue.get()
        finally:
            stop.set()
            for s in stream:  # unblocks the thread's read
                try:
                    s.close()
                except Exception:  # already closed
                    pass

    def _pump(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[ContainerEvent],
              stop: threading.Event, stream: builtins.list[Any]) -> None:
        filters = {"type": ["container"], "event": list(EVENTS),
                   "label": [f"{LABEL_MANAGED}=1", f"{LABEL_INSTANCE}={self.instance}"]}
        first = True
        while not stop.is_set():
            try:
                events = self._api.events(decode=True, filters=filters)
                stream[:] = [events]
                if not first:  # events may have been missed while reconnecting
                    loop.call_soon_threadsafe(queue.put_nowait, ContainerEvent("", "", "resync"))
                first = False
                for ev in events:
                    attrs = (ev.get("Actor") or {}).get("Attributes") or {}
                    loop.call_soon_threadsafe(queue.put_nowait, ContainerEvent(
                        ev.get("id") or (ev.get("Actor") or {}).get("ID", ""),
                        attrs.get(LABEL_POD, ""), ev.get("Action") or ev.get("status", "")))
            except Exception as exc:
                if stop.is_set():
                    return
                log.warning("Docker event stream broke (%s); reconnecting", exc)
            if stop.wait(1.0):
                return

    async def pause(self, container_id: str) -> None:
        await asyncio.to_thread(self._pause, container_id)

    def _pause(self, container_id: str) -> None:
        for attempt in range(PAUSE_TRIES):
            try:
                self._api.pause(container_id)
                return
            except APIError as exc:
                if attempt == PAUSE_TRIES - 1 or "unable to freeze" not in str(exc):
                    raise
                log.info("pausing %s: %s; trying again", container_id[:12], exc.explanation)
                time.sleep(0.05 * 2 ** attempt)

    async def unpause(self, container_id: str) -> None:
        await asyncio.to_thread(self._api.unpause, container_id)

    async def exit_reason(self, container_id: str) -> str:
        return await asyncio.to_thread(self._exit_reason, container_id)

    def _exit_reason(self, container_id: str) -> str:
        try:
            info = self._api.inspect_container(container_id)
        except (NotFound, APIError):
            return ""
        state = info.get("State") or {}
        if state.get("Running") or state.get("Paused"):
            return ""
        return describe_exit(int(state.get("ExitCode") or 0), bool(state.get("OOMKilled")),
                             int((info.get("HostConfig") or {}).get("Memory") or 0))

    async def pid(self, container_id: str) -> int | None:
        return await asyncio.to_thread(self._pid, container_id)

    def _pid(self, container_id: str) -> int | None:
        try:
            state = self._api.inspect_container(container_id).get("State") or {}
        except (NotFound, APIError):
            return None
        return int(state.get("Pid") or 0) or None

    async def logs(self, container_id: str, tail: int = 1000) -> str:
        return await asyncio.to_thread(self._logs, container_id, tail)

    def _logs(self, container_id: str, tail: int) -> str:
        try:
            raw: bytes = self._api.logs(container_id, stdout=True, stderr=True, tail=tail)
        except (NotFound, APIError):
            return ""
        return raw.decode("utf-8", errors="replace")

    def close(self) -> None:
        self._client.close()
