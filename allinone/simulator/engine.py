"""The discrete-event driver: a trace through the production decisions, in virtual time.

What runs for real (imported, never copied):

- the KPA: :func:`allinone.autoscaler.kpa.decide` with :func:`initial_state`, fed by
  the activator's own :class:`~allinone.activator.stats.ConcurrencyTracker` through the
  autoscaler loop's :func:`~allinone.autoscaler.loop.observation`, every ``tick``
  seconds per function on one grid, and at once (after ``poke_delay``) when a request
  finds no ready pod, as the loop does when the activator pokes it;
- pod choice: :func:`allinone.activator.balancer.pick` over the function's
  :class:`~allinone.activator.balancer.Endpoint` table, which respects
  ``containerConcurrency`` and skips draining pods;
- replica planning: :func:`allinone.controller.planning.plan` on every change of
  ``spec.replicas`` and every pod event, as the controller's ``sync`` does.

What is simulated, from the :class:`~allinone.simulator.model.RuntimeModel`: a pod is
Ready ``pod_start`` after its creation (``unpause`` when a parked pod is resumed), with
at most ``parallel_starts`` container starts in progress at once across the node; a
request's service time is its trace duration plus ``activator_overhead``.

The activator's queueing is mirrored in the driver, because it lives in the async
:class:`~allinone.activator.activator.Activator` (futures, ``aiohttp``) and cannot run
under a virtual clock without special cases (the seam: a pure throttler holding the
waiter queue, admission and wake rules, which both the activator and this driver would
call). The rules mirrored: a request with no free slot waits FIFO in the function's
bounded queue (``queue_limit``; beyond it 503 at once) up to ``timeoutSeconds`` (then
504); a pod becoming Ready wakes every waiter, a finished request wakes one; a request
finding no ready pod pokes the autoscaler. Cold start = no ready pod when the request
arrived (the activator's ``cold_starts`` metric). Paused-pod retention (the kubelet's
parking, inside its async stop/start) is mirrored the same way: a drained, ready pod of
the current template is parked for ``keep_paused`` seconds and the next create resumes
the most recent one.

Invariants:

- Events at the same virtual time run in a fixed order (heap events before trace
  arrivals, then by insertion), and all randomness comes from one seeded ``Random``:
  a run is a pure function of (trace, specs, model, seed).
- Dormancy is the one shortcut, and it is exact: a function with no pod, nothing in
  flight or held, desired 0 (or no data) and not in panic stops ticking. Further ticks
  could only record zero-concurrency samples, and one zero sample over the whole gap
  gives the same window averages; so on its next request the driver runs the one
  missed grid tick (catch-up) and resumes. ``exact_ticks=True`` turns it off; a unit
  test checks both give the same results.
"""

from __future__ import annotations

import heapq
import math
import random
from array import array
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from allinone import objects
from allinone.activator.balancer import Endpoint, pick
from allinone.activator.stats import ConcurrencyTracker
from allinone.autoscaler.kpa import KPAState, decide, initial_state
from allinone.autoscaler.loop import observation
from allinone.controller.planning import PENDING, RUNNING, TERMINATING, PodView, plan
from allinone.simulator.model import RuntimeModel
from allinone.simulator.trace import Trace

TICK_SECONDS = 2.0  # the autoscaler loop's default tick (allinone serve --tick)
QUEUE_LIMIT = 10_000  # the activator's default bounded queue per function
TEMPLATE = "sim"  # one template per function: the simulator does no rollouts

# Event kinds, in the heap as (time, seq, kind, function, payload).
_COMPLETE, _READY, _TICK, _POKE, _SYNC, _TIMEOUT, _EVICT = range(7)

# Outcomes recorded per request.
OK, REJECTED, TIMED_OUT = 200, 503, 504


@dataclass(frozen=True)
class SimSpec:
    """A function's spec as the simulator uses it, validated like the API does."""

    scaling: Mapping[str, Any]
    timeout: float
    container_concurrency: int
    keep_paused: float = 0.0  # the server's --keep-paused, per run

    @classmethod
    def from_user(cls, user: Mapping[str, Any] | None = None) -> SimSpec:
        """``user``: a Function spec (``scaling``, ``timeoutSeconds``) plus, optionally,
        ``keepPausedSeconds`` (the server option ``--keep-paused``)."""
        data = dict(user or {})
        keep = data.pop("keepPausedSeconds", 0.0)
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or keep < 0 \
                or not math.isfinite(keep):
            raise objects.ValidationError(
                f"keepPausedSeconds must be a number of seconds >= 0, got {keep!r}")
        spec = objects.normalize_spec(data)
        scaling = objects.scaling(spec)
        return cls(scaling=scaling, timeout=float(spec.get("timeoutSeconds", 60)),
                   container_concurrency=int(scaling.get("containerConcurrency", 0)),
                   keep_paused=float(keep))


@dataclass
class _Pod:
    name: str
    created: float
    phase: str = PENDING
    ready: bool = False
    endpoint: Endpoint | None = None

    def view(self) -> PodView:
        return PodView(self.name, TEMPLATE, self.phase, self.ready, self.created)


@dataclass
class FunctionResult:
    """Everything recorded for one function; arrays are per request, in arrival order."""

    name: str
    arrival: array[float] = field(default_factory=lambda: array("d"))
    latency: array[float] = field(default_factory=lambda: array("d"))  # s, to the answer
    queued: array[float] = field(default_factory=lambda: array("d"))  # s held before a pod
    status: array[int] = field(default_factory=lambda: array("H"))
    cold: array[int] = field(default_factory=lambda: array("b"))
    pod_seconds: float = 0.0
    paused_seconds: float = 0.0
    peak_pods: int = 0
    panic_seconds: float = 0.0
    decisions: int = 0
    pods_started: int = 0
    pods_resumed: int = 0
    # Step series for charts: (t, value) at every change.
    desired_series: list[tuple[float, int]] = field(default_factory=list)
    ready_series: list[tuple[float, int]] = field(default_factory=list)
    pods_series: list[tuple[float, int]] = field(default_factory=list)
    panic_series: list[tuple[float, bool]] = field(default_factory=list)


class _Fn:
    """One function's live state in the driver."""

    __slots__ = (
        "dormant", "endpoints", "eps", "last_tick", "live_waiters", "name", "panic_from", "parked",
        "pod_count", "pod_since", "pods", "poked", "ready", "replicas", "res", "seq", "spec",
        "state", "tracker", "waiters", "was_panic",
    )

    def __init__(self, name: str, spec: SimSpec, start: float) -> None:
        self.name = name
        self.spec = spec
        self.tracker = ConcurrencyTracker()
        self.state: KPAState | None = None
        self.endpoints: dict[str, Endpoint] = {}
        self.eps: list[Endpoint] = []  # list(endpoints.values()), kept in step
        self.ready = 0  # endpoints not draining
        self.pods: dict[str, _Pod] = {}
        self.pod_count = 0  # pods that exist (any phase): the cost
        self.pod_since = start
        self.parked: list[tuple[int, float]] = []  # (id, since), most recent last
        self.replicas = 0
        self.waiters: deque[list[Any]] = deque()
        self.live_waiters = 0
        self.poked = False
        self.dormant = False
        self.last_tick = -math.inf
        self.was_panic = False
        self.panic_from = 0.0
        self.seq = 0
        self.res = FunctionResult(name)


@dataclass
class RunStats:
    events: int = 0
    ticks: int = 0
    catch_ups: int = 0


class Simulation:
    """One run of a trace under per-function specs and a runtime model."""

    def __init__(self, trace: Trace, specs: Mapping[str, SimSpec] | SimSpec,
                 model: RuntimeModel | None = None, *, seed: int = 0,
                 tick: float = TICK_SECONDS, queue_limit: int = QUEUE_LIMIT,
                 exact_ticks: bool = False, drain_after: float = 0.0) -> None:
        self.trace = trace
        self.model = model or RuntimeModel()
        self.rng = random.Random(seed)
        self.tick = tick
        self.queue_limit = queue_limit
        self.exact_ticks = exact_ticks
        self.drain_after = drain_after
        self.now = 0.0
        self.stats = RunStats()
        self._heap: list[tuple[float, int, int, Any, Any]] = []
        self._seq = 0
        self._starters = [0.0] * self.model.parallel_starts  # when each start slot frees
        self._park_ids = 0
        self.fns: list[_Fn] = []
        for name in trace.functions:
            spec = specs if isinstance(specs, SimSpec) else specs.get(name) or specs.get("*")
            if spec is None:
                raise ValueError(f"no spec for function {name!r} and no default '*' spec")
            self.fns.append(_Fn(name, spec, 0.0))

    # -- the heap ------------------------------------------------------------------

    def _push(self, t: float, kind: int, f: _Fn, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, f, payload))

    # -- run -------------------------------------------------------------------------

    def run(self) -> list[FunctionResult]:
        """Run to the end of the trace plus ``drain_after`` seconds of quiet (at least
        until every request is answered), and return per-function results."""
        for f in self.fns:
            self._push(0.0, _TICK, f)  # every function exists from t = 0 (created_at)
        arrival, fnidx, duration = self.trace.arrival, self.trace.fn, self.trace.duration
        fns, heap, pop = self.fns, self._heap, heapq.heappop
        n, i = len(arrival), 0
        end = (arrival[-1] if n else 0.0) + self.drain_after
        events = 0
        handlers = (self._complete, self._pod_ready, self._tick, self._poke, self._sync,
                    self._timeout, self._evict)
        while True:
            if heap and (i >= n or heap[0][0] <= arrival[i]):
                t, _, kind, f, payload = heap[0]
                if i >= n and t > end and not self._busy():
                    break
                pop(heap)
                self.now = t
                handlers[kind](f, t, payload)
            elif i < n:
                t = arrival[i]
                self.now = t
                self._arrive(fns[fnidx[i]], t, duration[i])
                i += 1
            else:
                break
            events += 1
        self.stats.events = events
        for f in self.fns:
            self._count_pods(f, self.now)
            if f.was_panic:
                f.res.panic_seconds += self.now - f.panic_from
                f.panic_from = self.now
        return [f.res for f in self.fns]

    def _busy(self) -> bool:
        return any(f.tracker.in_flight for f in self.fns)

    # -- requests (the activator's rules) ---------------------------------------------

    def _arrive(self, f: _Fn, t: float, dur: float) -> None:
        if f.dormant:
            self._wake(f, t)
        f.tracker.start(t)
        res = f.res
        res.arrival.append(t)
        res.cold.append(1 if f.ready == 0 else 0)
        idx = len(res.arrival) - 1
        res.latency.append(0.0)
        res.queued.append(0.0)
        res.status.append(OK)
        req = [t, dur, idx, True]  # arrival, duration, result index, still waiting
        if f.ready:
            ep = pick(f.eps, f.spec.container_concurrency, self.rng)
            if ep is not None:
                self._dispatch(f, ep, req, t)
                return
        else:
            self._poke_autoscaler(f, t)
        if f.live_waiters >= self.queue_limit:
            f.tracker.finish(t)
            res.status[idx] = REJECTED
            return
        f.waiters.append(req)
        f.live_waiters += 1
        self._push(t + f.spec.timeout, _TIMEOUT, f, req)

    def _dispatch(self, f: _Fn, ep: Endpoint, req: list[Any], t: float) -> None:
        ep.in_flight += 1
        req[3] = False
        self.res_queue(f, req, t)
        self._push(t + self.model.overhead + req[1], _COMPLETE, f, (ep, req))

    @staticmethod
    def res_queue(f: _Fn, req: list[Any], t: float) -> None:
        f.res.queued[req[2]] = t - req[0]

    def _complete(self, f: _Fn, t: float, payload: tuple[Endpoint, list[Any]]) -> None:
        ep, req = payload
        f.tracker.finish(t)
        f.res.latency[req[2]] = t - req[0]
        ep.in_flight -= 1
        if ep.draining:
            if ep.in_flight == 0:
                self._drained(f, ep, t)
        elif f.live_waiters:
            self._wake_waiters(f, t, 1)

    def _wake_waiters(self, f: _Fn, t: float, n: int) -> None:
        """Wake up to ``n`` held requests in FIFO order; each tries :func:`pick` again and
        goes back to the end of the queue when nothing is free, as in the activator."""
        cc = f.spec.container_concurrency
        waiters = f.waiters
        retry = []
        while n > 0 and waiters:
            req = waiters.popleft()
            if not req[3]:
                continue  # timed out meanwhile
            n -= 1
            ep = pick(f.eps, cc, self.rng) if f.ready else None
            if ep is None:
                retry.append(req)
                continue
            f.live_waiters -= 1
            self._dispatch(f, ep, req, t)
        waiters.extend(retry)

    def _timeout(self, f: _Fn, t: float, req: list[Any]) -> None:
        if not req[3]:
            return
        req[3] = False
        f.live_waiters -= 1
        f.tracker.finish(t)
        f.res.status[req[2]] = TIMED_OUT
        f.res.latency[req[2]] = t - req[0]
        f.res.queued[req[2]] = t - req[0]

    # -- the autoscaler loop ------------------------------------------------------------

    def _poke_autoscaler(self, f: _Fn, t: float) -> None:
        if not f.poked:
            f.poked = True
            self._push(t + self.model.poke_delay, _POKE, f)

    def _poke(self, f: _Fn, t: float, _: Any) -> None:
        f.poked = False
        self._decide(f, t)

    def _tick(self, f: _Fn, t: float, _: Any) -> None:
        self.stats.ticks += 1
        self._decide(f, t)
        f.last_tick = t
        if (not self.exact_ticks and not f.pods and f.replicas == 0 and not f.live_waiters
                and f.tracker.in_flight == 0 and not f.was_panic and not f.poked):
            f.dormant = True  # see the module docstring: exact, resumed by _wake
            return
        self._push(t + self.tick, _TICK, f)

    def _wake(self, f: _Fn, t: float) -> None:
        """Resume a dormant function: run the last grid tick it skipped, then tick on."""
        f.dormant = False
        last = math.floor(t / self.tick) * self.tick
        if last > f.last_tick:
            self.stats.catch_ups += 1
            self._decide(f, last)
            f.last_tick = last
        self._push(f.last_tick + self.tick, _TICK, f)

    def _decide(self, f: _Fn, t: float) -> None:
        sample = f.tracker.take(t)
        scaling = f.spec.scaling
        if f.state is None:
            f.state = initial_state(scaling, t, ready_pods=f.ready)
        decision, f.state = decide(scaling, f.state, observation(sample, f.ready), t)
        res = f.res
        res.decisions += 1
        if decision.panic != f.was_panic:
            res.panic_series.append((t, decision.panic))
            if decision.panic:
                f.panic_from = t
            else:
                res.panic_seconds += t - f.panic_from
            f.was_panic = decision.panic
        desired = decision.desired
        if desired is not None and desired != f.replicas:
            f.replicas = desired
            res.desired_series.append((t, desired))
            self._push(t + self.model.sync_delay, _SYNC, f)

    # -- the controller and the simulated runtime ---------------------------------------

    def _sync(self, f: _Fn, t: float, _: Any) -> None:
        p = plan(f.replicas, TEMPLATE, [pod.view() for pod in f.pods.values()])
        for name in p.remove:
            self._terminate(f, f.pods[name], t)
        for _ in range(p.create):
            self._create(f, t)

    def _create(self, f: _Fn, t: float) -> None:
        f.seq += 1
        pod = _Pod(f"{f.name}-{f.seq}", t)
        self._count_pods(f, t)
        f.pods[pod.name] = pod
        f.pod_count += 1
        if f.pod_count > f.res.peak_pods:
            f.res.peak_pods = f.pod_count
        f.res.pods_series.append((t, f.pod_count))
        if f.parked:
            _, since = f.parked.pop()  # the most recently parked: the warmest
            f.res.paused_seconds += t - since
            f.res.pods_resumed += 1
            self._push(t + self.model.unpause, _READY, f, pod)
            return
        # The engine starts containers parallel_starts at a time; the rest wait in line.
        starters = self._starters
        k = min(range(len(starters)), key=starters.__getitem__)
        begin = max(t, starters[k])
        starters[k] = begin + self.model.pod_start
        f.res.pods_started += 1
        self._push(starters[k], _READY, f, pod)

    def _pod_ready(self, f: _Fn, t: float, pod: _Pod) -> None:
        if pod.phase != PENDING or f.pods.get(pod.name) is not pod:
            return  # removed before it became ready
        pod.phase, pod.ready = RUNNING, True
        ep = Endpoint(pod=pod.name, address="simulated")  # nothing is ever sent to it
        pod.endpoint = ep
        f.endpoints[pod.name] = ep
        f.eps = list(f.endpoints.values())
        f.ready += 1
        f.res.ready_series.append((t, f.ready))
        if f.live_waiters:
            self._wake_waiters(f, t, f.live_waiters)
        self._sync(f, t, None)  # the controller syncs after every pod event

    def _terminate(self, f: _Fn, pod: _Pod, t: float) -> None:
        was_ready = pod.ready
        pod.phase, pod.ready = TERMINATING, False
        ep = pod.endpoint
        if ep is None:
            self._remove(f, pod, t, park=False)  # never ready: its start is abandoned
            return
        ep.draining = True
        f.ready -= 1
        f.res.ready_series.append((t, f.ready))
        if ep.in_flight == 0:
            self._drained(f, ep, t, park=was_ready)

    def _drained(self, f: _Fn, ep: Endpoint, t: float, park: bool = True) -> None:
        del f.endpoints[ep.pod]
        f.eps = list(f.endpoints.values())
        self._remove(f, f.pods[ep.pod], t, park=park)

    def _remove(self, f: _Fn, pod: _Pod, t: float, *, park: bool) -> None:
        self._count_pods(f, t)
        del f.pods[pod.name]
        f.pod_count -= 1
        f.res.pods_series.append((t, f.pod_count))
        keep = f.spec.keep_paused
        if park and keep > 0:
            self._park_ids += 1
            f.parked.append((self._park_ids, t))
            self._push(t + keep, _EVICT, f, self._park_ids)
        self._push(t, _SYNC, f)  # the controller syncs after every pod event

    def _evict(self, f: _Fn, t: float, park_id: int) -> None:
        for j, (pid, since) in enumerate(f.parked):
            if pid == park_id:
                del f.parked[j]
                f.res.paused_seconds += t - since
                return

    def _count_pods(self, f: _Fn, t: float) -> None:
        f.res.pod_seconds += f.pod_count * (t - f.pod_since)
        f.pod_since = t
