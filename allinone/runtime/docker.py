"""The Docker implementation of :class:`~allinone.runtime.base.ContainerRuntime`.

Pods are plain containers on the host network, listening on their allocated loopback
port (``ALLINONE_PORT``), with memory, CPU and pids limits from the function spec. The
docker SDK is synchronous, so every call runs in a worker thread; we use the low-level
API (create + start: two requests) because ``containers.run`` adds a third round trip
that shows up directly in the cold-start time.
"""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import docker
from docker.errors import APIError, NotFound

from allinone.runtime.base import (
    LABEL_FUNCTION,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_POD,
    ContainerInfo,
    ContainerSpec,
)


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

    def _start(self, spec: ContainerSpec) -> str:
        env = {**spec.env, "ALLINONE_PORT": str(spec.port)}
        host_config = self._api.create_host_config(
            network_mode="host",
            mem_limit=f"{spec.memory_mib}m",
            # 1.0 cpus = 1e9 nano-CPUs; CFS quota enforced by the kernel.
            nano_cpus=int(spec.cpus * 1_000_000_000),
            pids_limit=spec.pids_limit,
            init=False,
        )
        labels = {
            LABEL_MANAGED: "1",
            LABEL_FUNCTION: spec.function,
            LABEL_POD: spec.pod,
            LABEL_INSTANCE: self.instance,
        }
        name = self.container_name(spec.pod)
        try:
            created = self._api.create_container(
                spec.image, environment=env, labels=labels, name=name,
                host_config=host_config, detach=True,
            )
        except APIError as exc:
            if exc.status_code == 409:
                # A container of that name survived an earlier attempt; replace it.
                self._remove(name)
                created = self._api.create_container(
                    spec.image, environment=env, labels=labels, name=name,
                    host_config=host_config, detach=True,
                )
            else:
                raise RuntimeError(f"cannot create container for pod {spec.pod}: "
                                   f"{exc.explanation or exc}") from exc
        cid: str = created["Id"]
        try:
            self._api.start(cid)
        except APIError as exc:
            self._remove(cid)
            raise RuntimeError(f"cannot start container for pod {spec.pod}: "
                               f"{exc.explanation or exc}") from exc
        return cid

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

    async def pause(self, container_id: str) -> None:
        await asyncio.to_thread(self._api.pause, container_id)

    async def unpause(self, container_id: str) -> None:
        await asyncio.to_thread(self._api.unpause, container_id)

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
