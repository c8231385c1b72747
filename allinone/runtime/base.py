"""The container runtime contract used by the ReplicaSet controller.

A "pod" is one container running the function image with host networking on an
allocated loopback port. The controller never talks to Docker directly; it goes through
:class:`ContainerRuntime`, which has a Docker implementation
(:mod:`allinone.runtime.docker`) and an in-memory twin (:mod:`allinone.runtime.memory`).

Every container the platform starts carries the labels below, so a restarted server can
adopt its own containers and remove strays; ``allinone.instance`` keeps two servers (a
developer's and a test run) from touching each other's containers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

LABEL_MANAGED = "allinone.managed"
LABEL_FUNCTION = "allinone.function"
LABEL_POD = "allinone.pod"
LABEL_INSTANCE = "allinone.instance"


@dataclass(frozen=True)
class ContainerSpec:
    pod: str
    function: str
    image: str
    port: int
    env: dict[str, str] = field(default_factory=dict)
    memory_mib: int = 256
    cpus: float = 1.0
    pids_limit: int = 256


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    pod: str
    function: str
    running: bool  # alive: running, or paused (frozen but holding its port)
    labels: dict[str, str]


class ContainerRuntime(Protocol):
    async def start(self, spec: ContainerSpec) -> str:
        """Create and start the container; returns its id. Raises RuntimeError on failure."""
        ...

    async def remove(self, container_id: str) -> None:
        """Stop and remove; succeeds when it is already gone."""
        ...

    async def list(self) -> list[ContainerInfo]:
        """Containers of this instance (by label), running or not."""
        ...

    async def logs(self, container_id: str, tail: int = 1000) -> str:
        """What the container printed (stdout and stderr), '' when it is gone."""
        ...

    async def pause(self, container_id: str) -> None:
        """Freeze every process of the container (cgroup freezer); its sockets stay open."""
        ...

    async def unpause(self, container_id: str) -> None: ...
