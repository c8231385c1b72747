"""CPU and memory of pods and of the platform's own processes (psutil, cgroups).

Two parts:

- :class:`UsageSampler`, the pod sampler. ``sample(targets, now)`` takes each running
  pod's processes (its container's PIDs) and returns its ``status.usage``:
  ``{"cpuPercent", "cpuSeconds", "memoryBytes", "sampledAt"}``. The arithmetic is pure
  (:func:`usage_between`: CPU percent is the CPU seconds spent between two samples over
  the wall time between them, in percent of one core); reading the processes goes
  through the small :class:`ProcessReader` protocol, so the sampler is table-tested
  with an in-memory reader and a manual clock. The cgroup's counters are preferred where
  readable (they include processes that already exited); otherwise the sum over the
  live PIDs. A pod that vanished is forgotten at the next sample; one that cannot be
  read is skipped, never stops the others.
- :func:`component_usage` and :class:`ComponentCollector`: the server's own CPU and
  RSS and those of its embedded etcd and registry (its child processes), read at scrape
  time for ``/metrics`` and ``GET /api/v1/status``: nothing samples in the background.

:func:`run_sampler` is the loop the pod-lifecycle component runs: period 2 s
(``serve --usage-period``; 0 turns it off), and idle (no reading at all) while there
are no pods. It reaches the container runtime only through its ``pid`` (the
:class:`PidSource` protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from allinone.config import USAGE_PERIOD_SECONDS
from allinone.objects import rfc3339

DEFAULT_PERIOD_SECONDS = USAGE_PERIOD_SECONDS  # serve --usage-period's default

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Raw:
    """One reading of a pod's processes: cumulative CPU seconds and memory in bytes."""

    cpu_seconds: float
    memory_bytes: int


class ProcessReader(Protocol):
    def read(self, pids: Iterable[int]) -> Raw | None:
        """The processes' CPU seconds and memory now; None when none can be read."""


def usage_between(prev: tuple[float, Raw] | None, now: float, cur: Raw) -> dict[str, Any]:
    """The ``status.usage`` of a pod from its previous reading (at ``prev[0]``) and now.

    The first reading has no interval: its cpuPercent is 0. A counter that went
    backwards (a new cgroup, processes replaced) counts as a new start, not as
    negative use.
    """
    percent = 0.0
    if prev is not None:
        t0, before = prev
        dt = now - t0
        dcpu = cur.cpu_seconds - before.cpu_seconds
        if dt > 0 and dcpu >= 0:
            percent = round(100.0 * dcpu / dt, 2)
    return {"cpuPercent": percent, "cpuSeconds": round(cur.cpu_seconds, 3),
            "memoryBytes": cur.memory_bytes, "sampledAt": rfc3339(now)}


class UsageSampler:
    """Keeps each pod's previous reading; ``sample`` gives every readable pod's usage."""

    def __init__(self, reader: ProcessReader) -> None:
        self.reader = reader
        self._prev: dict[str, tuple[float, Raw]] = {}
        self.latest: dict[str, dict[str, Any]] = {}

    def sample(self, targets: Mapping[str, Iterable[int]], now: float) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for pod, pids in targets.items():
            try:
                cur = self.reader.read(pids)
            except Exception:  # one unreadable pod never stops the others
                cur = None
            if cur is None:
                continue
            out[pod] = usage_between(self._prev.get(pod), now, cur)
            self._prev[pod] = (now, cur)
        for gone in set(self._prev) - set(targets):
            del self._prev[gone]
        self.latest = out
        return out


# -- reading real processes ------------------------------------------------------------


def cgroup_dir(pid: int, root: Path = CGROUP_ROOT) -> Path | None:
    """The cgroup v2 directory of ``pid`` (from /proc/PID/cgroup), when there is one."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        hierarchy, _, path = line.partition("::")
        if hierarchy == "0" and path:
            d = root / path.lstrip("/")
            return d if d.is_dir() else None
    return None


def read_cgroup(d: Path) -> Raw | None:
    """CPU seconds (cpu.stat usage_usec) and memory.current of a cgroup v2 directory."""
    try:
        usec = 0
        for line in (d / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                usec = int(value)
        memory = int((d / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    return Raw(usec / 1e6, memory)


class PsutilReader:
    """psutil on the PIDs; the cgroup of the first PID where it is readable."""

    def __init__(self, use_cgroup: bool = True) -> None:
        self.use_cgroup = use_cgroup
        # pid -> its cgroup directory: a container's processes stay in their cgroup, so
        # /proc/PID/cgroup is read once per pid, not every period.
        self._cgroups: dict[int, Path | None] = {}

    def read(self, pids: Iterable[int]) -> Raw | None:
        pids = list(pids)
        if not pids:
            return None
        if self.use_cgroup:
            if pids[0] not in self._cgroups:
                if len(self._cgroups) > 4096:  # pids of long-gone pods
                    self._cgroups.clear()
                self._cgroups[pids[0]] = cgroup_dir(pids[0])
            d = self._cgroups[pids[0]]
            if d is not None and d != CGROUP_ROOT:
                raw = read_cgroup(d)
                if raw is not None:
                    return raw
        cpu, rss, seen = 0.0, 0, 0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                with p.oneshot():
                    t = p.cpu_times()
                    cpu += t.user + t.system
                    rss += p.memory_info().rss
                seen += 1
        return Raw(cpu, rss) if seen else None


async def run_sampler(sampler: UsageSampler,
                      targets: Callable[[], Awaitable[Mapping[str, Iterable[int]]]],
                      publish: Callable[[dict[str, dict[str, Any]]], Awaitable[None]],
                      now: Callable[[], float],
                      sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                      period: float = DEFAULT_PERIOD_SECONDS) -> None:
    """Sample every ``period`` while pods exist; read nothing while there are none."""
    while True:
        try:
            pods = await targets()
            if pods:
                usage = await asyncio.to_thread(sampler.sample, pods, now())
                await publish(usage)
            elif sampler.latest:
                sampler.sample({}, now())
                await publish({})
        except asyncio.CancelledError:
            raise
        except Exception:  # crash-only: the next period tries again
            pass
        await sleep(period)


# -- the platform's own processes -----------------------------------------------------

_COMPONENT_NAMES = {"etcd": ("etcd",), "registry": ("registry", "docker-registry")}


def component_processes(me: psutil.Process | None = None) -> Iterator[tuple[str, psutil.Process]]:
    """("server", this process), then its embedded etcd and registry (child processes)."""
    me = me or psutil.Process(os.getpid())
    yield "server", me
    with contextlib.suppress(psutil.Error):
        for child in me.children():
            with contextlib.suppress(psutil.Error):
                name = child.name()
                for component, names in _COMPONENT_NAMES.items():
                    if name in names:
                        yield component, child


def component_usage(me: psutil.Process | None = None) -> list[dict[str, Any]]:
    """CPU seconds and RSS of the server, etcd and the registry (those that run here)."""
    out = []
    for component, proc in component_processes(me):
        with contextlib.suppress(psutil.Error):
            with proc.oneshot():
                t = proc.cpu_times()
                out.append({"name": component, "pid": proc.pid,
                            "cpuSeconds": round(t.user + t.system, 3),
                            "memoryBytes": proc.memory_info().rss,
                            "startedAt": rfc3339(proc.create_time())})
    return out


class ComponentCollector(Collector):
    """``allinone_process_cpu_seconds_total`` and ``allinone_process_resident_memory_bytes``
    per component, read at scrape time."""

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        cpu = CounterMetricFamily("allinone_process_cpu_seconds",
                                "CPU seconds of the server and its embedded etcd and registry",
                                labels=["component"])
        rss = GaugeMetricFamily("allinone_process_resident_memory_bytes",
                                "RSS of the server and its embedded etcd and registry",
                                labels=["component"])
        for c in component_usage():
            cpu.add_metric([c["name"]], c["cpuSeconds"])
            rss.add_metric([c["name"]], c["memoryBytes"])
        yield cpu
        yield rss


# -- pods of the kubelet ---------------------------------------------------------------


class PidSource(Protocol):
    """What the pod sampler needs of the container runtime
    (:class:`~allinone.runtime.base.ContainerRuntime` has it)."""

    async def pid(self, container_id: str) -> int | None: ...


class PodUsage:
    """The pod sampler wired to the kubelet's running pods (see :func:`run_sampler`).

    ``pods()`` gives each running pod's function and container id; the container
    runtime (its :meth:`~allinone.runtime.base.ContainerRuntime.pid`, the only part of
    the runtime used here) maps a container id to its main PID, asked once per
    container and cached: a container's PID does not change while it runs. The cgroup
    of that PID covers every process of the container. ``usage(pod)`` is what the pods
    API shows as ``status.usage``; the collector exports
    ``allinone_pod_cpu_seconds_total`` and ``allinone_pod_memory_bytes``.
    Usage lives in memory only: a write to etcd per pod every 2 s would cost more than
    the sampling.
    """

    def __init__(self, pods: Callable[[], Mapping[str, tuple[str, str]]],
                 runtime: PidSource, reader: ProcessReader | None = None) -> None:
        self.pods = pods
        self.runtime = runtime
        self.sampler = UsageSampler(reader or PsutilReader())
        self._pids: dict[str, int] = {}
        self._functions: dict[str, str] = {}

    async def targets(self) -> dict[str, list[int]]:
        pods = self.pods()
        self._functions = {pod: fn for pod, (fn, _) in pods.items()}
        live = {cid for _, cid in pods.values()}
        for cid in set(self._pids) - live:
            del self._pids[cid]
        out: dict[str, list[int]] = {}
        for pod, (_, cid) in pods.items():
            if cid not in self._pids:
                pid = await self.runtime.pid(cid)
                if not pid:
                    continue
                self._pids[cid] = pid
            out[pod] = [self._pids[cid]]
        return out

    def usage(self, pod: str) -> dict[str, Any] | None:
        return self.sampler.latest.get(pod)

    async def run(self, now: Callable[[], float],
                  period: float = DEFAULT_PERIOD_SECONDS) -> None:
        async def publish(_: dict[str, dict[str, Any]]) -> None:
            return None
        await run_sampler(self.sampler, self.targets, publish, now, period=period)

    def collector(self) -> Collector:
        owner = self

        class _PodCollector(Collector):
            def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
                cpu = CounterMetricFamily("allinone_pod_cpu_seconds",
                                          "CPU seconds used by a pod's processes",
                                          labels=["function", "pod"])
                mem = GaugeMetricFamily("allinone_pod_memory_bytes",
                                        "Memory of a pod (its cgroup's, else its RSS)",
                                        labels=["function", "pod"])
                for pod, u in owner.sampler.latest.items():
                    fn = owner._functions.get(pod, "")
                    cpu.add_metric([fn, pod], u["cpuSeconds"])
                    mem.add_metric([fn, pod], u["memoryBytes"])
                yield cpu
                yield mem

        return _PodCollector()
