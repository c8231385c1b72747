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

Decisions are kept for ``allinone function get`` and ``/metrics``. State is in memory
only: after a restart the KPA starts afresh (in panic mode when several pods are ready,
as Knative does), which never scales a loaded function down on partial data.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
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
        self.states: dict[str, KPAState] = {}
        self.decisions: dict[str, Decision] = {}
        self._poked: set[str] = set()
        # function -> the last unexpected error scaling it (logged once per reason)
        self._broken: dict[str, str] = {}
        self._wake = asyncio.Event()
        functions.add_handler(self._on_function)

    def _on_function(self, key: str, old: Any, new: Any) -> None:
        if new is None:
            name = key.rsplit("/", 1)[-1]
            self.states.pop(name, None)
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
            names |= self._poked
            self._poked.clear()
            for name in sorted(names):
                # One function's trouble is its own: the others keep scaling.
                try:
                    await self.scale(name)
                except (StoreError, OSError) as exc:
                    log.warning("autoscaling %s failed: %s", name, exc)
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    if self._broken.get(name) != reason:  # once, not every tick
                        log.exception("autoscaling %s failed; skipped until it changes", name)
                    self._broken[name] = reason
                else:
                    self._broken.pop(name, None)

    async def scale(self, name: str) -> Decision | None:
        fn = self.functions.get(name)
        if fn is None:
            return None
        scaling = objects.scaling(fn["spec"])
        now = self.clock.now()
        sample = self.activator.route(name).tracker.take(now)
        ready = self.activator.ready_pods(name)
        obs = observation(sample, ready)
        state = self.states.get(name) or initial_state(scaling, now, ready_pods=ready)
        decision, self.states[name] = decide(scaling, state, obs, now)
        previous = self.decisions.get(name)
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
