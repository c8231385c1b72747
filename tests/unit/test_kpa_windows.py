"""The KPA's window bookkeeping against its definition.

``decide`` keeps the stable window's totals running (exact integers) and finds the panic
window from its newest intervals; the definition is the time-weighted mean over the covered part of
``(now - window, now]`` of every interval kept. With values on a binary grid (times in
quarter seconds, concurrency in eighths) every sum is exact in floating point too, so the
two must agree to the last bit, and so must every decision taken from them.
"""

from __future__ import annotations

import math
import random

import pytest

from allinone.autoscaler import kpa
from allinone.autoscaler.kpa import KPAState, Observation, decide, initial_state

Interval = tuple[float, float, float, float]


def defined_average(intervals: tuple[Interval, ...], now: float, window: float,
                    column: int) -> float:
    """The window value by its definition: every interval, its overlap with the window."""
    lo = now - window
    covered = area = 0.0
    for iv in intervals:
        overlap = min(iv[1], now) - max(iv[0], lo)
        if overlap > 0:
            covered += overlap
            area += overlap * iv[column]
    return area / covered if covered > 0 else 0.0


def panic_window(scaling: dict[str, float]) -> float:
    return max(1.0, math.floor(
        scaling["stableWindowSeconds"] * scaling["panicWindowPercentage"] / 100.0 + 0.5))


@pytest.mark.parametrize("ahead", [0.0, 1.75])
@pytest.mark.parametrize("seed", range(12))
def test_running_totals_agree_with_the_definition(seed: int, ahead: float) -> None:
    # ``ahead``: samples may be stamped up to that many seconds after ``now`` (a clock
    # read a moment later than the tick's); the intervals ending after ``now`` count only
    # up to ``now``, and the running totals must swap them for their part inside.
    rng = random.Random(seed)
    scaling = {"stableWindowSeconds": float(rng.choice([6, 10, 30, 60, 120])),
               "panicWindowPercentage": float(rng.choice([5, 10, 25, 50]))}
    metric_column = 2
    if rng.random() < 0.5:
        scaling["metric"] = "rps"  # type: ignore[assignment]
        metric_column = 3
    now = 1000.0
    state = initial_state(scaling, now, ready_pods=1)
    last = now
    ready = 1
    for _ in range(400):
        now += rng.choice([0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 3.75])
        samples = []
        # Sometimes nothing (a gap the next sample covers), sometimes several.
        for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
            at = last + rng.choice([0.25, 0.5, 1.0, 2.0])
            if at <= now + ahead:
                level = rng.choice([0.0, 0.0, 0.125, 1.0, 7.5, 40.0])
                samples.append((at, level * rng.randint(0, 8), rng.randint(0, 64) / 8))
                last = at
        rng.shuffle(samples)  # any order, as the Observation allows
        ready = max(0, ready + rng.choice([-1, 0, 0, 1]))
        d, after = decide(scaling, state, Observation(ready, tuple(samples), 0), now)
        if after.last_sample_at is None:
            state = after
            continue
        assert d.stable_concurrency == defined_average(
            after.samples, now, scaling["stableWindowSeconds"], metric_column)
        assert d.panic_concurrency == defined_average(
            after.samples, now, panic_window(scaling), metric_column)
        # Kept: exactly the intervals ending inside the stable window, in time order.
        assert all(iv[1] > now - scaling["stableWindowSeconds"] for iv in after.samples)
        assert all(a[1] == b[0] for a, b in zip(after.samples[:-1], after.samples[1:], strict=True))
        assert after.window_sums == kpa._sums(after.samples)
        # A state that lost its totals (built by hand) decides the same.
        redo, _ = decide(scaling, KPAState(**{**state.__dict__, "window_sums": None}),
                         Observation(ready, tuple(samples), 0), now)
        assert redo == d
        state = after


def test_a_window_of_zeros_reads_exactly_zero_after_any_traffic() -> None:
    """No rounding crumb survives the intervals that made it: after an hour of
    non-binary values and then a stable window of idleness, the window is 0, so the
    function can scale to zero (ceil(1e-17 / 7) would be 1 pod forever)."""
    rng = random.Random(7)
    state = initial_state({}, 0.0, ready_pods=1)
    now = 0.0
    for _ in range(1800):
        now += 2.0 + rng.random() / 10
        d, state = decide({}, state, Observation(1, ((now, rng.random() * 13.7),), 1), now)
    assert d.stable_concurrency > 0
    for _ in range(40):
        now += 2.0 + rng.random() / 10
        d, state = decide({}, state, Observation(1, ((now, 0.0),), 0), now)
    assert d.stable_concurrency == 0.0
    assert d.panic_concurrency == 0.0
    assert state.window_sums is not None and state.window_sums[1:] == (0, 0)


def test_exact_units_round_trip() -> None:
    for x in (0.0, 1.0, 0.1, 2.0000000000000284, 5e-324, 1.7976931348623157e308, 1 / 3):
        assert kpa._exact(x) / kpa._EXACT_ONE == x
    assert kpa._exact(0.1) + kpa._exact(0.2) - kpa._exact(0.1) == kpa._exact(0.2)
