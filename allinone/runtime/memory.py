"""An in-memory :class:`~allinone.runtime.base.ContainerRuntime` for unit tests.

It keeps the same contract as Docker: ids are unique, ``remove`` of a missing id
succeeds, ``list`` shows this instance's containers, running or exited, and
``events`` reports ``start`` and ``die`` as they happen. Tests call
:meth:`MemoryRuntime.crash` to simulate a container that dies.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

from allinone.runtime.base import (
    LABEL_FUNCTION,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_POD,
    ContainerEvent,
    ContainerInfo,
    ContainerSpec,
    describe_exit,
)


class MemoryRuntime:
    def __init__(self, instance: str = "test") -> None:
        self.instance = instance
        self.containers: dict[str, ContainerInfo] = {}
        self.specs: dict[str, ContainerSpec] = {}
        self.paused: set[str] = set()
        self.exits: dict[str, tuple[int, bool]] = {}  # id -> (exit code, OOM killed)
        self.fail_next_start: str | None = None
        self.list_calls = 0
        self.created = 0  # containers created (standby or started)
        self._ids = itertools.count(1)
        self._subscribers: list[asyncio.Queue[ContainerEvent]] = []

    def _emit(self, event: ContainerEvent) -> None:
        for q in self._subscribers:
            q.put_nowait(event)

    async def start(self, spec: ContainerSpec) -> str:
        cid = await self.create(spec)
        await self.run(cid)
        return cid

    async def create(self, spec: ContainerSpec) -> str:
        if self.fail_next_start:
            message, self.fail_next_start = self.fail_next_start, None
            raise RuntimeError(message)
        cid = f"c{next(self._ids):06d}"
        labels = {LABEL_MANAGED: "1", LABEL_FUNCTION: spec.function, LABEL_POD: spec.pod,
                  LABEL_INSTANCE: self.instance}
        self.containers[cid] = ContainerInfo(cid, spec.pod, spec.function, False, labels)
        self.specs[cid] = spec
        self.created += 1
        return cid

    async def run(self, container_id: str) -> None:
        c = self.containers.get(container_id)
        if c is None:
            raise RuntimeError(f"cannot start container {container_id}: no such container")
        self.containers[container_id] = ContainerInfo(c.id, c.pod, c.function, True, c.labels)
        self._emit(ContainerEvent(container_id, c.pod, "start"))

    async def remove(self, container_id: str) -> None:
        c = self.containers.pop(container_id, None)
        self.specs.pop(container_id, None)
        self.paused.discard(container_id)
        if c is not None and c.running:
            self._emit(ContainerEvent(c.id, c.pod, "die"))

    async def list(self) -> list[ContainerInfo]:
        self.list_calls += 1
        return list(self.containers.values())

    def events(self) -> AsyncIterator[ContainerEvent]:
        q: asyncio.Queue[ContainerEvent] = asyncio.Queue()
        self._subscribers.append(q)  # subscribed now, not at the first iteration
        return self._read(q)

    async def _read(self, q: asyncio.Queue[ContainerEvent]) -> AsyncIterator[ContainerEvent]:
        try:
            while True:
                yield await q.get()
        finally:
            self._subscribers.remove(q)

    async def logs(self, container_id: str, tail: int = 1000) -> str:
        return f"logs of {container_id}\n" if container_id in self.containers else ""

    async def pid(self, container_id: str) -> int | None:
        """A made-up PID per running container (tests map it to readings)."""
        c = self.containers.get(container_id)
        return 10_000 + int(container_id[1:]) if c is not None and c.running else None

    async def pause(self, container_id: str) -> None:
        self.paused.add(container_id)

    async def unpause(self, container_id: str) -> None:
        self.paused.discard(container_id)

    async def exit_reason(self, container_id: str) -> str:
        c = self.containers.get(container_id)
        if c is None or c.running:
            return ""
        code, oom = self.exits.get(container_id, (1, False))
        return describe_exit(code, oom, self.specs[container_id].memory_mib * 1024 * 1024)

    def crash(self, container_id: str, silently: bool = False, exit_code: int = 1,
              oom: bool = False) -> None:
        """The container exits; ``silently``: its ``die`` event is lost (a broken stream)."""
        self.exits[container_id] = (exit_code, oom)
        c = self.containers[container_id]
        self.containers[container_id] = ContainerInfo(
            c.id, c.pod, c.function, False, c.labels
        )
        if not silently:
            self._emit(ContainerEvent(c.id, c.pod, "die"))
