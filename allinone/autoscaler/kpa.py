"""The Knative Pod Autoscaler (KPA) decision, as pure functions.

Two layers, both pure (no clock, no I/O, inputs never mutated; time is passed in):

- :func:`scale` is Knative Serving's ``pkg/autoscaler/scaling/autoscaler.go``
  (``autoscaler.Scale``) step for step, in plain float64 arithmetic like Go's: given the
  observed stable and panic values of the metric and the ready pods, it returns the
  desired count and the excess burst capacity, and keeps panic mode and the scale-down
  delay window. Knative's own ``autoscaler_test.go`` runs against it as data
  (tests/unit/test_kpa_knative.py).
- :func:`decide` is what the loop calls: it turns the activator's samples into the
  stable and panic window values, calls :func:`scale`, then applies the KPA
  reconciler's part (``pkg/reconciler/autoscaling/kpa``): initial scale, min/max bounds,
  and scale to zero with the Active/Inactive condition, the grace period and the last
  pod retention.

Worked numbers with allinone's defaults (target 10, utilization 70 %, stable window
60 s, panic window 10 % = 6 s, panic threshold 200 %, max up rate 1000, max down rate 2,
grace 30 s):

- **Target per pod** (Knative's ``TargetValue``) = target x utilization = 10 x 0.7 = 7;
  with ``containerConcurrency`` set and the concurrency metric, the target is first
  capped by it (Knative's ``ResolveMetricTarget``): cc 2 -> 2 x 0.7 = 1.4.
- **Stable**: 40 in flight on average over 60 s -> ceil(40 / 7) = 6.
- **Rate limits** relative to ready pods (at least 1): 4 ready -> at most
  ceil(1000 x 4) = 4000, at least floor(4 / 2) = 2. Rate 1.1 on 50 ready:
  ceil(1.1 x 50) = ceil(55.00000000000001) = 56, exactly as Go computes it.
- **Activation scale** 3: any non-zero count (stable or panic) below 3 becomes 3.
- **Panic**: ceil(panic value / 7) / ready >= 200 % starts panic and every tick over it
  moves ``panic_time`` to now; in panic the count is the largest of the stable count, the
  panic count and every count since panic began (never down). Panic ends on the first
  tick not over the threshold after ``panic_time + stable window``; then the count
  follows the stable window again.
- **Scale-down delay** 60 s: the count is the maximum of the counts decided in the
  last 60 s (2 s buckets, Knative's ``max.TimeWindow``).
- **Scale to zero**: desired 0 comes only from the stable value reaching 0 and the
  scale-down rate allowing it (4 ready -> 2 -> 1 -> 0). A function that has been Active
  for less than a stable window keeps 1 pod; then it becomes Inactive and its pods are
  kept for max(grace, scaleToZeroPodRetentionSeconds) more; then 0. With the defaults
  the last pod goes about 60 s (window empties) + 30 s (grace) after the last request.
- **Request at zero**: with no ready pod, the requests the activator holds are the
  freshest value there is (Knative's activator "pokes" the autoscaler with them): both
  windows read at least the held count. 50 held -> ceil(50 / 7) = 8, 8 / 1 >= 200 % ->
  panic, 8 pods.
- **Bounds** last: [minScale, maxScale]; ``initialScale`` is a floor until that many
  pods have been Ready once (Knative's "scale target initialized").
- **No data** (no sample ever, nothing held): ``desired`` None, "leave replicas alone"
  (Knative's invalid scale result), unless minScale or a pending initialScale asks.

Windows. A sample ``(t, concurrency[, rps])`` covers the interval from the previous
sample to ``t`` (the first one covers 1 s, Knative's bucket width). A window value is the
time-weighted mean over the covered part of ``(now - window, now]``: with one sample a
second this is Knative's per-second bucket average, including its partial-window rule.
As Knative's buckets keep a running ``windowTotal``, the state keeps the stable window's
totals (``window_sums``) and updates them by the intervals added and dropped, so a tick
costs the same however long the window is. The totals are exact (integers in units of
2^-1100, which every float's product fits), so adding and later dropping an interval
leaves no residue: a day of traffic followed by a window of zeros reads exactly 0, as
the scale-to-zero rule needs, where a float running sum would keep a rounding crumb.
The panic window (a tenth of it) is summed over its few newest intervals.

Where this differs from Knative, and why:

- The activator is always in the request path here (Knative's target burst capacity
  -1); ``targetBurstCapacity`` changes no routing, its excess burst capacity is computed
  and reported only.
- Knative may drop the last pod as soon as it is Inactive when the activator has already
  been in the path for the grace period; here the last pod is always kept the grace
  period after the function goes Inactive (the conservative branch of Knative's check).
- A function that never became Ready goes to 0 once nothing wants it, instead of being
  held "Activating" for Knative's progress deadline (600 s + 30 s); the controller
  retries its pods meanwhile.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from allinone.objects import DEFAULT_SCALING

# The time covered by the first sample ever seen: Knative's bucket granularity (1 s).
FIRST_SAMPLE_SECONDS = 1.0
# Knative's autoscaler tick and the bucket width of its scale-down delay window.
TICK_SECONDS = 2
# Knative's TargetMin: the smallest target per pod it computes with.
TARGET_MIN = 0.01

CONCURRENCY, RPS = "concurrency", "rps"


@dataclass(frozen=True)
class DeciderSpec:
    """Knative's ``DeciderSpec``: the part of the scaling spec :func:`scale` reads.

    ``target_value`` is per pod after utilization; ``total_value`` before it (the pod's
    full capacity, used by the excess burst capacity). ``panic_threshold`` is a fraction
    (200 % -> 2.0). ``scale_down_delay``/``stable_window`` are seconds.
    """

    target_value: float
    total_value: float
    target_burst_capacity: float
    panic_threshold: float
    max_scale_up_rate: float
    max_scale_down_rate: float
    stable_window: float
    scale_down_delay: float = 0.0
    activation_scale: int = 0
    reachable: bool = True


@dataclass(frozen=True)
class ScaleResult:
    """Knative's ``ScaleResult``; ``valid`` False means "no data, change nothing"."""

    desired: int
    excess_burst_capacity: int
    valid: bool


@dataclass(frozen=True)
class Observation:
    """What the activator and the pod lister saw since the previous decide.

    ``samples`` are ``(timestamp, average concurrency[, requests per second])`` over
    the interval ending there, in any order; requests held at zero count.
    """

    ready_pods: int
    samples: tuple[tuple[float, ...], ...] = ()
    in_flight: int = 0
    last_request_at: float | None = None


@dataclass(frozen=True)
class KPAState:
    """Everything the KPA remembers between decisions (JSON-friendly).

    ``samples``: ``(start, end, concurrency, rps)`` intervals that still overlap the
    stable window, contiguous and in time order. ``window_sums`` are their exact totals
    of (length, length x concurrency, length x rps) as integers in units of 2^-1100
    (see :func:`_exact`); None means "not yet computed" (a state built by hand), and
    :func:`decide` computes them from ``samples`` once.
    ``panic_time``/``max_panic_pods``/``delay_window`` are Knative's
    ``panicTime``/``maxPanicPods``/``delayWindow`` (``(2 s bucket, max count)``,
    values descending). ``active_since``/``inactive_since`` are the PodAutoscaler's
    Active condition: Active since, Inactive since; both None while activating.
    """

    created_at: float
    samples: tuple[tuple[float, float, float, float], ...] = ()
    last_sample_at: float | None = None
    window_sums: tuple[int, int, int] | None = None
    panic_time: float | None = None
    max_panic_pods: int = 0
    delay_window: tuple[tuple[int, int], ...] = ()
    last_desired: int | None = None
    initial_scale_reached: bool = False
    active_since: float | None = None
    inactive_since: float | None = None


@dataclass(frozen=True)
class Decision:
    """One decision. ``desired`` None means "no data yet: leave replicas alone".

    ``stable_concurrency``/``panic_concurrency`` are the window values of ``metric``
    (requests per second when it is ``rps``).
    """

    desired: int | None
    stable_concurrency: float
    panic_concurrency: float
    panic: bool
    reason: str
    excess_burst_capacity: int = 0
    metric: str = CONCURRENCY
    # Until when this count stands if nothing happens (see :func:`stands_until`);
    # -inf: no such promise, decide at every tick.
    stands_until: float = -math.inf


def _evolve(state: KPAState, **changes: Any) -> KPAState:
    """``dataclasses.replace`` for :class:`KPAState`, without its per-call introspection
    of the fields (it was a third of a decide): a copy of the instance dictionary with
    ``changes`` applied. KPAState has no ``__post_init__`` and no computed fields, so the
    result is the one ``replace`` builds."""
    new = object.__new__(KPAState)
    d = new.__dict__
    d.update(state.__dict__)
    d.update(changes)
    return new


def decider_spec(scaling: Mapping[str, Any]) -> DeciderSpec:
    """Knative's ``MakeDecider`` + ``ResolveMetricTarget`` for a Function's scaling."""
    return _decider_spec({**DEFAULT_SCALING, **scaling})


def _decider_spec(s: Mapping[str, Any]) -> DeciderSpec:
    """:func:`decider_spec` of a scaling that already has every field."""
    total = float(s["target"])
    cc = int(s["containerConcurrency"])
    if s["metric"] == CONCURRENCY and cc != 0:
        # Never aim above what a pod accepts.
        total = min(total, float(cc))
    utilization = float(s["targetUtilizationPercentage"]) / 100.0
    activation = int(s["activationScale"])
    return DeciderSpec(
        target_value=max(TARGET_MIN, total * utilization),
        total_value=total,
        target_burst_capacity=float(s["targetBurstCapacity"]),
        panic_threshold=float(s["panicThresholdPercentage"]) / 100.0,
        max_scale_up_rate=float(s["maxScaleUpRate"]),
        max_scale_down_rate=float(s["maxScaleDownRate"]),
        stable_window=float(s["stableWindowSeconds"]),
        scale_down_delay=float(s["scaleDownDelaySeconds"]),
        activation_scale=activation if activation > 1 else 0,
    )


def initial_state(scaling: Mapping[str, Any], now: float, *, ready_pods: int = 0) -> KPAState:
    """The state of a freshly created (or restarted) autoscaler.

    As in Knative's ``newAutoscaler``: with more than one pod ready it starts in panic
    mode (a restart loses the metric history, and a partial window must not scale a
    loaded function down); ``max_panic_pods`` is the ready count either way. Ready pods
    make the function Active from now.
    """
    p = {**DEFAULT_SCALING, **scaling}
    return replace(
        new_scaler_state(now, ready_pods),
        initial_scale_reached=ready_pods >= int(p["initialScale"]),
        active_since=now if ready_pods > 0 else None,
    )


def new_scaler_state(now: float, ready_pods: int) -> KPAState:
    """Knative's ``newAutoscaler``: in panic from ``now`` when more than 1 pod is ready."""
    return KPAState(created_at=now, panic_time=now if ready_pods > 1 else None,
                    max_panic_pods=ready_pods)


def _delayed(window: tuple[tuple[int, int], ...], now: float, delay: float,
             desired: int) -> tuple[int, tuple[tuple[int, int], ...]]:
    """Record ``desired`` in the max-over-time window; the window's maximum.

    Knative's ``max.TimeWindow``: ceil(delay / 2 s) buckets indexed by whole seconds // 2;
    a count is forgotten once its bucket is that many buckets old. Only the descending
    maxima are kept, as there: a smaller, older count can never be the maximum again.
    """
    buckets = math.ceil(delay / TICK_SECONDS)
    index = math.floor(now) // TICK_SECONDS
    # pragma below: an older count equal to desired is dropped by the filter after it.
    kept = [(i, v) for i, v in window if index - i < buckets and v > desired]  # pragma: no mutate
    same = [v for i, v in window if i == index]
    value = max([desired, *same])
    kept = [(i, v) for i, v in kept if i != index and v > value]
    kept.append((index, value))
    return kept[0][1], tuple(kept)


def scale(spec: DeciderSpec, state: KPAState, ready_pods: int, stable: float | None,
          panic: float | None, now: float) -> tuple[ScaleResult, KPAState]:
    """Knative's ``autoscaler.Scale``: one step, in Go's float64 arithmetic.

    ``stable``/``panic`` are the observed window values of the metric (None: no data,
    Knative's ``ErrNoData`` -> an invalid result and no state change).
    """
    if stable is None or panic is None:
        return ScaleResult(0, 0, False), state
    # Rate limits count at least one pod, so scaling from zero is never stuck.
    ready = max(1.0, float(ready_pods))
    max_up = math.ceil(spec.max_scale_up_rate * ready)
    max_down = math.floor(ready / spec.max_scale_down_rate) if spec.reachable else 0

    dspc = math.ceil(stable / spec.target_value)
    dppc = math.ceil(panic / spec.target_value)
    stable_pods = int(min(max(dspc, max_down), max_up))
    panic_pods = int(min(max(dppc, max_down), max_up))
    # No mutation of the comparisons: activation 1 (or raising a count to itself) changes
    # nothing, since a non-zero count is at least 1 pod.
    if spec.activation_scale > 1:  # pragma: no mutate
        if dspc > 0 and spec.activation_scale > stable_pods:  # pragma: no mutate
            stable_pods = spec.activation_scale
        if dppc > 0 and spec.activation_scale > panic_pods:  # pragma: no mutate
            panic_pods = spec.activation_scale

    over = dppc / ready >= spec.panic_threshold
    panic_time, max_panic = state.panic_time, state.max_panic_pods
    if over:
        panic_time = now  # begin, or extend, panic
    elif panic_time is not None and panic_time + spec.stable_window < now:
        # The surge has made its way into the stable window.
        panic_time, max_panic = None, 0

    desired = stable_pods
    if panic_time is not None:
        desired = max(desired, panic_pods)
        max_panic = max(max_panic, desired)  # panic only ever scales up
        desired = max_panic

    window = state.delay_window
    if spec.reachable and spec.scale_down_delay > 0:
        desired, window = _delayed(window, now, spec.scale_down_delay, desired)

    # Excess burst capacity: spare capacity beyond the panic value and the burst to
    # absorb; negative means the burst does not fit (Knative then keeps the activator
    # in the path). -1 means "always in the path", 0 "never".
    if spec.target_burst_capacity == 0:
        ebc = 0.0
    elif spec.target_burst_capacity > 0:  # pragma: no mutate (0 is the branch above)
        total = float(ready_pods) * spec.total_value
        ebc = math.floor(total - spec.target_burst_capacity - panic)
    else:
        ebc = -1.0
    return (
        ScaleResult(desired, int(ebc), True),
        _evolve(state, panic_time=panic_time, max_panic_pods=max_panic, delay_window=window),
    )


# Exact window totals: every finite float is n / 2^k with k <= 1074, so n x 2^(1100 - k)
# is an integer and sums of them are exact (Python integers do not overflow).
_EXACT_BITS = 1100
_EXACT_ONE = 1 << _EXACT_BITS


def _exact(x: float) -> int:
    """``x`` as an integer count of 2^-1100 units, exactly."""
    n, d = x.as_integer_ratio()
    return n << (_EXACT_BITS + 1 - d.bit_length())


def _sums(intervals: Iterable[tuple[float, float, float, float]]) -> tuple[int, int, int]:
    """Exact totals (length, length x concurrency, length x rps) of ``intervals``."""
    cov = area = rps = 0
    for start, end, c, r in intervals:
        length = end - start
        cov += _exact(length)
        area += _exact(length * c)
        rps += _exact(length * r)
    return cov, area, rps


def _record(
    state: KPAState, new: Iterable[tuple[float, ...]], now: float, keep: float
) -> tuple[tuple[tuple[float, float, float, float], ...], float | None, tuple[int, int, int]]:
    """Append new samples as intervals and drop those wholly older than ``keep`` s;
    the exact totals of what is kept, updated by what was added and dropped."""
    last = state.last_sample_at
    added = []
    for sample in sorted(new):
        at, concurrency = sample[0], sample[1]
        rps = sample[2] if len(sample) > 2 else 0.0
        if last is not None and at <= last:
            continue  # covers no time; the tracker never produces it
        start = last if last is not None else at - FIRST_SAMPLE_SECONDS
        added.append((start, at, max(0.0, concurrency), max(0.0, rps)))
        last = at
    sums = state.window_sums if state.window_sums is not None else _sums(state.samples)
    intervals = state.samples + tuple(added) if added else state.samples
    # Ends only grow (an interval starts where the previous one ended): the ones to
    # drop, those ending at or before the horizon, are a prefix (one or two a tick).
    horizon, gone, n = now - keep, 0, len(intervals)
    while gone < n and intervals[gone][1] <= horizon:
        gone += 1
    if added or gone:
        cov, area, rate = sums
        for start, end, c, r in added:
            length = end - start
            cov += _exact(length)
            area += _exact(length * c)
            rate += _exact(length * r)
        for k in range(gone):
            start, end, c, r = intervals[k]
            length = end - start
            cov -= _exact(length)
            area -= _exact(length * c)
            rate -= _exact(length * r)
        sums = (cov, area, rate)
        intervals = intervals[gone:]
    return intervals, last, sums


def _stable_average(intervals: tuple[tuple[float, float, float, float], ...],
                    sums: tuple[int, int, int], now: float, window: float,
                    column: int) -> float:
    """:func:`_window_average` over all of ``intervals`` (which all end inside the
    window), from their exact totals: only the intervals crossing an edge of
    ``(now - window, now]`` (the oldest one, and any ending after ``now``) are looked at.
    """
    lo = now - window
    cov, area = sums[0], sums[column - 1]
    n = len(intervals)
    edges = []
    i = 0
    while i < n and intervals[i][0] < lo:
        edges.append(intervals[i])
        i += 1
    j = n - 1
    while j >= i and intervals[j][1] > now:
        edges.append(intervals[j])
        j -= 1
    for iv in edges:
        # Swap the whole interval's share for the part inside the window.
        length = iv[1] - iv[0]
        cov -= _exact(length)
        area -= _exact(length * iv[column])
        overlap = min(iv[1], now) - max(iv[0], lo)
        if overlap > 0:
            cov += _exact(overlap)
            area += _exact(overlap * iv[column])
    return area / cov if cov > 0 else 0.0  # int / int: correctly rounded


def _window_average(intervals: Sequence[tuple[float, float, float, float]], now: float,
                    window: float, column: int) -> float:
    """Time-weighted mean of ``column`` over the covered part of ``(now - window, now]``.

    E.g. window 6 s, 20 for 4 s then 60 for 2 s: (4 x 20 + 2 x 60) / 6 = 33.3. Only 2 s
    covered (a fresh function): the mean of those 2 s, not divided by 6. ``intervals``
    in time order: the scan starts at the first one ending after the window's start,
    found from the newest end (a short window holds a few of them).
    """
    lo = now - window
    covered = area = 0.0
    first = len(intervals)
    while first > 0 and intervals[first - 1][1] > lo:
        first -= 1
    for k in range(first, len(intervals)):
        iv = intervals[k]
        overlap = min(iv[1], now) - max(iv[0], lo)
        if overlap > 0:
            covered += overlap
            area += overlap * iv[column]
    return area / covered if covered > 0 else 0.0


def stands_until(spec: DeciderSpec, intervals: Sequence[tuple[float, float, float, float]],
                 obs: Observation, stable: float, column: int, in_panic: bool,
                 scaled: int, deadline: float) -> float:
    """Until when a decision stands if nothing happens: every :func:`decide` before the
    returned time, given only zero samples (no request started, none in flight) and the
    same ready count and scaling, returns the same desired count and panic flag. The
    autoscaler loop skips those decides (:class:`allinone.autoscaler.loop.FunctionScaler`),
    and so does the simulator through it. -inf when there is no such promise.

    Why it holds: with nothing in flight and only zero samples to come, both window
    values can only fall (the covered time grows, the area only leaves the window), so
    panic cannot begin (its count over the ready pods only falls) and, when the stable
    count is at most 1, it stays 1 until the newest non-zero interval has left the
    stable window, then 0. The rate limits depend on the ready count alone. What is left
    is the scale-to-zero branch's own deadline (``deadline``: the end of "holding 1 pod"
    or of the grace period). No promise in panic (it ends by the clock), with requests
    in flight, with a stable count above 1 (it falls step by step), or while a
    scale-down delay holds a count above 0 (``scaled``, :func:`scale`'s count: its
    window forgets counts by the clock; a window of zeros stays 0).
    """
    if obs.in_flight or in_panic or (spec.scale_down_delay > 0 and scaled > 0) \
            or math.ceil(stable / spec.target_value) > 1:
        return -math.inf
    if stable > 0:
        # The newest interval with a non-zero value: once its end is a whole window
        # old, _record drops it and the stable value is exactly 0.
        k = len(intervals) - 1
        while intervals[k][column] <= 0:
            k -= 1
        deadline = min(deadline, intervals[k][1] + spec.stable_window)
    return deadline


def decide(
    scaling: Mapping[str, Any], state: KPAState, obs: Observation, now: float
) -> tuple[Decision, KPAState]:
    """The desired pod count for one function now, and the state to pass next time.

    ``scaling`` is the Function's ``spec.scaling`` (missing fields take the defaults of
    :data:`allinone.objects.DEFAULT_SCALING`). See the module docstring for the rules.
    """
    s = {**DEFAULT_SCALING, **scaling}
    spec = _decider_spec(s)
    metric = str(s["metric"])
    min_scale, max_scale = int(s["minScale"]), int(s["maxScale"])
    initial = int(s["initialScale"])
    intervals, last_sample_at, sums = _record(state, obs.samples, now, spec.stable_window)
    reached = state.initial_scale_reached or obs.ready_pods >= initial
    state = _evolve(
        state, samples=intervals, last_sample_at=last_sample_at, window_sums=sums,
        initial_scale_reached=reached,
    )
    panicking = state.panic_time is not None

    if last_sample_at is None and obs.in_flight == 0:
        # Knative's ErrNoData: replicas left alone; only minScale and a pending
        # initialScale still ask for pods.
        floor = max(min_scale, 0 if reached else initial)
        if floor == 0:
            return Decision(None, 0.0, 0.0, panicking, "no data", metric=metric), state
        wanted = min(floor, max_scale)
        why = "minScale, no data yet" if floor == min_scale else "initial scale, no data yet"
        return (Decision(wanted, 0.0, 0.0, panicking, why, metric=metric),
                _evolve(state, last_desired=wanted))

    column = 3 if metric == RPS else 2
    stable = _stable_average(intervals, sums, now, spec.stable_window, column)
    # Knative rounds the panic window to whole seconds (half away from zero), at least 1:
    # 60 s x 10 % = 6 s; 6 s x 25 % = 1.5 s -> 2 s.
    panic_window = max(1.0, math.floor(
        spec.stable_window * float(s["panicWindowPercentage"]) / 100.0 + 0.5))
    panic = _window_average(intervals, now, panic_window, column)
    poked = obs.ready_pods == 0 and obs.in_flight > 0
    if poked:
        # The activator's poke: the held requests are the freshest value at zero.
        stable = max(stable, float(obs.in_flight))
        panic = max(panic, float(obs.in_flight))

    result, state = scale(spec, state, obs.ready_pods, stable, panic, now)
    desired = result.desired
    in_panic = state.panic_time is not None
    reason = "panic" if in_panic else "stable"
    if poked:
        reason = f"request at zero, {reason}"
    if len(state.delay_window) > 1:
        # The window's newest count is smaller than its front: the delay holds pods.
        reason += f", held by the {spec.scale_down_delay:g} s scale-down delay"

    # The KPA reconciler: initial scale until reached, then [minScale, maxScale].
    if not reached and desired < initial:
        desired, reason = initial, "initial scale"
    if desired < min_scale:
        desired, reason = min_scale, f"{reason}, raised to minScale {min_scale}"
    elif desired > max_scale:
        desired, reason = max_scale, f"{reason}, capped at maxScale {max_scale}"

    # Scale to zero (Knative's handleScaleToZero) and the Active condition.
    want = desired
    active_since, inactive_since = state.active_since, state.inactive_since
    # The next change of branch below if nothing happens (see stands_until).
    deadline = math.inf
    if desired == 0:
        held = state.last_desired if state.last_desired is not None else obs.ready_pods
        keep = max(float(s["scaleToZeroGracePeriodSeconds"]),
                   float(s["scaleToZeroPodRetentionSeconds"]))
        if inactive_since is None and active_since is not None:
            if now - active_since < spec.stable_window:
                desired = want = 1
                reason = "holding 1 pod: Active for less than a stable window"
                # Without a ready pod the next decide leaves Active (below): no promise.
                deadline = (active_since + spec.stable_window if obs.ready_pods >= 1
                            else -math.inf)
            else:
                inactive_since = now  # pragma: no mutate (the want == 0 branch sets it too)
                desired = held
                reason = "Inactive: pods kept for the grace period"
                deadline = now + keep
        elif inactive_since is not None:
            if now - inactive_since < keep:
                desired = held
                reason = f"Inactive: pods kept until {keep:g} s after going Inactive"
                deadline = inactive_since + keep
            else:
                reason = "scale to zero"
        else:
            reason = "scale to zero"  # never Active: nothing to keep
    if want == 0:
        active_since, inactive_since = None, (inactive_since if inactive_since is not None
                                              else now)
    elif obs.ready_pods >= 1:
        active_since, inactive_since = (active_since if active_since is not None
                                        else now), None
    else:
        active_since, inactive_since = None, None  # activating
    until = stands_until(spec, intervals, obs, stable, column, in_panic, result.desired,
                         deadline)
    return (
        Decision(desired, stable, panic, in_panic, reason, result.excess_burst_capacity,
                 metric, until),
        _evolve(state, last_desired=desired, active_since=active_since,
                inactive_since=inactive_since),
    )
