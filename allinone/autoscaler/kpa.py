"""The Knative Pod Autoscaler (KPA) decision, as a pure function.

``decide(scaling, state, obs, now)`` turns what the activator saw into a desired pod
count and returns the next :class:`KPAState`; it never mutates its inputs, never reads a
clock and never does I/O, so every rule below is tested by moving a float. It follows
Knative Serving's ``pkg/autoscaler/scaling/autoscaler.go`` (``Scale``), plus the parts
of the KPA reconciler that apply initial scale, scale-to-zero and min/max bounds.

Worked numbers with the defaults (target 10, utilization 70 %, stable window 60 s,
panic window 10 % = 6 s, panic threshold 200 %, max up rate 1000, max down rate 2,
grace 30 s):

- **Target per pod** = target x utilization = 10 x 70 % = 7 concurrent requests.
- **Stable**: 40 requests in flight on average over the last 60 s -> ceil(40 / 7) = 6.
- **Rate limits** relative to ready pods (at least 1, as Knative does, so scaling from
  zero is never stuck): with 4 ready, at most ceil(1000 x 4) = 4000 and at least
  floor(4 / 2) = 2. With 100 ready and almost no load the next count is 50, not 1.
- **Panic**: the 6 s panic window averages 70 while 2 pods are ready: ceil(70 / 7) = 10
  and 10 / 2 = 5 >= 200 % -> panic. While panicking the count is the largest of the
  stable count, the panic count and every count decided since panic began (Knative's
  ``maxPanicPods``): panic never scales down. Every tick still over the threshold
  restarts the clock (Knative's ``panicTime``); panic ends at the first tick more than a
  stable window (60 s) after the last one over it.
- **Scale to zero**: when nothing is in flight and the last request started or finished
  at least the grace period ago (30 s; never-used functions count from creation), the
  target is 0, still rate limited like any scale-down: 4 ready -> floor(4 / 2) = 2 ->
  1 -> 0, so it is always from 1 pod that the last one goes, as in Knative. Until the
  grace has passed a function that has (or wanted) a pod keeps at least 1.
- **Request at zero**: 1 request held by the activator with 0 ready pods gives 1 at
  once. The held requests count as the panic window's concurrency (the samples lag by
  up to a tick): 50 held -> ceil(50 / 7) = 8 and 8 / 1 >= 200 % -> panic, 8 pods.
- **Bounds** last: [minScale, maxScale]. ``initialScale`` is a floor until that many
  pods have been Ready once (Knative's "scale target initialized"); 3 pods at creation
  with no traffic then drop by the normal rules: floor(3 / 2) = 1, and 0 after grace.
- **No data**: no sample ever, nothing in flight, no request ever -> ``desired`` None
  ("leave replicas alone", Knative's invalid scale result), unless minScale or a pending
  initialScale asks for pods.

Windows. A sample ``(t, c)`` is the time-weighted average concurrency over the interval
that ends at ``t`` and starts at the previous sample's timestamp (the activator's
:class:`~allinone.activator.stats.ConcurrencyTracker` produces exactly that; the very
first sample is taken to cover 1 s, Knative's bucket width). A window average is the
time-weighted mean of the parts of those intervals that lie inside ``(now - window,
now]``. With one sample per second this is Knative's per-second bucket average,
including its partial-window rule: 6 s of data in a 60 s window average over those 6 s,
and seconds after the last sample are left out rather than counted as 0. Samples not
newer than the last one recorded are ignored (they cover no time).

Deviations from Knative, and why:

- Scale to zero is decided by the activator's exact idle time (grace period since the
  last request) rather than by "stable average is 0, then the activator has been in the
  path for the grace period": every request goes through our activator, so its idle
  clock is the truth and zero comes after 30 s instead of 60 + 30 s. Going idle ends
  panic mode: nothing has arrived for the grace period, so there is no surge to guard.
- The held-requests floor on the panic window at zero stands in for the activator's
  immediate "poke" stat that Knative sends when a request arrives at zero.
- Rates and divisions are rounded to 1e-9 before ceil/floor, so float noise such as
  1.1 x 10 = 11.000000000000002 does not add a pod.
- Knative's scale-down delay, activation scale, target burst capacity and RPS metric
  are not part of our spec and are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from allinone.objects import DEFAULT_SCALING

# The time covered by the first sample ever seen: Knative's bucket granularity (1 s).
FIRST_SAMPLE_SECONDS = 1.0

# Window averages are rounded to 6 digits (Knative's precision) and pod arithmetic to 9,
# so that 7.0000000001 / 7 is 1 pod, not 2.
_AVERAGE_DIGITS = 6
_ARITHMETIC_DIGITS = 9


@dataclass(frozen=True)
class Observation:
    """What the activator and the pod lister saw since the previous decide.

    ``samples`` are ``(timestamp, average concurrency over the interval ending there)``,
    oldest first or in any order; concurrency includes requests held while at zero.
    """

    ready_pods: int
    samples: tuple[tuple[float, float], ...] = ()
    in_flight: int = 0
    last_request_at: float | None = None


@dataclass(frozen=True)
class KPAState:
    """Everything the KPA remembers between decisions (JSON-friendly).

    ``samples`` are ``(start, end, concurrency)`` intervals that still overlap the stable
    window; ``last_sample_at`` is where the next sample's interval starts.
    ``panic_time``/``max_panic_pods`` are Knative's ``panicTime``/``maxPanicPods``.
    """

    created_at: float
    samples: tuple[tuple[float, float, float], ...] = ()
    last_sample_at: float | None = None
    panic_time: float | None = None
    max_panic_pods: int = 0
    last_desired: int | None = None
    initial_scale_reached: bool = False


@dataclass(frozen=True)
class Decision:
    """One decision. ``desired`` None means "no data yet: leave replicas alone"."""

    desired: int | None
    stable_concurrency: float
    panic_concurrency: float
    panic: bool
    reason: str


@dataclass(frozen=True)
class _Params:
    min_scale: int
    max_scale: int
    initial_scale: int
    per_pod: float
    stable_window: float
    panic_window: float
    panic_threshold: float
    max_up_rate: float
    max_down_rate: float
    grace: float


def _params(scaling: Mapping[str, Any]) -> _Params:
    s = {**DEFAULT_SCALING, **scaling}
    stable_window = float(s["stableWindowSeconds"])
    return _Params(
        min_scale=int(s["minScale"]),
        max_scale=int(s["maxScale"]),
        initial_scale=int(s["initialScale"]),
        # 10 x 70 / 100 = 7 requests per pod.
        per_pod=float(s["target"]) * float(s["targetUtilizationPercentage"]) / 100.0,
        stable_window=stable_window,
        # 60 s x 10 / 100 = 6 s.
        panic_window=stable_window * float(s["panicWindowPercentage"]) / 100.0,
        # 200 % -> 2.0: panic when the panic window wants twice the ready pods.
        panic_threshold=float(s["panicThresholdPercentage"]) / 100.0,
        max_up_rate=float(s["maxScaleUpRate"]),
        max_down_rate=float(s["maxScaleDownRate"]),
        grace=float(s["scaleToZeroGracePeriodSeconds"]),
    )


def _ceil(x: float) -> int:
    return math.ceil(round(x, _ARITHMETIC_DIGITS))


def _floor(x: float) -> int:
    return math.floor(round(x, _ARITHMETIC_DIGITS))


def initial_state(scaling: Mapping[str, Any], now: float, *, ready_pods: int = 0) -> KPAState:
    """The state of a freshly created (or restarted) autoscaler.

    As in Knative, an autoscaler that starts while more than one pod is ready starts in
    panic mode with ``max_panic_pods`` = those pods: a restart loses the metric history,
    and without this the first partial window would scale a loaded function down.
    """
    p = _params(scaling)
    panic = ready_pods > 1
    return KPAState(
        created_at=now,
        panic_time=now if panic else None,
        max_panic_pods=ready_pods if panic else 0,
        initial_scale_reached=ready_pods >= p.initial_scale,
    )


def _record(
    state: KPAState, new: Iterable[tuple[float, float]], now: float, keep: float
) -> tuple[tuple[tuple[float, float, float], ...], float | None]:
    """Append new samples as intervals and drop those wholly older than ``keep`` s."""
    intervals = list(state.samples)
    last = state.last_sample_at
    for at, value in sorted(new):
        if last is not None and at <= last:
            continue  # covers no time; the tracker never produces it
        start = last if last is not None else at - FIRST_SAMPLE_SECONDS
        intervals.append((start, at, max(0.0, value)))
        last = at
    horizon = now - keep
    return tuple(iv for iv in intervals if iv[1] > horizon), last


def _window_average(
    intervals: Iterable[tuple[float, float, float]], now: float, window: float
) -> float:
    """Time-weighted mean over the covered part of ``(now - window, now]``.

    E.g. window 6 s, samples of 20 for 4 s then 60 for 2 s: (4 x 20 + 2 x 60) / 6 = 33.3.
    Only 2 s covered (a fresh function): the mean of those 2 s, not divided by 6.
    """
    lo = now - window
    covered = area = 0.0
    for start, end, value in intervals:
        overlap = min(end, now) - max(start, lo)
        if overlap > 0:
            covered += overlap
            area += overlap * value
    return round(area / covered, _AVERAGE_DIGITS) if covered > 0 else 0.0


def _bounded(desired: int, p: _Params, reason: str) -> tuple[int, str]:
    if desired < p.min_scale:
        return p.min_scale, f"{reason}, raised to minScale {p.min_scale}"
    if desired > p.max_scale:
        return p.max_scale, f"{reason}, capped at maxScale {p.max_scale}"
    return desired, reason


def decide(
    scaling: Mapping[str, Any], state: KPAState, obs: Observation, now: float
) -> tuple[Decision, KPAState]:
    """The desired pod count for one function now, and the state to pass next time.

    ``scaling`` is the Function's ``spec.scaling`` (missing fields take the defaults of
    :data:`allinone.objects.DEFAULT_SCALING`). See the module docstring for the rules.
    """
    p = _params(scaling)
    intervals, last_sample_at = _record(state, obs.samples, now, p.stable_window)
    reached = state.initial_scale_reached or obs.ready_pods >= p.initial_scale
    state = replace(
        state, samples=intervals, last_sample_at=last_sample_at, initial_scale_reached=reached
    )

    # No data: Knative's ErrNoData -> invalid scale result -> replicas left alone. Only
    # minScale and a pending initialScale still ask for pods.
    if last_sample_at is None and obs.in_flight == 0 and obs.last_request_at is None:
        floor = max(p.min_scale, 0 if reached else p.initial_scale)
        if floor == 0:
            return Decision(None, 0.0, 0.0, state.panic_time is not None, "no data"), state
        wanted = min(floor, p.max_scale)
        why = "minScale, no data yet" if floor == p.min_scale else "initial scale, no data yet"
        return (
            Decision(wanted, 0.0, 0.0, state.panic_time is not None, why),
            replace(state, last_desired=wanted),
        )

    stable_avg = _window_average(intervals, now, p.stable_window)
    panic_avg = _window_average(intervals, now, p.panic_window)
    if obs.ready_pods == 0 and obs.in_flight > 0:
        # Held requests at zero are the freshest number there is (Knative's activator
        # pokes the autoscaler with them): 50 held -> panic window of at least 50.
        panic_avg = max(panic_avg, float(obs.in_flight))

    # Desired pods per window: 40 on average at 7 per pod -> ceil(40 / 7) = 6.
    dspc = _ceil(stable_avg / p.per_pod)
    dppc = _ceil(panic_avg / p.per_pod)

    # Rate limits count at least 1 ready pod, so from zero up to ceil(1000 x 1) = 1000.
    ready = max(1, obs.ready_pods)
    max_up = _ceil(p.max_up_rate * ready)
    max_down = _floor(ready / p.max_down_rate)
    stable_pods = min(max(dspc, max_down), max_up)
    panic_pods = min(max(dppc, max_down), max_up)

    # Panic begins, or is extended, on every tick over the threshold; it ends at the
    # first tick under it more than a stable window after the last tick over it.
    over = dppc / ready >= p.panic_threshold
    panic_time, max_panic = state.panic_time, state.max_panic_pods
    if over:
        panic_time = now
    elif panic_time is not None and panic_time + p.stable_window < now:
        panic_time, max_panic = None, 0

    if panic_time is not None:
        # Provision for the larger window; never below what panic already asked for.
        raw = max(dspc, dppc)
        desired = max(stable_pods, panic_pods, max_panic)
        max_panic = desired
        reason = "panic"
    else:
        raw = dspc
        desired = stable_pods
        reason = "stable"
    if raw > max_up and desired == max_up:
        reason += f", scale-up rate limited to {max_up}"
    elif raw < max_down and desired == max_down:
        reason += f", scale-down rate limited to {max_down}"

    idle_since = obs.last_request_at if obs.last_request_at is not None else state.created_at
    if obs.in_flight == 0 and now - idle_since >= p.grace:
        # Idle for the grace period: head for 0 at the scale-down rate, 4 -> 2 -> 1 -> 0.
        panic_time, max_panic = None, 0
        desired = max_down
        reason = (
            "scale to zero after grace"
            if desired == 0
            else f"idle after grace, scale-down rate limited to {max_down}"
        )
    elif desired == 0 and (obs.ready_pods > 0 or (state.last_desired or 0) > 0):
        desired = 1
        reason = "holding 1 pod until the grace period passes"
    if obs.in_flight > 0 and desired < 1:
        desired = 1
        reason = "request at zero"
    if not reached and desired < p.initial_scale:
        desired = p.initial_scale
        reason = "initial scale"

    desired, reason = _bounded(desired, p, reason)
    return (
        Decision(desired, stable_avg, panic_avg, panic_time is not None, reason),
        replace(state, panic_time=panic_time, max_panic_pods=max_panic, last_desired=desired),
    )
