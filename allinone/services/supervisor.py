"""The supervisor of embedded children (etcd, the registry): start, health-check,
restart with backoff, stop. One for every ``allinone serve``.

A child is anything with the :class:`Child` shape (``name``, ``running``, ``pid``,
``start``, ``stop``, ``healthy``). The supervisor keeps, per child:

- a pidfile ``RUN_DIR/NAME.pid`` with the pid and the process start time, written
  after every start and removed after a stop, so the next server on the same state
  directory can stop what a SIGKILLed one left behind (see
  :func:`~allinone.services.process.stop_leftovers`);
- a :class:`ChildState`, moved by the pure :func:`assess` on every check (every
  ``interval`` seconds): a child that exited is restarted after a backoff that doubles
  per consecutive failure (0.25 s, 0.5 s, ... capped at 30 s) and resets once it has been
  healthy for ``stable_after`` seconds; a child that is alive but fails its health
  check for ``hang_after`` seconds in a row is considered hung and killed (then
  restarted the same way). While a child is ready, its health endpoint is asked at most
  every ``health_interval`` seconds (2 s), its process every ``interval`` (0.5 s), and
  each child's probe keeps one connection open (:class:`~allinone.services.process.
  HealthProbe`): a fresh HTTP connection per probe, four a second, was half of an idle
  server's CPU (py-spy, 40 warm functions: 262 of 482 busy samples), and a hang is
  judged over ``hang_after`` (30 s), so probing more often changed nothing but the
  cost. A short health failure
  is only reported, never acted on: a frozen etcd must not be killed while the data
  plane is serving around it.

``status()`` is what ``GET /readyz`` shows. ``maintenance(name, work)`` stops a child,
runs ``work`` (the registry's offline garbage collection) and starts it again, with
the child reported as ``maintenance`` meanwhile and never restarted behind its back.

Invariants: the supervisor never signals a process by name, only its own children
(through their objects) and processes recorded in its own state directory's pidfiles.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from allinone.clock import Clock, SystemClock
from allinone.services.process import write_pidfile

log = logging.getLogger(__name__)

Phase = Literal["starting", "ready", "unhealthy", "restarting", "maintenance", "stopped"]
Action = Literal["none", "restart", "kill"]

BACKOFF_FIRST = 0.25
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0
HEALTH_INTERVAL = 2.0
HANG_AFTER = 30.0


class Child(Protocol):
    name: str

    @property
    def running(self) -> bool: ...

    @property
    def pid(self) -> int | None: ...

    def command(self) -> list[str]: ...

    async def start(self) -> None: ...

    async def stop(self, grace: float = 5.0) -> None: ...

    async def healthy(self) -> bool: ...


@dataclass(frozen=True)
class ChildState:
    phase: Phase = "starting"
    failures: int = 0  # consecutive deaths without a stable period between them
    restarts: int = 0  # restarts since the server started, for the operator
    restart_at: float | None = None  # when the pending restart may happen
    unhealthy_since: float | None = None
    healthy_since: float | None = None
    message: str = ""


def restart_delay(failures: int) -> float:
    """Seconds before restart number ``failures`` (1-based) of a run of failures."""
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(failures - 1, 0)))


def assess(state: ChildState, alive: bool, healthy: bool, now: float, *,
           hang_after: float = HANG_AFTER,
           stable_after: float = STABLE_AFTER) -> tuple[ChildState, Action]:
    """The next state of one child and what to do, from one observation. Pure."""
    if state.phase in ("maintenance", "stopped"):
        return state, "none"
    if not alive:
        if state.phase == "restarting" and state.restart_at is not None:
            return state, ("restart" if now >= state.restart_at else "none")
        stable = state.healthy_since is not None and now - state.healthy_since >= stable_after
        failures = 1 if stable else state.failures + 1
        delay = restart_delay(failures)
        return replace(state, phase="restarting", failures=failures, restart_at=now + delay,
                       unhealthy_since=None, healthy_since=None,
                       message=f"exited; restarting in {delay:g} s (failure {failures})"
                       ), ("restart" if delay <= 0 else "none")
    if healthy:
        since = state.healthy_since if state.healthy_since is not None else now
        failures = 0 if now - since >= stable_after else state.failures
        return replace(state, phase="ready", healthy_since=since, unhealthy_since=None,
                       restart_at=None, failures=failures, message=""), "none"
    since = state.unhealthy_since if state.unhealthy_since is not None else now
    if now - since >= hang_after:
        return replace(state, phase="unhealthy", unhealthy_since=since, healthy_since=None,
                       message=f"no answer for {now - since:.0f} s; killing it"), "kill"
    return replace(state, phase="unhealthy", unhealthy_since=since, healthy_since=None,
                   message=f"health check failing for {now - since:.1f} s"), "none"


class Supervisor:
    def __init__(self, run_dir: Path, clock: Clock | None = None, *, interval: float = 0.5,
                 health_interval: float = HEALTH_INTERVAL, hang_after: float = HANG_AFTER,
                 stable_after: float = STABLE_AFTER) -> None:
        self.run_dir = Path(run_dir)
        self.clock = clock or SystemClock()
        self.interval = interval
        self.health_interval = health_interval
        self._probed: dict[str, float] = {}  # when each ready child's health was last asked
        self.hang_after = hang_after
        self.stable_after = stable_after
        self.children: dict[str, Child] = {}
        self.states: dict[str, ChildState] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Called after a child was restarted (name), e.g. to count restarts in /metrics.
        self.on_restart: Callable[[str], None] = lambda name: None

    def pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def add(self, child: Child) -> None:
        self.children[child.name] = child
        self.states[child.name] = ChildState()
        self._locks[child.name] = asyncio.Lock()

    async def _start(self, child: Child) -> None:
        self._probed.pop(child.name, None)  # a new process is asked at its next check
        await child.start()
        if child.pid is not None:
            write_pidfile(self.pidfile(child.name), child.pid, child.command())

    async def start_all(self) -> None:
        """Start every child in the order added; on failure stop those started."""
        started: list[Child] = []
        try:
            for child in self.children.values():
                await self._start(child)
                started.append(child)
                self.states[child.name] = ChildState(phase="ready",
                                                     healthy_since=self.clock.now())
        except BaseException:
            for child in reversed(started):
                await self._stop(child)
            raise

    async def _stop(self, child: Child) -> None:
        try:
            await child.stop()
        except Exception as exc:  # best effort on the way out
            log.warning("stopping %s failed: %s", child.name, exc)
        self.pidfile(child.name).unlink(missing_ok=True)

    async def stop_all(self) -> None:
        for name in reversed(list(self.children)):
            async with self._locks[name]:
                self.states[name] = replace(self.states[name], phase="stopped", message="")
                await self._stop(self.children[name])

    def status(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, st in self.states.items():
            child = self.children[name]
            out[name] = {"state": st.phase, "pid": child.pid if child.running else None,
                         "restarts": st.restarts, "message": st.message}
        return out

    def ready(self, name: str) -> bool:
        st = self.states.get(name)
        return st is not None and st.phase == "ready"

    async def check(self, name: str) -> None:
        """One observation and its consequence for one child."""
        child = self.children[name]
        async with self._locks[name]:
            state = self.states[name]
            if state.phase in ("maintenance", "stopped"):
                return
            alive = child.running
            now = self.clock.now()
            last = self._probed.get(name)
            if (alive and state.phase == "ready" and last is not None
                    and now - last < self.health_interval):
                healthy = True  # ready, alive, and asked less than health_interval ago
            else:
                healthy = alive and await child.healthy()
                now = self.clock.now()
                self._probed[name] = now if healthy else float("-inf")
            new, action = assess(state, alive, healthy, now, hang_after=self.hang_after,
                                 stable_after=self.stable_after)
            if new.phase != state.phase:
                level = logging.INFO if new.phase == "ready" else logging.WARNING
                log.log(level, "%s: %s -> %s %s", name, state.phase, new.phase, new.message)
            self.states[name] = new
            if action == "kill":
                await child.stop(grace=1.0)
            elif action == "restart":
                await self._restart(child, new)

    async def _restart(self, child: Child, state: ChildState) -> None:
        name = child.name
        try:
            await child.stop(grace=1.0)  # reap what is left, if anything
            await self._start(child)
        except Exception as exc:
            failures = state.failures + 1
            delay = restart_delay(failures)
            log.warning("restarting %s failed (%s); next attempt in %g s", name, exc, delay)
            self.states[name] = replace(state, failures=failures,
                                        restart_at=self.clock.now() + delay,
                                        message=f"restart failed: {exc}; retrying in {delay:g} s")
            return
        log.warning("%s restarted (pid %s, restart %d)", name, child.pid, state.restarts + 1)
        self.states[name] = replace(state, phase="ready", restarts=state.restarts + 1,
                                    restart_at=None, healthy_since=self.clock.now(),
                                    message="")
        self.on_restart(name)

    async def run(self) -> None:
        """Check every child every ``interval`` seconds until cancelled."""
        while True:
            for name in list(self.children):
                try:
                    await self.check(name)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one child's trouble never stops the supervision
                    log.exception("supervising %s failed", name)
            await self.clock.sleep(self.interval)

    async def maintenance(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Stop ``name``, run ``work``, start it again (restarts resume on failure)."""
        child = self.children[name]
        async with self._locks[name]:
            state = self.states[name]
            self.states[name] = replace(state, phase="maintenance", message="maintenance")
            try:
                await child.stop()
                await work()
            finally:
                try:
                    await self._start(child)
                    self.states[name] = replace(state, phase="ready", message="",
                                                healthy_since=self.clock.now())
                except Exception as exc:
                    log.warning("starting %s after maintenance failed: %s", name, exc)
                    # Not alive: the next check schedules a restart with backoff.
                    self.states[name] = replace(state, phase="ready", message=str(exc))

