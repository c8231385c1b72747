"""The KPA decision, in the style of Knative's autoscaler_test.go.

A :class:`Sim` owns a manual clock (a float it advances one second per tick), feeds one
sample per second and calls ``decide`` like the loop would. Unless a test says
otherwise the scaling is the default: 10 per pod at 70 % -> 7 per pod, 60 s stable
window, 6 s panic window, panic at 200 %, max up 1000, max down 2, grace 30 s.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

import pytest

from allinone.autoscaler.kpa import (
    Decision,
    KPAState,
    Observation,
    decide,
    initial_state,
)
from allinone.objects import DEFAULT_SCALING

T0 = 1000.0


class Sim:
    """A function under a manual clock: feed load second by second, watch decisions."""

    def __init__(
        self, scaling: dict[str, Any] | None = None, *, ready: int = 0, start_ready: int = 0
    ) -> None:
        self.scaling: dict[str, Any] = {**DEFAULT_SCALING, **(scaling or {})}
        self.now = T0
        self.state = initial_state(self.scaling, self.now, ready_pods=start_ready)
        self.ready = ready
        self.last_request_at: float | None = None
        self.history: list[Decision] = []

    def feed(
        self,
        seconds: int,
        concurrency: float,
        *,
        ready: int | None = None,
        follow: bool = False,
        in_flight: int | None = None,
    ) -> Decision:
        """``seconds`` ticks of 1 s, each with one sample of ``concurrency``.

        ``ready`` sets the ready pods; ``follow`` makes pods Ready instantly at the
        previous desired count. Any load counts as a request at that second.
        """
        if ready is not None:
            self.ready = ready
        assert seconds >= 1
        for _ in range(seconds):
            self.now += 1.0
            held = math.ceil(concurrency) if in_flight is None else in_flight
            if concurrency > 0 or held > 0:
                self.last_request_at = self.now
            obs = Observation(
                ready_pods=self.ready,
                samples=((self.now, concurrency),),
                in_flight=held,
                last_request_at=self.last_request_at,
            )
            decision, self.state = decide(self.scaling, self.state, obs, self.now)
            self.history.append(decision)
            if follow and decision.desired is not None:
                self.ready = decision.desired
        return decision

    def tick(
        self, *, in_flight: int = 0, samples: tuple[tuple[float, float], ...] = ()
    ) -> Decision:
        """Decide now with no time passing (the activator's immediate decide)."""
        obs = Observation(self.ready, samples, in_flight, self.last_request_at)
        decision, self.state = decide(self.scaling, self.state, obs, self.now)
        self.history.append(decision)
        return decision


# (seconds, concurrency, ready) per phase; ready None means pods follow the decision.
Phase = tuple[int, float, int | None]

SCENARIOS: list[tuple[str, dict[str, Any], list[Phase], int, bool]] = [
    # 40 on average, 7 per pod -> ceil(40 / 7) = 6.
    ("steady 40 on 6 pods", {}, [(60, 40, 6)], 6, False),
    ("steady light load keeps 1", {}, [(60, 5, 1)], 1, False),
    ("exactly at target is 1 pod", {}, [(60, 7, 1)], 1, False),
    # 60 s at 20 then a full window at 30 on 3 ready: ceil(30 / 7) = 5; the panic window
    # wants 5 / 3 = 1.7 < 200 %, so this is a stable step up.
    ("step up, stable", {}, [(60, 20, 3), (60, 30, 3)], 5, False),
    # Load falls to 14 on 6 pods: ceil(14 / 7) = 2, but at most halved: floor(6 / 2) = 3.
    ("scale down limited by maxScaleDownRate 2", {}, [(60, 40, 6), (60, 14, 6)], 3, False),
    ("scale down with maxScaleDownRate 10", {"maxScaleDownRate": 10},
     [(60, 40, 6), (60, 14, 6)], 2, False),
    # 100 ready, load 1: Knative's TestAutoscalerRateLimitScaleDown -> 100 / 10 = 10.
    ("maxScaleDownRate 10 from 100 pods", {"maxScaleDownRate": 10, "maxScale": 1000},
     [(60, 1, 100)], 10, False),
    # 140 needs ceil(140 / 7) = 20 pods; 2 ready at rate 2 may become ceil(2 x 2) = 4.
    ("maxScaleUpRate 2 from 2 pods", {"maxScaleUpRate": 2, "maxScale": 100},
     [(10, 140, 2)], 4, True),
    # Knative's small-rate case: rate 1.1 on 2 pods, need 3: ceil(1.1 x 2) = ceil(2.2) = 3.
    ("maxScaleUpRate 1.1 still grows", {"maxScaleUpRate": 1.1, "target": 1,
                                        "targetUtilizationPercentage": 100},
     [(60, 3, 2)], 3, False),
    # Rate 1.1 on 10 ready, need 50: ceil(1.1 x 10) = 11 (1.1 x 10 is exactly 11.0 in
    # float64); the panic window wants 50 / 10 = 500 %, rate limited the same way.
    ("maxScaleUpRate 1.1 on 10 pods", {"maxScaleUpRate": 1.1, "maxScale": 100},
     [(60, 350, 10)], 11, True),
    # 100 needs ceil(100 / 7) = 15 (15 / 10 < 200 %, no panic), capped at 10.
    # Rate 1.1 on 50 ready: Go's float64 gives 1.1 x 50 = 55.00000000000001 -> 56 (not
    # 55: no rounding before ceil). The panic window wants 700 / 7 / 50 = 200 %: panic.
    ("maxScaleUpRate 1.1 on 50 pods is 56", {"maxScaleUpRate": 1.1, "maxScale": 1000},
     [(60, 700, 50)], 56, True),
    # Scale-down rate 1.1 from 50: floor(50 / 1.1) = floor(45.45) = 45.
    ("maxScaleDownRate 1.1 on 50 pods is 45", {"maxScaleDownRate": 1.1, "maxScale": 1000},
     [(60, 1, 50)], 45, False),
    # Down rate 1.08 on 135 ready: 135 / 1.08 = 124.99999999999999 in float64 -> 124, as
    # in Go (rounding to 1e-9 first gave 125).
    ("maxScaleDownRate 1.08 on 135 pods is 124", {"maxScaleDownRate": 1.08,
                                                  "maxScale": 1000},
     [(60, 1, 135)], 124, False),
    ("maxScale caps", {}, [(60, 100, 10)], 10, False),
    ("maxScale caps panic too", {}, [(60, 140, 10)], 10, True),
    ("minScale keeps pods without load", {"minScale": 2}, [(60, 0, 2), (60, 0, 2)], 2, False),
    # 10 then a 6 s burst at 70 on 2 pods: panic window 70 -> 10 pods, 10 / 2 = 500 %.
    ("burst enters panic", {}, [(60, 10, 2), (6, 70, 2)], 10, True),
    # Knative's TestAutoscalerPanicModeExponentialTrackAndStabilize, compressed: panic
    # from 1 pod, pods follow, traffic settles; still in panic a minute later.
    ("panic follows a growing burst", {"target": 1, "targetUtilizationPercentage": 100,
                                       "maxScale": 1000},
     [(60, 1, 1), (1, 6, None), (1, 36, None), (1, 216, None), (30, 216, None)], 216, True),
]


@pytest.mark.parametrize(
    ("scaling", "phases", "want", "want_panic"),
    [pytest.param(s, ph, w, p, id=name) for name, s, ph, w, p in SCENARIOS],
)
def test_scenarios(
    scaling: dict[str, Any], phases: list[Phase], want: int, want_panic: bool
) -> None:
    sim = Sim(scaling)
    decision: Decision | None = None
    for seconds, concurrency, ready in phases:
        if ready is None:
            decision = sim.feed(seconds, concurrency, follow=True)
        else:
            decision = sim.feed(seconds, concurrency, ready=ready)
    assert decision is not None
    assert decision.desired == want, decision
    assert decision.panic is want_panic, decision


# --- windows ------------------------------------------------------------------------


def test_partial_window_averages_what_it_has() -> None:
    # 3 s of data at 21 in a 60 s window: average 21 (not 21 x 3 / 60) -> 3 pods.
    sim = Sim(ready=3)
    d = sim.feed(3, 21)
    assert d.stable_concurrency == 21.0
    assert d.desired == 3


def test_stable_and_panic_windows_average_separately() -> None:
    sim = Sim(ready=3)
    sim.feed(54, 20)
    d = sim.feed(6, 26)
    # Stable: (54 x 20 + 6 x 26) / 60 = 20.6; panic: the last 6 s = 26.
    assert d.stable_concurrency == pytest.approx(20.6)
    assert d.panic_concurrency == pytest.approx(26.0)
    assert d.desired == 3  # ceil(20.6 / 7) = 3; panic wants ceil(26 / 7) = 4, 4 / 3 < 2


def test_samples_are_time_weighted_by_interval() -> None:
    # Samples 2 s apart (the loop's tick): each covers the 2 s before it.
    scaling = dict(DEFAULT_SCALING)
    state = initial_state(scaling, T0)
    _, state = decide(scaling, state, Observation(2, ((T0 + 1, 14.0),), 14, T0 + 1), T0 + 1)
    # Covers (T0+1, T0+3] at 0: stable = (1 s x 14 + 2 s x 0) / 3 s = 4.67 -> 1 pod.
    d, state = decide(scaling, state, Observation(2, ((T0 + 3, 0.0),), 0, T0 + 1), T0 + 3)
    assert d.stable_concurrency == pytest.approx(14 / 3, abs=1e-6)
    assert d.desired == 1
    # The state only keeps intervals overlapping the stable window.
    _, state = decide(scaling, state, Observation(2, ((T0 + 100, 0.0),), 0, T0 + 1), T0 + 100)
    assert [iv[:2] for iv in state.samples] == [(T0 + 3, T0 + 100)]


def test_stale_samples_are_ignored() -> None:
    sim = Sim(ready=1)
    sim.feed(5, 7)
    d = sim.tick(in_flight=7, samples=((sim.now - 3, 700.0), (sim.now, 700.0)))
    assert d.stable_concurrency == 7.0
    assert d.desired == 1


# --- panic --------------------------------------------------------------------------


def test_panic_never_scales_down_and_ends_after_a_stable_window() -> None:
    sim = Sim()
    sim.feed(60, 10, ready=2)  # ceil(10 / 7) = 2 pods, calm
    assert sim.history[-1].panic is False
    # The burst: 2nd second panic window (4 x 10 + 2 x 70) / 6 = 30 -> 5 pods, 5 / 2 >= 2.
    sim.feed(1, 70)
    assert sim.history[-1].panic is False
    d = sim.feed(1, 70)
    assert (d.panic, d.desired, d.reason) == (True, 5, "panic")
    d = sim.feed(4, 70)
    assert d.desired == 10  # ceil(70 / 7)
    burst_end = sim.now
    # Pods arrive, the load drops to 10: panic holds 10 (never scales down) although the
    # stable count would be floor(10 / 2) = 5. 10 pods are never over 200 % again.
    sim.feed(60, 10, ready=10)
    assert sim.now == burst_end + 60
    assert all(d.panic and d.desired == 10 for d in sim.history[-60:])
    # One tick more than a stable window after the last tick over the threshold: calm.
    d = sim.feed(1, 10)
    assert d.panic is False
    assert d.desired == 5  # stable ceil(10 / 7) = 2, halved at most: floor(10 / 2) = 5
    assert sim.state.max_panic_pods == 0 and sim.state.panic_time is None


def test_panic_is_extended_while_over_threshold() -> None:
    sim = Sim()
    sim.feed(60, 10, ready=2)
    sim.feed(6, 70)  # panic, 10 pods
    # The pods never come: still 2 ready, still 70, for two minutes: panic all along.
    sim.feed(120, 70)
    assert all(d.panic and d.desired == 10 for d in sim.history[-120:])
    assert sim.state.panic_time == sim.now


def test_panic_grows_with_the_panic_window() -> None:
    sim = Sim({"maxScale": 100})
    sim.feed(60, 10, ready=2)
    sim.feed(6, 70)
    d = sim.feed(6, 140)  # ceil(140 / 7) = 20 on 2 ready: still over, up to 20
    assert (d.panic, d.desired) == (True, 20)
    d = sim.feed(6, 35, ready=20)  # load falls: ceil(35 / 7) = 5, but no scale-down
    assert (d.panic, d.desired) == (True, 20)


def test_stable_larger_than_panic_while_panicking() -> None:
    # Knative's AutoscalerPanicStableLargerThanPanic: in panic, the larger window wins.
    scaling = {**DEFAULT_SCALING, "target": 1, "targetUtilizationPercentage": 100,
               "maxScale": 1000}
    state = KPAState(created_at=T0, panic_time=T0 + 55, max_panic_pods=5)
    samples = tuple((T0 + i, 56.0 if i <= 50 else 20.0) for i in range(1, 61))
    d, _ = decide(scaling, state, Observation(5, samples, 20, T0 + 60), T0 + 60)
    # Stable (50 x 56 + 10 x 20) / 60 = 50, panic 20: 50 pods.
    assert (d.stable_concurrency, d.panic_concurrency) == (50.0, 20.0)
    assert (d.panic, d.desired) == (True, 50)


def test_restart_with_pods_starts_in_panic() -> None:
    # Knative's TestStartInPanicMode: 4 ready at start, light load does not cut them.
    sim = Sim(ready=4, start_ready=4)
    assert sim.state.panic_time == T0 and sim.state.max_panic_pods == 4
    d = sim.feed(60, 1)
    assert (d.panic, d.desired) == (True, 4)
    d = sim.feed(1, 1)  # T0 + 61: a stable window passed with no tick over the threshold
    assert (d.panic, d.desired) == (False, 2)  # ceil(1 / 7) = 1, floor(4 / 2) = 2


@pytest.mark.parametrize(("ready", "in_panic"), [(0, False), (1, False), (2, True)])
def test_initial_state_panics_only_above_one_pod(ready: int, in_panic: bool) -> None:
    # Knative's newAutoscaler: maxPanicPods is the ready count either way.
    state = initial_state(DEFAULT_SCALING, T0, ready_pods=ready)
    assert (state.panic_time is not None) is in_panic
    assert state.max_panic_pods == ready


# --- scale to zero, the Knative way -------------------------------------------------


def test_zero_when_the_stable_window_empties_then_the_grace_period() -> None:
    sim = Sim(ready=1)
    sim.feed(10, 1)  # load until T0 + 10; Active since T0 + 1
    d = sim.feed(59, 0)  # T0 + 69: the last load second is still in the 60 s window
    assert d.desired == 1 and d.stable_concurrency > 0
    d = sim.feed(1, 0)  # T0 + 70: the window is empty -> desired 0 -> Inactive, pod kept
    assert (d.desired, d.reason) == (1, "Inactive: pods kept for the grace period")
    assert sim.state.inactive_since == T0 + 70
    d = sim.feed(29, 0)
    assert d.desired == 1
    d = sim.feed(1, 0)  # 30 s grace after going Inactive
    assert (d.desired, d.reason, sim.now) == (0, "scale to zero", T0 + 100)


def test_sparse_short_requests_keep_one_pod() -> None:
    # The case: grace 4 s, one 100 ms request every 5 s. The stable average never
    # reaches 0, so Knative keeps the pod: no cold start per request.
    sim = Sim({"scaleToZeroGracePeriodSeconds": 4}, ready=1)
    for _ in range(60):  # 5 minutes
        sim.feed(1, 0.1)
        sim.feed(4, 0)
    assert all(d.desired == 1 for d in sim.history)


def test_pod_retention_outlasts_the_grace_period() -> None:
    sim = Sim({"scaleToZeroPodRetentionSeconds": 90}, ready=1)
    sim.feed(10, 1)
    sim.feed(60, 0)  # T0 + 70: Inactive
    assert sim.state.inactive_since == T0 + 70
    assert sim.feed(89, 0).desired == 1  # past the 30 s grace, inside the 90 s retention
    d = sim.feed(1, 0)
    assert (d.desired, sim.now) == (0, T0 + 160)


def test_active_for_less_than_a_stable_window_keeps_one_pod() -> None:
    # A request at zero whose pod became Ready late: the window empties at T0 + 61 but the
    # function has been Active only since T0 + 50, so 1 pod stays until T0 + 110 (Active
    # for a stable window), then the grace period: 0 at T0 + 140.
    sim = Sim()
    sim.feed(1, 1, ready=0)
    sim.feed(48, 0)
    sim.feed(1, 0, ready=1)
    assert sim.state.active_since == T0 + 50
    d = sim.feed(11, 0)  # T0 + 61
    assert (d.desired, d.reason) == (1, "holding 1 pod: Active for less than a stable window")
    d = sim.feed(49, 0)  # T0 + 110
    assert (d.desired, sim.state.inactive_since) == (1, T0 + 110)
    assert sim.feed(29, 0).desired == 1
    assert sim.feed(1, 0).desired == 0


def test_in_flight_request_blocks_zero() -> None:
    # A request in flight keeps the window above 0 however long it runs.
    sim = Sim(ready=1)
    d = sim.feed(200, 1, in_flight=1)
    assert d.desired == 1


def test_zero_is_rate_limited_from_many_pods() -> None:
    # 4 ready, the load stops: the stable average decays, the count may at most halve per
    # step: 4 -> 2 -> 1 -> 0 (then Inactive, the grace period, and 0).
    sim = Sim(ready=4)
    sim.feed(60, 45)  # ceil(45 / 7) = 7 on 4 ready: 7 / 4 < 200 %, no panic
    d = sim.feed(60, 0)
    assert (d.desired, d.panic, d.stable_concurrency) == (2, False, 0.0)
    assert sim.feed(1, 0, ready=2).desired == 1
    d = sim.feed(1, 0, ready=1)  # floor(1 / 2) = 0: Inactive now, the last pod kept
    assert (d.desired, sim.state.inactive_since) == (1, sim.now)
    assert sim.feed(30, 0).desired == 0


def test_panic_holds_until_a_stable_window_after_it_began_even_when_idle() -> None:
    # Knative: going idle does not end panic; panic_time + stable window does, and then
    # the count follows the stable average (at most halved per step).
    sim = Sim()
    sim.feed(60, 10, ready=2)
    sim.feed(6, 70)
    last_over = sim.state.panic_time
    assert last_over == sim.now
    sim.feed(60, 0, ready=10)
    assert all(d.panic and d.desired == 10 for d in sim.history[-60:])
    d = sim.feed(1, 0)
    assert sim.now == last_over + 61
    assert (d.panic, d.desired) == (False, 5)


def test_min_scale_floors_scale_to_zero() -> None:
    sim = Sim({"minScale": 1}, ready=1)
    sim.feed(5, 3)
    d = sim.feed(200, 0)
    assert (d.desired, d.reason) == (1, "stable, raised to minScale 1")


def test_initial_scale_pods_go_the_knative_way() -> None:
    # initialScale 2: held until 2 pods were Ready once, then the normal rules.
    sim = Sim({"initialScale": 2})
    assert sim.tick().desired == 2  # no data yet
    d = sim.feed(3, 0, ready=1)
    assert (d.desired, d.reason) == (2, "initial scale")
    d = sim.feed(1, 0, ready=2)
    assert d.desired == 1  # reached; floor(2 / 2) = 1
    d = sim.feed(1, 0, ready=1)  # desired 0, Active since T0 + 1 for less than 60 s
    assert d.desired == 1
    sim.feed(56, 0)
    assert sim.state.inactive_since == T0 + 61
    assert sim.feed(29, 0).desired == 1
    assert sim.feed(1, 0).desired == 0


# --- knobs --------------------------------------------------------------------------


def test_scale_down_delay_holds_the_maximum() -> None:
    # scaleDownDelaySeconds 30: each count is the max of the counts without the delay in
    # the last 30 s, in Knative's 2 s buckets (15 buckets: this one and the 14 before).
    plain = Sim({"maxScaleDownRate": 10}, ready=6)
    delayed = Sim({"scaleDownDelaySeconds": 30, "maxScaleDownRate": 10}, ready=6)
    for sim in (plain, delayed):
        sim.feed(60, 40)  # ceil(40 / 7) = 6
        sim.feed(100, 7)  # the stable value decays to 7 -> 1 pod
    by_bucket: dict[int, int] = {}
    for i, d in enumerate(plain.history):
        bucket = int(T0 + 1 + i) // 2
        by_bucket[bucket] = max(by_bucket.get(bucket, 0), d.desired or 0)
        want = max(v for b, v in by_bucket.items() if bucket - b < 15)
        assert delayed.history[i].desired == want, i
    assert plain.history[-1].desired == delayed.history[-1].desired == 1
    first = [next(i for i, d in enumerate(s.history) if d.desired == 1)
             for s in (plain, delayed)]
    assert first[1] - first[0] >= 28


def test_activation_scale_raises_every_nonzero_count() -> None:
    sim = Sim({"activationScale": 3})
    sim.last_request_at = sim.now
    assert sim.tick(in_flight=1).desired == 3  # from zero
    d = sim.feed(60, 1, ready=3)  # 1 in flight needs 1 pod: still 3
    assert d.desired == 3
    sim.feed(200, 0, follow=True)
    # While the window still sees load the count is 3; once it reads 0 the rate limit
    # (floor(3 / 2) = 1) and scale to zero apply, which the activation scale leaves alone.
    counts = [d.desired for d in sim.history[-200:]]
    assert set(counts) == {3, 1, 0} and counts[-1] == 0


def test_rps_metric_scales_on_requests_per_second() -> None:
    # target 10 rps at 70 %: 7 rps per pod; 40 rps -> ceil(40 / 7) = 6 pods, whatever
    # the concurrency.
    sim = Sim({"metric": "rps"}, ready=6)
    for _ in range(60):
        sim.now += 1.0
        obs = Observation(6, ((sim.now, 0.5, 40.0),), 1, sim.now)
        d, sim.state = decide(sim.scaling, sim.state, obs, sim.now)
    assert (d.desired, d.metric, d.stable_concurrency) == (6, "rps", 40.0)


@pytest.mark.parametrize(("tbc", "want"), [(211, math.floor(4 * 10 - 211 - 20)),
                                           (0, 0), (-1, -1), (5, 4 * 10 - 5 - 20)])
def test_excess_burst_capacity(tbc: float, want: int) -> None:
    # Knative: floor(ready x target - targetBurstCapacity - panic value); 0 and -1 as is.
    sim = Sim({"targetBurstCapacity": tbc}, ready=4)
    d = sim.feed(10, 20)
    assert d.excess_burst_capacity == want


def test_container_concurrency_caps_the_target() -> None:
    # Knative's ResolveMetricTarget: target 10 but cc 2 -> 2 x 70 % = 1.4 per pod;
    # 7 in flight -> ceil(7 / 1.4) = 5.
    sim = Sim({"containerConcurrency": 2}, ready=5)
    assert sim.feed(60, 7).desired == 5


# --- from zero, no data, bounds ------------------------------------------------------


def test_request_at_zero_gives_one_pod_at_once() -> None:
    sim = Sim(ready=1)
    sim.feed(5, 1)
    sim.feed(100, 0)  # the window empties, Inactive, the grace period passes
    assert sim.feed(1, 0, ready=0).desired == 0
    # A request arrives and is held: the activator decides immediately, no time passes.
    sim.last_request_at = sim.now
    d = sim.tick(in_flight=1)
    assert (d.desired, d.reason) == (1, "request at zero, stable")


def test_burst_at_zero_scales_to_what_is_held() -> None:
    # 50 held: ceil(50 / 7) = 8 pods, 8 / 1 >= 200 % -> panic.
    sim = Sim()
    sim.last_request_at = sim.now
    d = sim.tick(in_flight=50)
    assert (d.desired, d.panic, d.panic_concurrency) == (8, True, 50.0)


def test_first_request_of_a_new_function() -> None:
    sim = Sim()
    assert sim.tick().desired is None
    sim.last_request_at = sim.now
    assert sim.tick(in_flight=1).desired == 1


@pytest.mark.parametrize(
    ("scaling", "ready", "want", "reason"),
    [
        ({}, 0, None, "no data"),
        ({}, 3, None, "no data"),  # pods exist, no metrics yet: leave them alone
        ({"minScale": 2}, 0, 2, "minScale, no data yet"),
        ({"initialScale": 3}, 0, 3, "initial scale, no data yet"),
        ({"initialScale": 3, "maxScale": 2}, 0, 2, "initial scale, no data yet"),
    ],
)
def test_no_data(scaling: dict[str, Any], ready: int, want: int | None, reason: str) -> None:
    sc = {**DEFAULT_SCALING, **scaling}
    d, _ = decide(sc, initial_state(sc, T0), Observation(ready_pods=ready), T0 + 5)
    assert (d.desired, d.reason) == (want, reason)


def test_initial_scale_holds_until_reached_under_load() -> None:
    sim = Sim({"initialScale": 4})
    d = sim.feed(10, 7, ready=1)  # 1 pod of load, but 4 asked for at creation
    assert d.desired == 4
    d = sim.feed(1, 7, ready=4)  # reached: stable 1, halved at most -> 2
    assert d.desired == 2
    d = sim.feed(1, 7, ready=2)  # never back to the initial scale
    assert d.desired == 1


# --- purity and JSON ----------------------------------------------------------------


def test_decide_is_pure_and_json_friendly() -> None:
    sim = Sim(ready=2)
    sim.feed(30, 20)
    state = sim.state
    obs = Observation(2, ((sim.now + 1, 20.0),), 20, sim.now + 1)
    a = decide(sim.scaling, state, obs, sim.now + 1)
    b = decide(sim.scaling, state, obs, sim.now + 1)
    assert a == b
    assert state == sim.state  # the input state was not changed
    json.dumps(asdict(a[0]))
    restored = json.loads(json.dumps(asdict(a[1])))
    assert restored["last_desired"] == a[0].desired == 3


def test_partial_scaling_mapping_uses_defaults() -> None:
    d, _ = decide({"target": 1}, initial_state({}, T0),
                  Observation(10, ((T0 + 1, 7.0),), 7, T0 + 1), T0 + 1)
    # 1 x 70 % = 0.7 per pod: ceil(7 / 0.7) = 10 (no float noise giving 11).
    assert d.desired == 10
