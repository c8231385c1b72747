"""The discrete-event driver: a trace through the production decisions, in virtual time.

What runs for real (imported, never copied):

- the KPA: :func:`allinone.autoscaler.kpa.decide`, through the autoscaler loop's own
  :class:`~allinone.autoscaler.loop.FunctionScaler` (which skips a tick while the last
  decision stands), fed by the activator's
  :class:`~allinone.activator.stats.ConcurrencyTracker`, every ``tick`` seconds per
  function on one grid, and at once (after ``poke_delay``) when a request finds no
  ready pod, as the loop does when the activator pokes it;
- the activator's throttler: one :class:`~allinone.activator.throttler.Throttler` per
  function holds the waiting requests (tickets: the request's index), admits them to
  pods (:func:`~allinone.activator.balancer.pick`, ``containerConcurrency`` and the
  per-pod connection bound, draining pods skipped), bounds the queue and says whom to
  wake when a slot frees or a pod turns Ready, exactly as it does for the activator;
- replica planning: :func:`allinone.controller.planning.plan` on every change of
  ``spec.replicas`` and every pod event, as the controller's ``sync`` does.

What is simulated, from the :class:`~allinone.simulator.model.RuntimeModel`: a pod's
container start is ``pod_start`` of work (``unpause`` when a parked pod is resumed,
which is not shared). The kubelet's standby container, wanted by
:func:`~allinone.kubelet.parking.wants_standby` once the function reached zero, is
ready ``create`` later when created (a pod that starts it has ``pod_start - create``
of work) or ``pod_start`` later when frozen (a pod resumes it in ``unpause``, not
shared, counted as resumed; the standby's own start is not counted among the node's
starts: it happens at zero, while the node is quiet). A pod made while the standby is
still being made takes it over, as the kubelet does: it waits for the rest of the
create, or for the frozen standby to turn healthy. The node's container starts share
it: up to ``parallel_starts`` run at full speed, and with n > ``parallel_starts`` in
progress each advances at ``parallel_starts / n`` (processor sharing: a start is mostly
the shim's CPU-bound interpreter start, and the cores are shared; 4 starts at once with
2 at full speed all finish after 2 x ``pod_start``, which is what ``calibrate``
measures). A request's service time is its trace duration plus ``activator_overhead``.

What the driver does in the activator's place is its proxy's part, the I/O around the
throttler's answers (:meth:`Activator._acquire`): a request asks the throttler for a
pod; with none free it pokes the autoscaler when no pod is ready, and waits as a ticket
(refused: 503) until woken, when it asks again, or until ``timeoutSeconds`` after its
arrival (504). Cold start = no ready pod when the
request arrived (the activator's ``cold_starts`` metric). Paused-pod retention follows
:mod:`allinone.kubelet.parking`, the rules the controller and the kubelet apply: which
removed pod is parked (:func:`~allinone.kubelet.parking.worth_parking`), which one a new
pod resumes (:func:`~allinone.kubelet.parking.take`), and when one expires
(:func:`~allinone.kubelet.parking.expired`, checked every ``PARKED_CHECK_INTERVAL`` on
the kubelet's 1 s grid while anything is parked).

Not modelled: pod failures (so no crash backoff) and the pod memory budget. Still the
driver's own, mirroring the components: the order of
the controller's syncs (after a change of ``spec.replicas`` and after every pod
event), the loop's one timer as a tick grid per function, and the proxy's acquire
loop (ask, poke, wait, 504) around the real throttler.

Invariants:

- Events at the same virtual time run in a fixed order (heap events before trace
  arrivals, then by insertion), and all randomness comes from one seeded ``Random``:
  a run is a pure function of (trace, specs, model, seed).
- Sleep is the one shortcut of the driver, and it is exact: a function with nothing in
  flight or held whose last decision stands beyond the next tick
  (:attr:`~allinone.autoscaler.kpa.Decision.stands_until`) is not visited until its
  first grid tick at or after that time, or until something happens to it (a request
  arrives, its ready count changes), whichever is first. Every tick it sleeps through
  the scaler would skip anyway (its sample is idle, the rest unchanged), and the
  scaler's one sample over the whole gap gives the same window values as many; so on
  waking the driver runs the last grid tick it slept through (catch-up: the sample
  ends there, as the skipped ones would have), then ticks on. A function with no pod
  and desired 0 sleeps until its next request. ``exact_ticks=True`` turns the
  shortcut and the scaler's skipping off (a decide at every tick); unit tests check
  both give the same results.
"""

from __future__ import annotations

import heapq
import math
import random
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from allinone import objects
from allinone.activator.balancer import Endpoint
from allinone.activator.stats import ConcurrencyTracker
from allinone.activator.throttler import QUEUE_LIMIT, Throttler
from allinone.autoscaler.loop import FunctionScaler
from allinone.config import Settings
from allinone.controller.planning import PENDING, RUNNING, TERMINATING, PodView, plan
from allinone.kubelet import parking
from allinone.kubelet.parking import PARKED_CHECK_INTERVAL, STANDBY_MODES
from allinone.simulator.model import RuntimeModel
from allinone.simulator.trace import Trace

TICK_SECONDS = 2.0  # the autoscaler loop's default tick (allinone serve --tick)
TEMPLATE = "sim"  # one template per function: the simulator does no rollouts

# Event kinds, in the heap as (time, seq, kind, function, payload).
_COMPLETE, _READY, _TICK, _POKE, _SYNC, _TIMEOUT, _SWEEP, _STARTED = range(8)
_DONE = 1e-9  # s of start work left that counts as finished (float rounding)

# Outcomes recorded per request.
OK, REJECTED, TIMED_OUT = 200, 503, 504


@dataclass(frozen=True)
class SimSpec:
    """A function's spec as the simulator uses it, validated like the API does."""

    scaling: Mapping[str, Any]
    timeout: float
    container_concurrency: int
    keep_paused: float = 0.0  # the server's --keep-paused, per run
    standby: str = Settings.standby  # the server's --standby: frozen, created or off

    @classmethod
    def from_user(cls, user: Mapping[str, Any] | None = None) -> SimSpec:
        """``user``: a Function spec (``scaling``, ``timeoutSeconds``) plus, optionally,
        ``keepPausedSeconds`` (the server option ``--keep-paused``) and ``standby``
        (the server option ``--standby``: frozen, created or off)."""
        data = dict(user or {})
        keep = data.pop("keepPausedSeconds", 0.0)
        standby = data.pop("standby", Settings.standby)
        if standby not in STANDBY_MODES:
            raise objects.ValidationError(
                f"standby must be one of {', '.join(STANDBY_MODES)} (the server's "
                f"--standby), got {standby!r}")
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or keep < 0 \
                or not math.isfinite(keep):
            raise objects.ValidationError(
                f"keepPausedSeconds must be a number of seconds >= 0, got {keep!r}")
        spec = objects.normalize_spec(data)
        scaling = objects.scaling(spec)
        return cls(scaling=scaling, timeout=float(spec.get("timeoutSeconds", 60)),
                   container_concurrency=int(scaling.get("containerConcurrency", 0)),
                   keep_paused=float(keep), standby=standby)


@dataclass
class _Pod:
    name: str
    created: float
    phase: str = PENDING
    ready: bool = False
    endpoint: Endpoint | None = None
    park: bool = False  # the controller's choice when it removed the pod

    def view(self) -> PodView:
        return PodView(self.name, TEMPLATE, self.phase, self.ready, self.created)


@dataclass(frozen=True)
class _Parked:
    """A parked pod, as :mod:`allinone.kubelet.parking` sees one."""

    template_hash: str
    since: float


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
        "asleep", "last_tick", "name", "panic_from", "parked", "pod_count", "pod_since",
        "pods", "poked", "ready", "replicas", "res", "scaler", "seq", "spec", "standby_at",
        "throttler", "tick_version", "tracker", "waiting", "was_panic",
    )

    def __init__(self, name: str, spec: SimSpec, start: float, queue_limit: int,
                 rng: random.Random) -> None:
        self.name = name
        self.spec = spec
        self.tracker = ConcurrencyTracker()
        self.scaler = FunctionScaler()
        self.throttler: Throttler[int] = Throttler(queue_limit, rng)
        self.waiting: dict[int, float] = {}  # ticket (request index) -> its duration
        # The throttler's ready_count(), kept in step (it is read on every arrival).
        self.ready = 0
        self.pods: dict[str, _Pod] = {}
        self.pod_count = 0  # pods that exist (any phase): the cost
        self.pod_since = start
        self.parked: list[_Parked] = []  # most recent last, as the kubelet's stack
        # When its standby container is (or will be) ready, None without one. Deployed
        # at zero: made while it was built.
        self.standby_at: float | None = start if spec.standby != "off" else None
        self.replicas = 0
        self.poked = False
        self.asleep = False
        self.tick_version = 0  # tells the one live _TICK event (a wake makes a new one)
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
        # Container starts in progress: [work left (s at full speed), function, pod],
        # advanced to _start_clock; _start_version tells the one live _STARTED event.
        self._starting: list[list[Any]] = []
        self._start_clock = 0.0
        self._start_version = 0
        self._parking: dict[str, _Fn] = {}  # functions with parked pods
        self.fns: list[_Fn] = []
        for name in trace.functions:
            spec = specs if isinstance(specs, SimSpec) else specs.get(name) or specs.get("*")
            if spec is None:
                raise ValueError(f"no spec for function {name!r} and no default '*' spec")
            self.fns.append(_Fn(name, spec, 0.0, queue_limit, self.rng))

    # -- the heap ------------------------------------------------------------------

    def _push(self, t: float, kind: int, f: _Fn | None, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, f, payload))

    # -- run -------------------------------------------------------------------------

    def run(self) -> list[FunctionResult]:
        """Run to the end of the trace plus ``drain_after`` seconds of quiet (at least
        until every request is answered), and return per-function results."""
        for f in self.fns:
            self._push(0.0, _TICK, f, 0)  # every function exists from t = 0 (created_at)
        arrival, fnidx, duration = self.trace.arrival, self.trace.fn, self.trace.duration
        fns, heap, pop = self.fns, self._heap, heapq.heappop
        n, i = len(arrival), 0
        end = (arrival[-1] if n else 0.0) + self.drain_after
        events = 0
        handlers = (self._complete, self._pod_ready, self._tick, self._poke, self._sync,
                    self._timeout, self._sweep, self._started)
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
        if f.asleep:
            self._wake(f, t)
        f.tracker.start(t)
        res = f.res
        res.arrival.append(t)
        res.cold.append(1 if f.ready == 0 else 0)
        idx = len(res.arrival) - 1
        res.latency.append(0.0)
        res.queued.append(0.0)
        res.status.append(OK)
        if self._seek(f, idx, dur, t):
            self._push(t + f.spec.timeout, _TIMEOUT, f, idx)

    def _seek(self, f: _Fn, idx: int, dur: float, t: float) -> bool:
        """One pass of the activator's acquire loop for request ``idx``: a pod from the
        throttler, or a place in its queue (True: now waiting), or 503."""
        ep = f.throttler.acquire(f.spec.container_concurrency)
        if ep is not None:
            f.res.queued[idx] = t - f.res.arrival[idx]
            self._push(t + self.model.overhead + dur, _COMPLETE, f, (ep, idx))
            return False
        if f.ready == 0:
            self._poke_autoscaler(f, t)
        if not f.throttler.enqueue(idx, f.res.arrival[idx] + f.spec.timeout):
            self._end(f, idx, t, REJECTED)
            return False
        f.waiting[idx] = dur
        return True

    def _end(self, f: _Fn, idx: int, t: float, status: int) -> None:
        """A request answered without reaching a pod (503, 504)."""
        f.tracker.finish(t)
        res = f.res
        res.status[idx] = status
        res.latency[idx] = res.queued[idx] = t - res.arrival[idx]

    def _woken(self, f: _Fn, tickets: list[int], t: float) -> None:
        """Tickets the throttler woke: each asks again, in the order it gave them."""
        for idx in tickets:
            self._seek(f, idx, f.waiting.pop(idx), t)

    def _complete(self, f: _Fn, t: float, payload: tuple[Endpoint, int]) -> None:
        ep, idx = payload
        f.tracker.finish(t)
        f.res.latency[idx] = t - f.res.arrival[idx]
        drained, wake = f.throttler.release(ep)
        if drained:
            self._drained(f, ep, t)
        self._woken(f, wake, t)

    def _timeout(self, f: _Fn, t: float, idx: int) -> None:
        dur = f.waiting.pop(idx, None)
        if dur is None:
            return  # it reached a pod (or was refused) before its deadline
        f.throttler.dequeue(idx)
        # The activator looks for a pod once more before its 504; here that look would
        # always find none: every freed slot and every new pod wakes the queue at once
        # (synchronously), so a request still waiting has no free slot to find.
        self._end(f, idx, t, TIMED_OUT)

    # -- the autoscaler loop ------------------------------------------------------------

    def _poke_autoscaler(self, f: _Fn, t: float) -> None:
        if not f.poked:
            f.poked = True
            self._push(t + self.model.poke_delay, _POKE, f)

    def _poke(self, f: _Fn, t: float, _: Any) -> None:
        f.poked = False
        self._decide(f, t, force=True)

    def _tick(self, f: _Fn, t: float, version: int) -> None:
        if version != f.tick_version:
            return  # a wake scheduled the function's ticks anew
        self.stats.ticks += 1
        self._decide(f, t)
        f.last_tick = t
        nxt = t + self.tick
        if not self.exact_ticks and not f.waiting and f.tracker.in_flight == 0 \
                and not f.poked:
            d = f.scaler.decision
            until = d.stands_until if d is not None else -math.inf
            if until > nxt:
                # Asleep: every tick before `until` would be skipped by the scaler's
                # rule unless something happens (see the module docstring).
                f.asleep = True
                if until < math.inf:
                    self._push(t + self.tick * math.ceil((until - t) / self.tick), _TICK, f,
                               f.tick_version)
                return
        self._push(nxt, _TICK, f, f.tick_version)

    def _wake(self, f: _Fn, t: float) -> None:
        """Something happened to an asleep function: run the last grid tick it slept
        through (its sample ends there), then tick on from it."""
        f.asleep = False
        f.tick_version += 1
        last = math.floor(t / self.tick) * self.tick
        if last > f.last_tick:
            self.stats.catch_ups += 1
            self._decide(f, last)
            f.last_tick = last
        self._push(f.last_tick + self.tick, _TICK, f, f.tick_version)

    def _decide(self, f: _Fn, t: float, force: bool = False) -> None:
        decision = f.scaler.step(f.spec.scaling, f.tracker.take(t), f.ready, t,
                                 force=force or self.exact_ticks)
        if decision is None:
            return  # the last decision stands (the autoscaler loop's own rule)
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
        parked, _ = parking.take(f.parked, TEMPLATE)  # one template: nothing stale
        if parked is not None:
            f.res.paused_seconds += t - parked.since
            f.res.pods_resumed += 1
            self._push(t + self.model.unpause, _READY, f, pod)
            return
        work = self.model.pod_start
        if f.standby_at is not None:
            # The kubelet hands the standby to the new pod, or the one still being made.
            ready, f.standby_at = f.standby_at, None
            if f.spec.standby == "frozen":
                f.res.pods_resumed += 1
                # Frozen: resumed; still being made: handed over healthy, unpaused.
                self._push(t + self.model.unpause if ready <= t else ready, _READY, f, pod)
                return
            work = max(0.0, work - self.model.create) + max(0.0, ready - t)
        self._advance_starts(t)
        self._starting.append([work, f, pod])
        f.res.pods_started += 1
        self._schedule_start(t)

    def _start_rate(self) -> float:
        """Full speeds each start in progress gets (processor sharing)."""
        return min(1.0, self.model.parallel_starts / len(self._starting))

    def _advance_starts(self, t: float) -> None:
        if self._starting:
            done = (t - self._start_clock) * self._start_rate()
            for job in self._starting:
                job[0] -= done
        self._start_clock = t

    def _schedule_start(self, t: float) -> None:
        """One event for the next start to finish at the current sharing; any change
        of the set in progress schedules anew (the older event is then stale)."""
        self._start_version += 1
        if self._starting:
            left = min(job[0] for job in self._starting)
            self._push(t + max(0.0, left) / self._start_rate(), _STARTED, None,
                       self._start_version)

    def _started(self, _: Any, t: float, version: int) -> None:
        if version != self._start_version:
            return  # the set of starts changed since: a newer event stands
        self._advance_starts(t)
        done = [job for job in self._starting if job[0] <= _DONE]
        self._starting = [job for job in self._starting if job[0] > _DONE]
        self._schedule_start(t)
        for _, f, pod in done:
            self._pod_ready(f, t, pod)

    def _pod_ready(self, f: _Fn, t: float, pod: _Pod) -> None:
        if pod.phase != PENDING or f.pods.get(pod.name) is not pod:
            return  # removed before it became ready
        pod.phase, pod.ready = RUNNING, True
        ep = Endpoint(pod=pod.name, address="simulated")  # nothing is ever sent to it
        pod.endpoint = ep
        _, wake = f.throttler.add(ep)
        if f.asleep:
            self._wake(f, t)  # the ready count changes: the decision may too
        f.ready += 1
        f.res.ready_series.append((t, f.ready))
        self._woken(f, wake, t)
        self._sync(f, t, None)  # the controller syncs after every pod event

    def _terminate(self, f: _Fn, pod: _Pod, t: float) -> None:
        # The controller's choice, made as it removes the pod (the kubelet acts on it
        # once the pod is drained).
        pod.park = parking.worth_parking(f.spec.keep_paused, TEMPLATE, TEMPLATE, pod.ready,
                                         pod.endpoint is not None)
        pod.phase, pod.ready = TERMINATING, False
        ep = pod.endpoint
        if ep is None:
            self._remove(f, pod, t)  # never ready: its start is abandoned
            return
        f.throttler.drain(pod.name)
        if f.asleep:
            self._wake(f, t)
        f.ready -= 1
        f.res.ready_series.append((t, f.ready))
        if ep.in_flight == 0:
            self._drained(f, ep, t)

    def _drained(self, f: _Fn, ep: Endpoint, t: float) -> None:
        f.throttler.remove(ep.pod)
        self._remove(f, f.pods[ep.pod], t)

    def _remove(self, f: _Fn, pod: _Pod, t: float) -> None:
        self._count_pods(f, t)
        del f.pods[pod.name]
        f.pod_count -= 1
        f.res.pods_series.append((t, f.pod_count))
        if pod.park:
            f.parked.append(_Parked(TEMPLATE, t))
            if not self._parking:  # no expiry check on the heap yet
                self._push(self._next_sweep(t), _SWEEP, None)
            self._parking[f.name] = f
        self._want_standby(f, t)
        self._push(t, _SYNC, f)  # the controller syncs after every pod event

    def _want_standby(self, f: _Fn, t: float) -> None:
        """The controller asks for a standby at zero; the kubelet creates it (ready after
        ``create``) or, frozen, also starts it (after ``pod_start``) and pauses it."""
        if f.standby_at is None and parking.wants_standby(
                f.spec.standby != "off", f.replicas, f.pod_count, TEMPLATE, f.parked):
            f.standby_at = t + (self.model.pod_start if f.spec.standby == "frozen"
                                else self.model.create)

    @staticmethod
    def _next_sweep(t: float) -> float:
        """The kubelet's next expiry check after ``t``, on its 1 s grid."""
        return (math.floor(t / PARKED_CHECK_INTERVAL) + 1) * PARKED_CHECK_INTERVAL

    def _sweep(self, _: Any, t: float, __: Any) -> None:
        """The kubelet's expiry check: parked pods kept long enough are removed."""
        for name, f in list(self._parking.items()):
            keep = []
            for p in f.parked:
                if parking.expired(p, t, f.spec.keep_paused):
                    f.res.paused_seconds += t - p.since
                else:
                    keep.append(p)
            f.parked = keep
            if not keep:
                del self._parking[name]
                self._want_standby(f, t)
        if self._parking:
            self._push(self._next_sweep(t), _SWEEP, None)

    def _count_pods(self, f: _Fn, t: float) -> None:
        f.res.pod_seconds += f.pod_count * (t - f.pod_since)
        f.pod_since = t
