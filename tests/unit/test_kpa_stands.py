"""``Decision.stands_until``, the promise that lets a tick be skipped, and
``FunctionScaler``, the autoscaler loop's rule that keeps it (the simulator runs it too).

The promise is checked against ``decide`` itself: from random histories, deciding at
every tick, no decision made before the previous one's ``stands_until`` (zero samples,
nothing in flight, the same ready pods) differs from it in desired count or panic flag;
and each deadline is the exact one (table). The scaler is checked against deciding at
every tick: every decision it makes is the one deciding at every tick makes, to the
last bit of the window values, and the ones it skips have the same count and flag.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from allinone.activator.stats import ConcurrencyTracker
from allinone.autoscaler.kpa import Decision, KPAState, Observation, decide, initial_state
from allinone.autoscaler.loop import FunctionScaler

GRID = 2.0


def zero(at: float, ready: int) -> Observation:
    return Observation(ready_pods=ready, samples=((at, 0.0, 0.0),))


def random_scaling(rng: random.Random) -> dict[str, Any]:
    scaling: dict[str, Any] = {
        "stableWindowSeconds": rng.choice([6, 10, 60]),
        "scaleToZeroGracePeriodSeconds": rng.choice([2, 30]),
        "scaleToZeroPodRetentionSeconds": rng.choice([0, 0, 14]),
        "target": rng.choice([1, 2, 10]),
    }
    if rng.random() < 0.3:
        scaling["scaleDownDelaySeconds"] = rng.choice([4, 20])
    if rng.random() < 0.3:
        scaling["activationScale"] = 2
    if rng.random() < 0.2:
        scaling["minScale"] = 1
    if rng.random() < 0.3:
        scaling["metric"] = "rps"
    return scaling


# Seeds and lengths are sized for mutation testing too (tests/mutation runs these for
# each of the KPA's ~830 mutants, through mutmut's trampolines, where a decide costs
# ~10x): 12 runs of 300 decides and 8 of 250 ticks meet every kind of promise here.
@pytest.mark.parametrize("seed", range(12))
def test_no_decision_before_stands_until_differs(seed: int) -> None:
    rng = random.Random(seed)
    scaling = random_scaling(rng)
    now, ready = 0.0, 0
    state = initial_state(scaling, now)
    prev: Decision | None = None
    prev_ready = -1
    promised = 0
    for _ in range(300):
        now += GRID
        if rng.random() < 0.15:  # a busy tick
            c = rng.choice([0.1, 0.5, 2.0, 9.0, 30.0])
            obs = Observation(ready, ((now, c, c * 1.5),), in_flight=rng.choice([0, 0, 1]))
        else:
            obs = zero(now, ready)
        d, state = decide(scaling, state, obs, now)
        quiet = not obs.in_flight and obs.samples[0][1] == 0
        if prev is not None and quiet and ready == prev_ready and now < prev.stands_until:
            promised += 1
            assert (d.desired, d.panic) == (prev.desired, prev.panic), (now, prev, d)
        prev, prev_ready = d, ready
        if rng.random() < 0.5 and d.desired is not None:
            ready = d.desired  # the pods follow, sometimes a tick late
    assert promised > 0


def settled(scaling: dict[str, Any], ready: int = 1) -> tuple[KPAState, float]:
    """A function that had one tick of concurrency 1 ending at t = 10, then decided
    with zero samples every 2 s until 12."""
    state = initial_state(scaling, 0.0, ready_pods=ready)
    state = decide(scaling, state, Observation(ready, ((10.0, 1.0, 1.0),)), 10.0)[1]
    return state, 12.0


def test_one_pod_after_a_request_stands_until_the_request_leaves_the_window() -> None:
    scaling = {"stableWindowSeconds": 60}
    state, now = settled(scaling)
    d, _ = decide(scaling, state, zero(now, 1), now)
    assert d.desired == 1 and d.stands_until == 70.0  # the interval (9, 10] + 60 s


def test_the_window_deadline_counts_the_newest_non_zero_interval() -> None:
    scaling = {"stableWindowSeconds": 60}
    state = initial_state(scaling, 0.0, ready_pods=1)
    for at, c in ((10.0, 1.0), (12.0, 0.5), (14.0, 0.0), (16.0, 0.0)):
        d, state = decide(scaling, state, Observation(1, ((at, c, 0.0),)), at)
    assert d.stands_until == 72.0  # (10, 12] with 0.5, not the zeros after it


def test_the_metric_column_decides_the_window_deadline() -> None:
    scaling = {"stableWindowSeconds": 60, "metric": "rps"}
    state = initial_state(scaling, 0.0, ready_pods=1)
    for at, c, r in ((10.0, 1.0, 0.0), (12.0, 0.0, 0.5), (14.0, 0.0, 0.0)):
        d, state = decide(scaling, state, Observation(1, ((at, c, r),)), at)
    assert d.stands_until == 72.0  # requests per second ended at 12


def test_no_promise_in_flight_in_panic_or_above_one_pod() -> None:
    scaling = {"stableWindowSeconds": 60}
    state, now = settled(scaling)
    busy = Observation(1, ((now, 0.0, 0.0),), in_flight=1)
    assert decide(scaling, state, busy, now)[0].stands_until == -math.inf
    # 30 for a tick on one pod: ceil(30 / 7) = 5 -> 5 / 1 >= 200 %: panic.
    d, _ = decide(scaling, state, Observation(1, ((now, 30.0, 0.0),)), now)
    assert d.panic and d.stands_until == -math.inf
    # A stable count of 2 falls step by step: no promise even without requests.
    two = {"stableWindowSeconds": 60, "target": 1, "targetUtilizationPercentage": 100}
    state = initial_state(two, 0.0, ready_pods=1)
    state = decide(two, state, Observation(4, ((10.0, 6.0, 0.0),)), 10.0)[1]  # 6 / 4 < 2
    d, _ = decide(two, state, zero(12.0, 4), 12.0)  # 6 x 1 s / 3 s = 2
    assert d.desired == 2 and not d.panic and d.stands_until == -math.inf
    # ... which a stable value of exactly the target (one pod) does not.
    state = initial_state(two, 0.0, ready_pods=1)
    state = decide(two, state, Observation(1, ((10.0, 1.0, 0.0),)), 10.0)[1]
    d, _ = decide(two, state, Observation(1, ((11.0, 1.0, 0.0),)), 11.0)
    assert d.stable_concurrency == 1.0 and d.desired == 1 and d.stands_until == 71.0


def test_no_data_gives_no_promise() -> None:
    d, _ = decide({}, initial_state({}, 0.0), Observation(0), 0.0)
    assert d.desired is None and d.stands_until == -math.inf


def test_scale_to_zero_deadlines() -> None:
    scaling = {"stableWindowSeconds": 6, "scaleToZeroGracePeriodSeconds": 30}
    state = initial_state(scaling, 0.0, ready_pods=1)  # Active since 0
    d, state = decide(scaling, state, Observation(1, ((1.0, 1.0, 0.0),)), 1.0)
    assert d.desired == 1 and d.stands_until == 7.0  # (0, 1] + 6 s
    # The window is empty at 8, but the function has been Active for less than 6 s?
    # No: since 0, so at 8 it goes Inactive and keeps its pod 30 s.
    d, state = decide(scaling, state, zero(8.0, 1), 8.0)
    assert d.desired == 1 and "Inactive" in d.reason and d.stands_until == 38.0
    d, state = decide(scaling, state, zero(20.0, 1), 20.0)
    assert d.desired == 1 and d.stands_until == 38.0  # the same grace period
    d, state = decide(scaling, state, zero(38.0, 1), 38.0)
    assert d.desired == 0 and d.stands_until == math.inf
    # Retention longer than the grace period keeps the pod for the longer of the two.
    kept = {**scaling, "scaleToZeroPodRetentionSeconds": 50}
    state = initial_state(kept, 0.0, ready_pods=1)
    d, state = decide(kept, state, zero(8.0, 1), 8.0)
    assert d.stands_until == 58.0


def test_holding_one_pod_stands_until_a_stable_window_of_activity() -> None:
    # A request at zero; its pod is ready at 105, Active from then; the window is
    # empty at 108, 3 s later, so the pod is held until 105 + 6.
    scaling = {"stableWindowSeconds": 6}
    state = initial_state(scaling, 100.0)
    state = decide(scaling, state, Observation(0, ((101.0, 1.0, 0.0),)), 101.0)[1]
    state = decide(scaling, state, zero(105.0, 1), 105.0)[1]
    d, _ = decide(scaling, state, zero(108.0, 1), 108.0)
    assert d.desired == 1 and "holding" in d.reason and d.stands_until == 111.0
    # Without a ready pod the next decide leaves Active: no promise.
    d, _ = decide(scaling, state, zero(108.0, 0), 108.0)
    assert "holding" in d.reason and d.stands_until == -math.inf


@pytest.mark.parametrize("delay", [1, 20])  # 1: the shortest delay there is
def test_a_scale_down_delay_promises_only_zero(delay: int) -> None:
    scaling = {"stableWindowSeconds": 6, "scaleDownDelaySeconds": delay,
               "scaleToZeroGracePeriodSeconds": 2}
    state, now = settled(scaling)
    d, state = decide(scaling, state, zero(now, 1), now)
    assert d.desired == 1 and d.stands_until == -math.inf
    t = now
    while d.desired:
        t += GRID
        d, state = decide(scaling, state, zero(t, 1), t)
    assert d.stands_until == math.inf


def feed(tracker: ConcurrencyTracker, events: list[tuple[float, int]], until: float) -> None:
    while events and events[0][0] <= until:
        at, delta = events.pop(0)
        if delta > 0:
            tracker.start(at)
        else:
            tracker.finish(at)


@pytest.mark.parametrize("seed", range(8))
def test_the_scaler_decides_as_deciding_every_tick(seed: int) -> None:
    rng = random.Random(seed)
    scaling = random_scaling(rng)
    # Requests on a quarter-second grid (exact sums), in bursts with long gaps.
    events: list[tuple[float, int]] = []
    t = 1.0
    while t < 450:
        t += rng.choice([0.25, 0.5, 3.0, 40.0, 90.0, 200.0])
        length = rng.choice([0.25, 1.0, 5.0])
        events += [(t, 1), (t + length, -1)]
    events.sort(key=lambda e: (e[0], -e[1]))
    trackers = (ConcurrencyTracker(0.0), ConcurrencyTracker(0.0))
    queues = (list(events), list(events))
    skipping, every = FunctionScaler(), FunctionScaler()
    ready, kept, skipped, decided = 0, None, 0, 0
    now = 0.0
    while now < 500:
        now += GRID
        poke = rng.random() < 0.02
        samples = []
        for tracker, queue in zip(trackers, queues, strict=True):
            feed(tracker, queue, now)
            samples.append(tracker.take(now))
        d = skipping.step(scaling, samples[0], ready, now, force=poke)
        want = every.step(scaling, samples[1], ready, now, force=True)
        assert want is not None
        if d is None:
            skipped += 1
            assert kept is not None and (kept.desired, kept.panic) == (want.desired, want.panic)
        else:
            decided += 1
            assert d == want  # every field: the same window values, to the last bit
            kept = d
        if rng.random() < 0.3 and want.desired is not None:
            ready = want.desired
    assert skipped > 0 and decided > 0


def test_the_scaler_decides_when_something_happens() -> None:
    scaling: dict[str, Any] = {"stableWindowSeconds": 60}
    tracker = ConcurrencyTracker(0.0)
    scaler = FunctionScaler()
    tracker.start(9.0)
    tracker.finish(10.0)
    assert scaler.step(scaling, tracker.take(10.0), 1, 10.0) is not None  # the first
    d = scaler.decision
    assert d is not None and d.stands_until == 70.0
    assert scaler.step(scaling, tracker.take(12.0), 1, 12.0) is None  # stands
    assert scaler.step(scaling, tracker.take(14.0), 2, 14.0) is not None  # ready changed
    assert scaler.step(scaling, tracker.take(16.0), 2, 16.0) is None
    assert scaler.step(scaling, tracker.take(18.0), 2, 18.0, force=True) is not None  # poke
    assert scaler.step({"stableWindowSeconds": 30}, tracker.take(20.0), 2, 20.0) is not None
    tracker.start(21.0)
    assert scaler.step({"stableWindowSeconds": 30}, tracker.take(22.0), 2, 22.0) is not None
    tracker.finish(22.5)  # started and finished within one tick
    assert scaler.step({"stableWindowSeconds": 30}, tracker.take(24.0), 2, 24.0) is not None
    tracker.start(25.0)
    tracker.finish(25.0)  # no concurrency, but a request: rps sees it
    assert scaler.step({"stableWindowSeconds": 30}, tracker.take(26.0), 2, 26.0) is not None
    d = scaler.decision
    assert d is not None
    past = d.stands_until
    assert scaler.step({"stableWindowSeconds": 30}, tracker.take(past), 2, past) is not None
