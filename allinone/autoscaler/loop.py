"""The autoscaler's thin loop: the I/O around the pure :func:`~allinone.autoscaler.kpa.decide`.

Every tick (2 s by default) and at once when the activator pokes a function (a request
arrived and no pod is ready), for each function:

1. take the activator's sample (time-weighted concurrency and requests per second,
   held requests included) and its count of ready pods; the KPA picks the one
   ``spec.scaling.metric`` names;
2. ``decide`` with the function's ``spec.scaling`` and the remembered state;
3. cap the count at what fits the pod memory budget and the per-function ceiling
   (:class:`~allinone.budget.PodBudget`, which also records ``status.capped``);
4. write ``spec.replicas`` of the ReplicaSet when, and only when, it differs (a CAS on
   the cached object's resourceVersion; on conflict, re-read and try again).

A tick decides a function only when something could change its count: a function
whose last decision still stands (:attr:`~allinone.autoscaler.kpa.Decision.stands_until`:
nothing started or in flight since, same ready pods, same scaling) keeps it, and only
its ``spec.replicas`` is checked against it. :class:`FunctionScaler` is that rule, the
one the simulator runs too. A kept decision's window values (``function get``, the
dashboard) are those it was made with, until the next decide.

Decisions are kept for ``allinone function get`` and ``/metrics``. State is in memory
only: after a restart the KPA starts afresh (in panic mode when several pods are ready,
as Knative does), which never scales a loaded function down on partial data.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from allinone import objects
from allinone.activator.activator import Activator
from allinone.activator.stats import Sample
from allinone.autoscaler.kpa import Decision, KPAState, Observation, decide, initial_state
from allinone.budget import PodBudget
from allinone.clock import Clock
from allinone.informer import Informer
from allinone.metrics import Metrics
from allinone.store import Conflict, NotFound, Store, StoreError

log = logging.getLogger(__name__)


def observation(sample: Sample, ready_pods: int) -> Observation:
    """What ``decide`` sees from one tracker sample (also the simulator's one rule)."""
    # Requests per second: the requests the activator started in the interval.
    rps = sample.requests_started / sample.interval if sample.interval > 0 else 0.0
    return Observation(
        ready_pods=ready_pods,
        samples=(((sample.at, sample.average_concurrency, rps),)
                 if sample.interval > 0 else ()),
        in_flight=sample.in_flight,
        last_request_at=sample.last_request_at,
    )


class FunctionScaler:
    """One function's KPA between ticks: its state, its last decision, and whether a
    tick must decide (the autoscaler loop's rule, which the simulator runs as well).

    :meth:`step` decides unless the last decision stands: before its
    ``stands_until``, with the same ready count and scaling, not forced (a poke), and
    the tick's sample idle (no request started, none in flight, no concurrency). A
    skipped tick's sample is not lost: the zero time it covered goes to the next decide
    as one zero sample ending where it ended, so each non-zero sample still covers one
    tick and the window values are exactly those of deciding at every tick (they are
    time-weighted: merged zero intervals add the same covered time and no area).
    """

    __slots__ = ("_idle_to", "_ready", "_scaling", "decision", "state")

    def __init__(self) -> None:
        self.state: KPAState | None = None
        self.decision: Decision | None = None
        self._idle_to: float | None = None  # end of the zero samples not yet decided on
        self._ready = 0
        self._scaling: Mapping[str, Any] = {}

    def step(self, scaling: Mapping[str, Any], sample: Sample, ready: int, now: float,
             *, force: bool = False) -> Decision | None:
        """The new decision, or None when the last one stands (nothing to do)."""
        last = self.decision
        if (last is not None and not force and now < last.stands_until
                and ready == self._ready and sample.in_flight == 0
                and sample.requests_started == 0 and sample.average_concurrency == 0
                and scaling == self._scaling):
            if sample.interval > 0:
                self._idle_to = sample.at
            return None
        obs = observation(sample, ready)
        if self._idle_to is not None:
            obs = Observation(ready, ((self._idle_to, 0.0, 0.0), *obs.samples),
                              obs.in_flight, obs.last_request_at)
            self._idle_to = None
        state = self.state or initial_state(scaling, now, ready_pods=ready)
        self.decision, self.state = decide(scaling, state, obs, now)
        self._ready, self._scaling = ready, scaling
        return self.decision


class Autoscaler:
    def __init__(self, store: Store, functions: Informer, replicasets: Informer,
                 activator: Activator, clock: Clock, metrics: Metrics,
                 tick_seconds: float = 2.0, budget: PodBudget | None = None) -> None:
        self.store = store
        self.functions = functions
        self.replicasets = replicasets
        self.activator = activator
        self.clock = clock
        self.metrics = metrics
        self.tick_seconds = tick_seconds
        self.budget = budget
        self.scalers: dict[str, FunctionScaler] = {}
        self.decisions: dict[str, Decision] = {}
        self._poked: set[str] = set()
        # function -> the last unexpected error scaling it (logged once per reason)
        self._broken: dict[str, str] = {}
        self._wake = asyncio.Event()
        functions.add_handler(self._on_function)

    def _on_function(self, key: str, old: Any, new: Any) -> None:
        if new is None:
            name = key.rsplit("/", 1)[-1]
            self.scalers.pop(name, None)
            self.decisions.pop(name, None)

    def poke(self, function: str) -> None:
        """A request is waiting with no ready pod: decide for it now, not at the next tick."""
        if function not in self._poked:
            self._poked.add(function)
            self._wake.set()

    def status(self, function: str) -> dict[str, Any]:
        d = self.decisions.get(function)
        if d is None:
            return {"desired": None, "stableConcurrency": 0.0, "panicConcurrency": 0.0,
                    "panic": False, "reason": "no decision yet"}
        return {"desired": d.desired, "stableConcurrency": d.stable_concurrency,
                "panicConcurrency": d.panic_concurrency, "panic": d.panic, "reason": d.reason,
                "metric": d.metric, "excessBurstCapacity": d.excess_burst_capacity}

    async def run(self) -> None:
        await self.functions.synced.wait()
        await self.replicasets.synced.wait()
        next_tick = self.clock.now()
        while True:
            timeout = max(next_tick - self.clock.now(), 0)
            try:
                await self.clock.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            self._wake.clear()
            if self.clock.now() >= next_tick:
                names = {f["metadata"]["name"] for f in self.functions.items()}
                next_tick = self.clock.now() + self.tick_seconds
            else:
                names = set()
            poked, self._poked = self._poked, set()
            for name in sorted(names | poked):
                # One function's trouble is its own: the others keep scaling.
                try:
                    await self.scale(name, poked=name in poked)
                except (StoreError, OSError) as exc:
                    log.warning("autoscaling %s failed: %s", name, exc)
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    if self._broken.get(name) != reason:  # once, not every tick
                        log.exception("autoscaling %s failed; skipped until it changes", name)
                    self._broken[name] = reason
                else:
                    self._broken.pop(name, None)

    async def scale(self, name: str, *, poked: bool = False) -> Decision | None:
        fn = self.functions.get(name)
        if fn is None:
            return None
        scaling = objects.scaling(fn["spec"])
        now = self.clock.now()
        sample = self.activator.route(name).tracker.take(now)
        ready = self.activator.ready_pods(name)
        scaler = self.scalers.setdefault(name, FunctionScaler())
        previous = self.decisions.get(name)
        # A capped function decides every tick, so the mark is cleared once it fits.
        kpa = scaler.step(scaling, sample, ready, now,
                          force=poked or previous is None or "capped" in fn.get("status", {}))
        if kpa is None:
            assert previous is not None  # forced above
            # The decision stands; replicas are still checked (and repaired) against it.
            if previous.desired is not None:
                await self._set_replicas(name, previous)
            return previous
        decision = kpa
        if decision.desired is not None and self.budget is not None \
                and self._needs_cap(name, fn, decision.desired, previous):
            cap = await self.budget.cap(name, fn, decision.desired)
            if cap.capped:
                decision = dataclasses.replace(
                    decision, desired=cap.replicas, reason=f"{decision.reason}; {cap.message}")
        self.decisions[name] = decision
        # Gauges are set when they change: a labels() lookup per function per tick is
        # most of what an idle server would spend here.
        if previous is None or previous.panic != decision.panic:
            self.metrics.panic.labels(name).set(1 if decision.panic else 0)
        if previous is None or previous.excess_burst_capacity != decision.excess_burst_capacity:
            self.metrics.excess_burst_capacity.labels(name).set(decision.excess_burst_capacity)
        if decision.desired is not None:
            if previous is None or previous.desired != decision.desired:
                self.metrics.desired_replicas.labels(name).set(decision.desired)
            await self._set_replicas(name, decision)
        return decision

    def _needs_cap(self, name: str, fn: Any, desired: int, previous: Decision | None) -> bool:
        """Whether ``desired`` must go through the pod budget.

        The budget is checked whenever the count would change, while the function is
        marked capped (so the mark is cleared once it fits), and at its first decision
        after a start (limits may have changed). Keeping the current count otherwise
        needs no check: it fitted when it was written, because every other function's
        growth was capped against it. This keeps an idle server's tick O(functions)
        rather than O(functions^2) (each check sums every ReplicaSet).
        """
        rs = self.replicasets.get(name)
        return (previous is None or previous.desired is None or rs is None
                or rs["spec"].get("replicas") != desired or "capped" in fn.get("status", {}))

    async def _set_replicas(self, name: str, decision: Decision) -> None:
        assert decision.desired is not None
        key = objects.replicaset_key(name)
        rs = self.replicasets.get(name)
        for _ in range(5):
            if rs is None:
                return  # deleted, or not created yet: nothing to scale
            if rs["spec"].get("replicas") == decision.desired:
                return
            new = copy.deepcopy(rs)
            new["spec"]["replicas"] = decision.desired
            try:
                await self.store.update(key, new)
                log.info("%s: replicas %s -> %s (%s)", name, rs["spec"].get("replicas"),
                         decision.desired, decision.reason)
                return
            except Conflict:
                try:
                    rs = await self.store.get(key)
                except NotFound:
                    return
            except NotFound:
                return
