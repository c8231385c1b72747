"""CPU and memory of pods and of the platform's own processes (psutil, cgroups).

Two parts:

- :class:`UsageSampler`, the pod sampler. ``sample(targets, now)`` takes each running
  pod's processes (its container's PIDs) and returns its ``status.usage``:
  ``{"cpuPercent", "cpuSeconds", "memoryBytes", "sampledAt"}``. The arithmetic is pure
  (:func:`usage_between`: CPU percent is the CPU seconds spent between two samples over
  the wall time between them, in percent of one core); reading the processes goes
  through the small :class:`ProcessReader` protocol, so the sampler is table-tested
  with an in-memory reader and a manual clock. The cgroup's counters are preferred where
  readable (they include processes that already exited; two small files per pod, v2's
  or v1's, found once per container by :func:`find_cgroup`); otherwise psutil's sum
  over the live PIDs. A pod that vanished is forgotten at the next sample; one that cannot be
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

    def retain(self, pids: set[int]) -> None:
        """Forget whatever is kept for processes other than ``pids`` (gone pods)."""


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
        asked: set[int] = set()
        for pod, pod_pids in targets.items():
            pids = list(pod_pids)
            asked.update(pids)
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
        self.reader.retain(asked)
        self.latest = out
        return out


# -- reading real processes ------------------------------------------------------------


@dataclass(frozen=True)
class CgroupCounters:
    """Where one cgroup's CPU and memory counters are read: cgroup v2's ``cpu.stat``
    (``usage_usec``) and ``memory.current``, or cgroup v1's ``cpuacct.usage``
    (nanoseconds) and ``memory.usage_in_bytes``."""

    cpu: Path
    memory: Path


def find_cgroup(proc_cgroup: str, root: Path = CGROUP_ROOT) -> CgroupCounters | None:
    """The counters of the cgroup that a ``/proc/PID/cgroup`` text names.

    cgroup v2 (under ``root``, or ``root/unified`` in the hybrid layout) where its
    directory has both counters, else cgroup v1's ``cpuacct`` and ``memory``
    hierarchies (a hybrid host's unified hierarchy often has no memory controller).
    None for the root cgroup, whose counters would be the whole machine's, and when
    no directory is readable.
    """
    v2: CgroupCounters | None = None
    cpu1: Path | None = None
    mem1: Path | None = None
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        rel = path.strip().lstrip("/")
        if not rel:
            continue  # the root cgroup
        if hierarchy == "0" and not controllers:
            for base in (root, root / "unified"):
                d = base / rel
                if (d / "cpu.stat").is_file() and (d / "memory.current").is_file():
                    v2 = CgroupCounters(d / "cpu.stat", d / "memory.current")
                    break
            continue
        names = controllers.split(",")
        for wanted, counter in (("cpuacct", "cpuacct.usage"), ("memory", "memory.usage_in_bytes")):
            if wanted not in names:
                continue
            for mount in (controllers, wanted):
                f = root / mount / rel / counter
                if f.is_file():
                    if wanted == "cpuacct":
                        cpu1 = f
                    else:
                        mem1 = f
                    break
    if v2 is not None:
        return v2
    return CgroupCounters(cpu1, mem1) if cpu1 is not None and mem1 is not None else None


def cgroup_of(pid: int, root: Path = CGROUP_ROOT) -> CgroupCounters | None:
    """:func:`find_cgroup` of a live process; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    return find_cgroup(text, root)


class OpenCgroup:
    """A cgroup's two counters, held open: a reading is one ``pread`` of each (~5 us
    here), where opening both files every period cost ten times that and psutil's
    objects more again (a fifth of an idle server's CPU with 40 warm pods).

    ``read`` raises OSError or ValueError once the cgroup is gone (its files answer
    ENODEV) or a counter is not a number.
    """

    def __init__(self, counters: CgroupCounters) -> None:
        self.v2 = counters.cpu.name == "cpu.stat"
        self._cpu = os.open(counters.cpu, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._memory = os.open(counters.memory, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(self._cpu)
            raise

    def read(self) -> Raw:
        cpu = os.pread(self._cpu, 4096, 0)
        if self.v2:  # "usage_usec N" among other lines
            fields = dict(line.split(b" ", 1) for line in cpu.splitlines() if b" " in line)
            seconds = int(fields[b"usage_usec"]) / 1e6
        else:  # cpuacct.usage: nanoseconds
            seconds = int(cpu) / 1e9
        return Raw(seconds, int(os.pread(self._memory, 64, 0)))

    def close(self) -> None:
        for fd in (self._cpu, self._memory):
            with contextlib.suppress(OSError):
                os.close(fd)


class PsutilReader:
    """The counters of the first PID's cgroup where they are readable (v2 or v1, held
    open by :class:`OpenCgroup`); else psutil on the PIDs.

    A container's processes stay in their cgroup, so ``/proc/PID/cgroup`` is read and
    the counters opened once per PID; they are closed when the PID is no longer asked
    for (``retain``) or its cgroup stops answering (then found again at the next read).
    """

    def __init__(self, use_cgroup: bool = True,
                 locate: Callable[[int], CgroupCounters | None] = cgroup_of) -> None:
        self.use_cgroup = use_cgroup
        self.locate = locate
        # pid -> its cgroup's open counters, or None where it has none to read
        self._cgroups: dict[int, OpenCgroup | None] = {}

    def _cgroup(self, pid: int) -> OpenCgroup | None:
        if pid not in self._cgroups:
            counters = self.locate(pid)
            opened = None
            if counters is not None:
                with contextlib.suppress(OSError):
                    opened = OpenCgroup(counters)
            self._cgroups[pid] = opened
        return self._cgroups[pid]

    def read(self, pids: Iterable[int]) -> Raw | None:
        pids = list(pids)
        if not pids:
            return None
        if self.use_cgroup:
            cgroup = self._cgroup(pids[0])
            if cgroup is not None:
                try:
                    return cgroup.read()
                except (OSError, ValueError, KeyError):
                    cgroup.close()  # gone or replaced: found again at the next read
                    del self._cgroups[pids[0]]
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

    def retain(self, pids: set[int]) -> None:
        for pid in set(self._cgroups) - pids:
            cgroup = self._cgroups.pop(pid)
            if cgroup is not None:
                cgroup.close()


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
