"""The container runtime contract used by the pod-lifecycle component (the kubelet).

A "pod" is one container running the function image, sandboxed: no network (or, opt
in, outbound only through Docker's default bridge), an unprivileged uid, no
capabilities, ``no-new-privileges``, a read-only root with a small tmpfs at ``/tmp``,
memory, CPU and pids limits and a size-bounded log. Its only way in or out for the
platform is a Unix socket in its own directory of the state dir (``socket_dir``),
mounted at :data:`POD_SOCKET_DIR`. The kubelet never talks to Docker directly; it goes
through :class:`ContainerRuntime`, which has a Docker implementation
(:mod:`allinone.runtime.docker`) and an in-memory twin (:mod:`allinone.runtime.memory`).

Every container the platform starts carries the labels below, so a restarted server can
adopt its own containers and remove strays; ``allinone.instance`` keeps two servers (a
developer's and a test run) from touching each other's containers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

LABEL_MANAGED = "allinone.managed"
LABEL_FUNCTION = "allinone.function"
LABEL_POD = "allinone.pod"
LABEL_INSTANCE = "allinone.instance"

# Where a pod's socket directory is mounted inside its container, and the socket's name.
POD_SOCKET_DIR = "/run/allinone"
SOCKET_NAME = "http.sock"
# The uid:gid pods run as when the server runs as root: "nobody", owning nothing.
POD_USER = "65534:65534"


# Connections (so handler threads) a pod serves at once: the shim accepts no more
# (ALLINONE_MAX_CONNECTIONS), the activator sends no more. Below the pids limit, which
# also counts the shim's main thread and whatever threads the function starts.
POD_MAX_CONNECTIONS = 200


@dataclass(frozen=True)
class ContainerSpec:
    pod: str
    function: str
    image: str
    socket_dir: str  # host path, mounted read-write at POD_SOCKET_DIR
    user: str = POD_USER
    network: str = "none"  # or "egress"
    env: dict[str, str] = field(default_factory=dict)
    memory_mib: int = 256
    cpus: float = 1.0
    pids_limit: int = 256
    tmp_mib: int = 64  # the tmpfs at /tmp, the only writable place besides the socket dir


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    pod: str
    function: str
    running: bool  # alive: running, or paused (frozen but holding its socket)
    labels: dict[str, str]


@dataclass(frozen=True)
class ContainerEvent:
    """A container of this instance changed state: ``action`` is Docker's (``die``,
    ``start``, ``oom``...), or ``resync`` after the stream was interrupted (events may
    have been missed: list to catch up)."""

    id: str
    pod: str
    action: str


class ContainerRuntime(Protocol):
    async def start(self, spec: ContainerSpec) -> str:
        """Create and start the container; returns its id. Raises RuntimeError on failure."""
        ...

    async def create(self, spec: ContainerSpec) -> str:
        """Create the container without starting it (a standby, see the kubelet); returns
        its id. Raises RuntimeError on failure."""
        ...

    async def run(self, container_id: str) -> None:
        """Start a created container. Raises RuntimeError on failure (the container is
        removed then)."""
        ...

    async def remove(self, container_id: str) -> None:
        """Stop and remove; succeeds when it is already gone."""
        ...

    async def list(self) -> list[ContainerInfo]:
        """Containers of this instance (by label), running or not."""
        ...

    def events(self) -> AsyncIterator[ContainerEvent]:
        """State changes of this instance's containers, as they happen, forever; the
        subscription starts when this is called, before the first iteration."""
        ...

    async def logs(self, container_id: str, tail: int = 1000) -> str:
        """What the container printed (stdout and stderr), '' when it is gone."""
        ...

    async def pause(self, container_id: str) -> None:
        """Freeze every process of the container (cgroup freezer); its sockets stay open."""
        ...

    async def unpause(self, container_id: str) -> None: ...

    async def exit_reason(self, container_id: str) -> str:
        """How the container ended, in words for a user (:func:`describe_exit`); ''
        while it runs or when it is gone."""
        ...

    async def pid(self, container_id: str) -> int | None:
        """The main process id of a running container on this host (its cgroup holds
        every process of the container), for the usage sampler; None when it is not
        running or gone."""
        ...


def describe_exit(exit_code: int, oom_killed: bool, memory_bytes: int) -> str:
    """Why a container ended, in words that say what to fix."""
    if oom_killed:
        limit = f"{memory_bytes // (1024 * 1024)} MiB" if memory_bytes > 0 else "its limit"
        return (f"the function ran out of memory: it was killed for using more than its "
                f"memory limit of {limit} (OOMKilled); use less memory or raise "
                "spec.resources.memoryMiB")
    if exit_code == 137:
        return "its container was killed (SIGKILL, exit code 137)"
    if exit_code > 128:
        return f"its container was killed by signal {exit_code - 128} (exit code {exit_code})"
    return f"its container exited with code {exit_code}"
