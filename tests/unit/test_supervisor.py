"""The supervisor's pure policy (assess, backoff), its loop on a manual clock with a
fake child, the children's health probe (a loopback HTTP server that counts
connections), and pidfiles (real processes: recognised by pid and start time)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from allinone.clock import ManualClock
from allinone.services.etcd import EtcdProcess, etcd_health
from allinone.services.process import (
    HealthProbe,
    PidRecord,
    parse_stat,
    process_start_time,
    read_pidfile,
    stop_leftovers,
    write_pidfile,
)
from allinone.services.supervisor import ChildState, Supervisor, assess, restart_delay


@pytest.mark.parametrize(("failures", "delay"), [(1, 0.25), (2, 0.5), (3, 1.0), (8, 30.0),
                                                 (50, 30.0)])
def test_restart_delay_doubles_and_caps(failures: int, delay: float) -> None:
    assert restart_delay(failures) == delay


READY = ChildState(phase="ready", healthy_since=0.0)


@pytest.mark.parametrize(("state", "alive", "healthy", "now", "phase", "action"), [
    # healthy stays ready
    (READY, True, True, 5.0, "ready", "none"),
    # died: restart scheduled after the first backoff, not at once
    (READY, False, False, 5.0, "restarting", "none"),
    # restart due once the backoff has passed
    (ChildState(phase="restarting", failures=1, restart_at=5.25), False, False, 5.3,
     "restarting", "restart"),
    (ChildState(phase="restarting", failures=1, restart_at=5.25), False, False, 5.1,
     "restarting", "none"),
    # alive but not answering: reported at once, killed only after the hang time
    (READY, True, False, 5.0, "unhealthy", "none"),
    (ChildState(phase="unhealthy", unhealthy_since=5.0), True, False, 20.0, "unhealthy", "none"),
    (ChildState(phase="unhealthy", unhealthy_since=5.0), True, False, 35.0, "unhealthy", "kill"),
    # maintenance and stopped children are left alone
    (ChildState(phase="maintenance"), False, False, 5.0, "maintenance", "none"),
    (ChildState(phase="stopped"), False, False, 5.0, "stopped", "none"),
])
def test_assess(state: ChildState, alive: bool, healthy: bool, now: float, phase: str,
                action: str) -> None:
    new, act = assess(state, alive, healthy, now)
    assert (new.phase, act) == (phase, action)


def test_failures_grow_while_crashing_and_reset_after_a_stable_period() -> None:
    state = ChildState(phase="ready", failures=3, healthy_since=100.0)
    crashed, _ = assess(state, False, False, 110.0)  # healthy for 10 s only
    assert crashed.failures == 4 and crashed.restart_at == 110.0 + restart_delay(4)
    crashed, _ = assess(state, False, False, 200.0)  # healthy for 100 s: a new run
    assert crashed.failures == 1 and crashed.restart_at == 200.25


class FakeChild:
    name = "fake"

    def __init__(self) -> None:
        self.running = False
        self.answers = True
        self.starts = 0
        self.fail_starts = 0
        self.asked = 0

    @property
    def pid(self) -> int | None:
        return None

    def command(self) -> list[str]:
        return ["fake"]

    async def start(self) -> None:
        if self.fail_starts:
            self.fail_starts -= 1
            raise RuntimeError("port in use")
        self.starts += 1
        self.running = True

    async def stop(self, grace: float = 5.0) -> None:
        self.running = False

    async def healthy(self) -> bool:
        self.asked += 1
        return self.answers


async def test_supervisor_restarts_a_dead_child_with_backoff(tmp_path: Path) -> None:
    clock = ManualClock()
    sup = Supervisor(tmp_path, clock)
    child = FakeChild()
    sup.add(child)
    await sup.start_all()
    assert child.starts == 1 and sup.ready("fake")
    child.running = False  # it died
    child.fail_starts = 1  # and the first restart fails
    await sup.check("fake")
    assert sup.status()["fake"]["state"] == "restarting" and child.starts == 1
    clock.advance(0.3)
    await sup.check("fake")  # due: the restart fails, the next waits longer
    assert child.starts == 1 and "restart failed" in sup.status()["fake"]["message"]
    clock.advance(0.3)
    await sup.check("fake")
    assert child.starts == 1  # 0.5 s backoff not over yet
    clock.advance(0.3)
    await sup.check("fake")
    assert child.starts == 2 and sup.ready("fake") and sup.status()["fake"]["restarts"] == 1


async def test_a_ready_child_is_asked_every_health_interval_a_failing_one_every_check(
        tmp_path: Path) -> None:
    clock = ManualClock()
    sup = Supervisor(tmp_path, clock, interval=0.5, health_interval=2.0)
    child = FakeChild()
    sup.add(child)
    await sup.start_all()
    for _ in range(8):  # 4 s of checks every 0.5 s: asked at 0 and 2 s only
        await sup.check("fake")
        clock.advance(0.5)
    assert child.asked == 2 and sup.ready("fake")
    clock.advance(1.5)  # 2 s since the last question
    child.answers = False  # it hangs
    await sup.check("fake")
    assert sup.status()["fake"]["state"] == "unhealthy"
    for _ in range(3):  # not ready: asked at every check until it answers again
        clock.advance(0.5)
        await sup.check("fake")
    assert child.asked == 6
    child.running = False  # a dead process is seen at the next check, without asking
    await sup.check("fake")
    assert sup.status()["fake"]["state"] == "restarting" and child.asked == 6


async def test_maintenance_stops_works_and_starts(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path, ManualClock())
    child = FakeChild()
    sup.add(child)
    await sup.start_all()
    seen = []

    async def work() -> None:
        seen.append((child.running, sup.status()["fake"]["state"]))

    await sup.maintenance("fake", work)
    assert seen == [(False, "maintenance")] and child.running and sup.ready("fake")


class Answerer:
    """A loopback HTTP/1.1 server that keeps connections alive and counts them; while
    ``hang`` is set it reads a request and never answers (a frozen child)."""

    def __init__(self) -> None:
        self.connections = 0
        self.hang = False
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/health"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:  # a hung answer ends when its connection does
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        body = b'{"health":"true"}'
        try:
            while (await reader.readuntil(b"\r\n\r\n")):
                if self.hang:
                    await reader.read()  # until the client gives up and closes
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_the_health_probe_keeps_one_connection_and_drops_it_on_failure() -> None:
    answerer = Answerer()
    async with answerer as url:
        probe = HealthProbe(url)
        for _ in range(5):
            answer = await probe.get(timeout=5.0)
            assert answer == (200, b'{"health":"true"}') and etcd_health(answer)
        assert answerer.connections == 1  # five probes, one connection
        answerer.hang = True  # frozen: the probe gives up at its time-out
        assert await probe.get(timeout=0.05) is None
        answerer.hang = False
        assert await probe.get(timeout=5.0) == (200, b'{"health":"true"}')
        assert answerer.connections == 2  # the hung connection was not asked again
        await probe.close()  # as a child's stop does: its successor gets a new one
        assert await probe.get(timeout=5.0) is not None and answerer.connections == 3
        await probe.close()


async def test_stopping_a_child_drops_its_probe_connection(tmp_path: Path) -> None:
    answerer = Answerer()
    async with answerer as url:
        etcd = EtcdProcess(tmp_path, 1, peer_port=2)  # never started: only its probe
        etcd.probe = HealthProbe(url)
        assert await etcd.healthy() and await etcd.healthy()
        assert answerer.connections == 1
        await etcd.stop()
        assert await etcd.healthy() and answerer.connections == 2
        await etcd.stop()


class ProbedChild(FakeChild):
    """A fake process whose health is asked over the real probe (short time-out)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.probe = HealthProbe(url)
        self.stops = 0

    async def stop(self, grace: float = 5.0) -> None:
        self.stops += 1
        self.running = False
        await self.probe.close()

    async def healthy(self) -> bool:
        self.asked += 1
        return etcd_health(await self.probe.get(timeout=0.05))


async def test_a_hung_child_is_found_over_the_kept_connection_and_killed_at_hang_after(
        tmp_path: Path) -> None:
    answerer = Answerer()
    async with answerer as url:
        clock = ManualClock()
        sup = Supervisor(tmp_path, clock, interval=0.5, health_interval=2.0)
        child = ProbedChild(url)
        sup.add(child)
        await sup.start_all()
        for _ in range(4):
            clock.advance(2.0)
            await sup.check("fake")
        assert sup.ready("fake") and answerer.connections == 1
        answerer.hang = True  # frozen (SIGSTOP): holds its socket, answers nothing
        clock.advance(2.0)
        await sup.check("fake")
        assert sup.status()["fake"]["state"] == "unhealthy" and child.stops == 0
        hung_at, asked = clock.now(), child.asked
        while clock.now() < hung_at + 28.0:  # asked at every check; not killed before 30 s
            clock.advance(2.0)
            await sup.check("fake")
            assert child.stops == 0, clock.now() - hung_at
        assert child.asked == asked + 14
        clock.advance(2.0)  # 30 s without an answer
        await sup.check("fake")
        assert child.stops == 1 and "killing" in sup.status()["fake"]["message"]
        answerer.hang = False
        clock.advance(1.0)
        await sup.check("fake")  # dead now: restarted after its backoff, then asked anew
        clock.advance(1.0)
        await sup.check("fake")
        assert child.starts == 2 and sup.ready("fake")
        clock.advance(2.0)
        await sup.check("fake")
        assert sup.ready("fake")
        await child.probe.close()


@pytest.mark.parametrize(("answer", "healthy"), [
    ((200, b'{"health":"true"}'), True), ((200, b'{"health": "false"}'), False),
    ((503, b'{"health":"true"}'), False), ((200, b"not json"), False), ((200, b"[]"), False),
    (None, False)])
def test_etcd_health_reads_the_body(answer: tuple[int, bytes] | None, healthy: bool) -> None:
    assert etcd_health(answer) is healthy


def test_parse_stat_counts_fields_after_the_command_name() -> None:
    fields = " ".join(["S"] + [str(i) for i in range(4, 22)] + ["123456"] + ["0"] * 30)
    assert parse_stat(f"42 (a (weird) name) {fields}") == ("S", 123456)


@pytest.mark.real_process("stop_leftovers polls a real child process until it exits")
def test_pidfiles_recognise_the_process_not_its_pid(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_pidfile(tmp_path / "child.pid", proc.pid, ["python"])
        record = read_pidfile(tmp_path / "child.pid")
        assert record is not None and record.pid == proc.pid and record.alive()
        # Same pid, another start time: a reused pid is not ours.
        stranger = PidRecord(proc.pid, (process_start_time(proc.pid) or 0) + 1)
        assert not stranger.alive()
        (tmp_path / "stranger.pid").write_text(
            f'{{"pid": {proc.pid}, "startTime": {stranger.start_time}}}')
        (tmp_path / "child.pid").rename(tmp_path / "zz-child.pid")
        stopped = stop_leftovers(tmp_path)
        assert stopped == [f"zz-child (pid {proc.pid})"]
        assert proc.wait(10) is not None
        assert not list(tmp_path.glob("*.pid"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
