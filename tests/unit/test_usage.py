"""The pod usage sampler: CPU percent from two readings, forgetting vanished pods."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import psutil
import pytest

from allinone.objects import rfc3339
from allinone.usage import (
    DEFAULT_PERIOD_SECONDS,
    CgroupCounters,
    OpenCgroup,
    PsutilReader,
    Raw,
    UsageSampler,
    component_usage,
    find_cgroup,
    usage_between,
)


@pytest.mark.parametrize(("prev", "now", "cur", "percent"), [
    (None, 10.0, Raw(5.0, 100), 0.0),                    # first reading: no interval
    ((8.0, Raw(4.0, 100)), 10.0, Raw(5.0, 200), 50.0),   # 1 s of CPU in 2 s
    ((8.0, Raw(4.0, 100)), 10.0, Raw(8.0, 200), 200.0),  # two cores busy
    ((8.0, Raw(4.0, 100)), 10.0, Raw(1.0, 200), 0.0),    # counter went back: a new start
    ((10.0, Raw(4.0, 100)), 10.0, Raw(5.0, 200), 0.0),   # no time passed
])
def test_usage_between(prev: tuple[float, Raw] | None, now: float, cur: Raw,
                       percent: float) -> None:
    u = usage_between(prev, now, cur)
    assert u == {"cpuPercent": percent, "cpuSeconds": cur.cpu_seconds,
                 "memoryBytes": cur.memory_bytes, "sampledAt": rfc3339(now)}


class FakeReader:
    def __init__(self) -> None:
        self.values: dict[int, Raw] = {}
        self.broken: set[int] = set()
        self.retained: set[int] | None = None

    def retain(self, pids: set[int]) -> None:
        self.retained = pids

    def read(self, pids: Iterable[int]) -> Raw | None:
        pids = list(pids)
        if any(p in self.broken for p in pids):
            raise OSError("gone")
        found = [self.values[p] for p in pids if p in self.values]
        if not found:
            return None
        return Raw(sum(r.cpu_seconds for r in found), sum(r.memory_bytes for r in found))


def test_sampler_keeps_previous_and_forgets_vanished_pods() -> None:
    reader = FakeReader()
    s = UsageSampler(reader)
    reader.values = {1: Raw(1.0, 10), 2: Raw(2.0, 20), 3: Raw(0.5, 5)}
    first = s.sample({"a": [1, 2], "b": [3]}, now=100.0)
    assert first["a"]["cpuSeconds"] == 3.0 and first["a"]["memoryBytes"] == 30
    assert first["a"]["cpuPercent"] == 0.0
    reader.values = {1: Raw(2.0, 10), 2: Raw(2.0, 25), 3: Raw(0.5, 5)}
    second = s.sample({"a": [1, 2], "b": [3]}, now=102.0)
    assert second["a"]["cpuPercent"] == 50.0 and second["a"]["memoryBytes"] == 35
    assert second["b"]["cpuPercent"] == 0.0
    # b vanishes, then comes back: a fresh start, not a difference to its old reading
    assert set(s.sample({"a": [1, 2]}, now=104.0)) == {"a"}
    assert reader.retained == {1, 2}  # what the reader keeps for pid 3 may go
    reader.values[3] = Raw(9.0, 5)
    assert s.sample({"a": [1, 2], "b": [3]}, now=106.0)["b"]["cpuPercent"] == 0.0


def test_one_unreadable_pod_does_not_stop_the_others() -> None:
    reader = FakeReader()
    reader.values = {1: Raw(1.0, 10)}
    reader.broken = {9}
    s = UsageSampler(reader)
    out = s.sample({"bad": [9], "good": [1], "empty": [4]}, now=1.0)
    assert set(out) == {"good"}


def test_psutil_reader_reads_this_process() -> None:
    raw = PsutilReader(use_cgroup=False).read([os.getpid()])
    assert raw is not None
    assert raw.memory_bytes == pytest.approx(psutil.Process().memory_info().rss, rel=0.5)
    assert PsutilReader(use_cgroup=False).read([]) is None


def test_open_cgroup_reads_v2_and_v1_counters(tmp_path: Path) -> None:
    (tmp_path / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    (tmp_path / "memory.current").write_text("4096\n")
    v2 = OpenCgroup(CgroupCounters(tmp_path / "cpu.stat", tmp_path / "memory.current"))
    assert v2.read() == Raw(2.5, 4096)
    (tmp_path / "memory.current").write_text("8192\n")
    assert v2.read() == Raw(2.5, 8192)  # read again from the start, not appended
    (tmp_path / "cpuacct.usage").write_text("1500000000\n")  # nanoseconds
    (tmp_path / "memory.usage_in_bytes").write_text("8192\n")
    v1 = OpenCgroup(CgroupCounters(tmp_path / "cpuacct.usage",
                                   tmp_path / "memory.usage_in_bytes"))
    assert v1.read() == Raw(1.5, 8192)
    (tmp_path / "cpuacct.usage").write_text("garbage")
    with pytest.raises(ValueError):
        v1.read()
    v1.close()
    v2.close()
    with pytest.raises(OSError):
        OpenCgroup(CgroupCounters(tmp_path / "cpu.stat", tmp_path / "missing"))


def test_the_reader_keeps_counters_open_and_falls_back_to_psutil(tmp_path: Path) -> None:
    (tmp_path / "cpuacct.usage").write_text("2000000000\n")
    (tmp_path / "memory.usage_in_bytes").write_text("4096\n")
    located: list[int] = []

    def locate(pid: int) -> CgroupCounters:
        located.append(pid)
        return CgroupCounters(tmp_path / "cpuacct.usage", tmp_path / "memory.usage_in_bytes")

    me = os.getpid()
    reader = PsutilReader(locate=locate)
    assert reader.read([me]) == Raw(2.0, 4096) and reader.read([me]) == Raw(2.0, 4096)
    assert located == [me]  # found once, then read from the open files
    (tmp_path / "cpuacct.usage").write_text("not a number")
    fallback = reader.read([me])  # psutil on the process itself
    assert fallback is not None and fallback.memory_bytes != 4096
    (tmp_path / "cpuacct.usage").write_text("3000000000\n")
    assert reader.read([me]) == Raw(3.0, 4096) and located == [me, me]  # found again
    reader.retain(set())  # the pod is gone: its files are closed and forgotten
    assert reader.read([me]) == Raw(3.0, 4096) and located == [me, me, me]


POD = "/docker/abc"
HYBRID = (f"12:memory:{POD}\n4:cpu,cpuacct:{POD}\n1:name=systemd:{POD}\n0::{POD}\n")


def cgroup_tree(root: Path, files: list[str]) -> Path:
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("0\n")
    return root


@pytest.mark.parametrize(("text", "files", "cpu", "memory"), [
    # pure cgroup v2
    (f"0::{POD}\n", ["docker/abc/cpu.stat", "docker/abc/memory.current"],
     "docker/abc/cpu.stat", "docker/abc/memory.current"),
    # hybrid: the unified hierarchy has cpu.stat but no memory controller: v1 counters,
    # found under the joined mount name or the single controller's name
    (HYBRID, ["unified/docker/abc/cpu.stat", "cpu,cpuacct/docker/abc/cpuacct.usage",
              "memory/docker/abc/memory.usage_in_bytes"],
     "cpu,cpuacct/docker/abc/cpuacct.usage", "memory/docker/abc/memory.usage_in_bytes"),
    (HYBRID, ["cpuacct/docker/abc/cpuacct.usage", "memory/docker/abc/memory.usage_in_bytes"],
     "cpuacct/docker/abc/cpuacct.usage", "memory/docker/abc/memory.usage_in_bytes"),
    # hybrid with controllers in the unified hierarchy: v2 wins
    (HYBRID, ["unified/docker/abc/cpu.stat", "unified/docker/abc/memory.current",
              "cpuacct/docker/abc/cpuacct.usage", "memory/docker/abc/memory.usage_in_bytes"],
     "unified/docker/abc/cpu.stat", "unified/docker/abc/memory.current"),
    # the root cgroup is the whole machine: never a pod's figure
    ("0::/\n", ["cpu.stat", "memory.current"], None, None),
    ("4:cpuacct:/\n12:memory:/\n", ["cpuacct/cpuacct.usage",
                                     "memory/memory.usage_in_bytes"], None, None),
    # half a pair (no memory counter readable) is no pair
    (HYBRID, ["cpuacct/docker/abc/cpuacct.usage"], None, None),
    ("", [], None, None),
])
def test_find_cgroup(tmp_path: Path, text: str, files: list[str], cpu: str | None,
                     memory: str | None) -> None:
    found = find_cgroup(text, cgroup_tree(tmp_path, files))
    if cpu is None or memory is None:
        assert found is None
    else:
        assert found == CgroupCounters(tmp_path / cpu, tmp_path / memory)


def test_component_usage_names_the_server() -> None:
    rows = component_usage()
    assert rows[0]["name"] == "server" and rows[0]["pid"] == os.getpid()
    assert rows[0]["memoryBytes"] > 0


async def test_pod_usage_resolves_pids_once_per_container_and_exports_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from allinone.runtime.base import ContainerSpec
    from allinone.runtime.memory import MemoryRuntime
    from allinone.usage import PodUsage

    class CountingRuntime(MemoryRuntime):
        def __init__(self) -> None:
            super().__init__()
            self.asked: list[str] = []

        async def pid(self, container_id: str) -> int | None:
            self.asked.append(container_id)
            return await super().pid(container_id)

    runtime = CountingRuntime()
    c1 = await runtime.start(ContainerSpec(pod="f-1", function="f", image="i", socket_dir="/x"))
    c2 = await runtime.start(ContainerSpec(pod="f-2", function="f", image="i", socket_dir="/y"))
    pid1 = await runtime.pid(c1)
    assert pid1 is not None
    runtime.crash(c2)  # exited between the kubelet's view and the sampling: no PID
    reader = FakeReader()
    reader.values = {pid1: Raw(1.5, 2048)}
    running = {"f-1": ("f", c1), "f-2": ("f", c2)}
    pu = PodUsage(lambda: running, runtime, reader)
    runtime.asked.clear()
    targets = await pu.targets()
    assert targets == {"f-1": [pid1]}
    pu.sampler.sample(targets, now=10.0)
    await pu.targets()
    assert runtime.asked.count(c1) == 1  # cached
    usage = pu.usage("f-1")
    assert usage is not None and usage["memoryBytes"] == 2048 and pu.usage("f-2") is None
    reg = CollectorRegistry()
    reg.register(pu.collector())
    text = generate_latest(reg).decode()
    assert 'allinone_pod_cpu_seconds_total{function="f",pod="f-1"} 1.5' in text
    assert 'allinone_pod_memory_bytes{function="f",pod="f-1"} 2048.0' in text


def test_serve_takes_the_sampler_period_and_refuses_a_negative_one(
        capsys: pytest.CaptureFixture[str]) -> None:
    from allinone.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve"]).usage_period == DEFAULT_PERIOD_SECONDS
    assert parser.parse_args(["serve", "--usage-period", "0"]).usage_period == 0.0
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", "--usage-period", bad])
        assert "--usage-period" in capsys.readouterr().err
