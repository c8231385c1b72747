"""The KPA's edges, as whole outputs: no-data decisions, rounding, reasons, bounds.

Each test pins a decision (or a :func:`scale` result) exactly, so that a change to a
boundary, a reason a user reads in ``allinone function get`` or a field of the
Decision fails by name. Behaviour only (decide/scale in, outputs out), on the manual
clock: T0 and whole seconds.
"""

from __future__ import annotations

from dataclasses import replace

from allinone.autoscaler.kpa import (
    DeciderSpec,
    Decision,
    Observation,
    ScaleResult,
    decide,
    decider_spec,
    initial_state,
    new_scaler_state,
    scale,
)

T0 = 1000.0


def spec(**kw: float) -> DeciderSpec:
    base = dict(target_value=7.0, total_value=10.0, target_burst_capacity=0.0,
                panic_threshold=2.0, max_scale_up_rate=1000.0, max_scale_down_rate=2.0,
                stable_window=60.0)
    base.update(kw)
    return DeciderSpec(**base)  # type: ignore[arg-type]


def test_no_data_leaves_replicas_alone_and_says_so_exactly() -> None:
    # Two ready pods at start: Knative starts in panic; no sample yet -> "no data".
    state = initial_state({}, T0, ready_pods=2)
    d, after = decide({}, state, Observation(ready_pods=2), T0 + 1)
    assert d == Decision(None, 0.0, 0.0, True, "no data", metric="concurrency")
    assert after.last_desired is None
    d, _ = decide({"metric": "rps"}, initial_state({}, T0), Observation(0), T0 + 1)
    assert d == Decision(None, 0.0, 0.0, False, "no data", metric="rps")


def test_min_scale_without_data_is_a_whole_decision() -> None:
    scaling = {"minScale": 2, "metric": "rps"}
    d, after = decide(scaling, initial_state(scaling, T0, ready_pods=1), Observation(1),
                      T0 + 1)
    assert d == Decision(2, 0.0, 0.0, False, "minScale, no data yet", metric="rps")
    assert after.last_desired == 2


def test_initial_scale_once_reached_no_longer_asks_for_pods() -> None:
    scaling = {"initialScale": 3}
    reached = initial_state(scaling, T0, ready_pods=3)
    assert reached.initial_scale_reached is True
    d, _ = decide(scaling, reached, Observation(0), T0 + 1)
    assert (d.desired, d.reason) == (None, "no data")
    pending = initial_state(scaling, T0, ready_pods=2)
    assert pending.initial_scale_reached is False
    d, _ = decide(scaling, pending, Observation(2), T0 + 1)
    assert (d.desired, d.reason) == (3, "initial scale, no data yet")


def test_initial_state_marks_active_and_panic_by_ready_pods() -> None:
    assert initial_state({}, T0, ready_pods=0).active_since is None
    one = initial_state({}, T0, ready_pods=1)
    assert (one.created_at, one.active_since, one.panic_time, one.max_panic_pods) == (
        T0, T0, None, 1)
    two = new_scaler_state(T0, 2)
    assert (two.created_at, two.panic_time, two.max_panic_pods) == (T0, T0, 2)


def test_panic_window_rounds_half_up_to_whole_seconds_at_least_one() -> None:
    # 6 s x 10 % = 0.6 s -> 1 s; 10 s x 15 % = 1.5 s -> 2 s. Load 0 then 10.
    samples = ((T0 + 1, 0.0), (T0 + 2, 10.0))
    for scaling, panic in (({"stableWindowSeconds": 6, "panicWindowPercentage": 10}, 10.0),
                           ({"stableWindowSeconds": 10, "panicWindowPercentage": 15}, 5.0)):
        d, _ = decide(scaling, initial_state(scaling, T0, ready_pods=2),
                      Observation(2, samples), T0 + 2)
        assert d.panic_concurrency == panic, scaling


def test_decider_spec_fractions_and_activation_scale() -> None:
    assert decider_spec({}).panic_threshold == 2.0
    assert decider_spec({"activationScale": 1}).activation_scale == 0
    assert decider_spec({"activationScale": 2}).activation_scale == 2


def test_steady_load_under_a_scale_down_delay_is_not_reported_as_held() -> None:
    scaling = {"scaleDownDelaySeconds": 10, "stableWindowSeconds": 6}
    state = initial_state(scaling, T0, ready_pods=3)
    state = replace(state, panic_time=None)
    for t in range(1, 13):
        d, state = decide(scaling, state, Observation(3, ((T0 + t, 20.0),)), T0 + t)
        assert (d.desired, d.reason) == (3, "stable"), t
    # The load goes: the stable count drops to 1, the delay keeps 3 and says so.
    for t in range(13, 20):
        d, state = decide(scaling, state, Observation(3, ((T0 + t, 0.0),)), T0 + t)
    assert (d.desired, d.reason) == (3, "stable, held by the 10 s scale-down delay")


def test_requests_per_second_default_to_zero_and_count_as_given() -> None:
    scaling = {"metric": "rps"}
    d, _ = decide(scaling, initial_state(scaling, T0, ready_pods=1),
                  Observation(1, ((T0 + 1, 5.0),)), T0 + 1)
    assert d.stable_concurrency == 0.0  # a (time, concurrency) sample carries no rps
    d, _ = decide(scaling, initial_state(scaling, T0, ready_pods=1),
                  Observation(1, ((T0 + 1, 5.0, 0.5),)), T0 + 1)
    assert d.stable_concurrency == 0.5


def test_a_sample_at_an_old_time_is_skipped_not_the_end_of_the_batch() -> None:
    state = initial_state({}, T0, ready_pods=1)
    _, state = decide({}, state, Observation(1, ((T0 + 1, 10.0),)), T0 + 1)
    d, _ = decide({}, state, Observation(1, ((T0 + 1, 99.0), (T0 + 2, 30.0))), T0 + 2)
    assert d.stable_concurrency == 20.0  # (10 + 30) / 2; the repeated T0+1 ignored


def test_old_samples_leave_the_window_empty_and_read_zero() -> None:
    state = initial_state({}, T0, ready_pods=1)
    _, state = decide({}, state, Observation(1, ((T0 + 1, 5.0),)), T0 + 1)
    d, _ = decide({}, state, Observation(1), T0 + 200)
    assert (d.stable_concurrency, d.panic_concurrency) == (0.0, 0.0)


def test_never_active_function_goes_to_zero_at_once_and_is_inactive() -> None:
    d, after = decide({}, initial_state({}, T0), Observation(0, ((T0 + 1, 0.0),)), T0 + 1)
    assert (d.desired, d.reason) == (0, "scale to zero")
    assert (after.active_since, after.inactive_since) == (None, T0 + 1)


def test_load_at_zero_without_held_requests_is_not_a_poke() -> None:
    d, _ = decide({}, initial_state({}, T0), Observation(0, ((T0 + 1, 5.0),)), T0 + 1)
    assert (d.desired, d.reason) == (1, "stable")


def test_bounds_equal_to_the_count_change_no_reason() -> None:
    # ceil(10 / 7) = 2 on 2 ready, minScale = maxScale = 2: neither raised nor capped.
    scaling = {"minScale": 2, "maxScale": 2}
    d, _ = decide(scaling, initial_state(scaling, T0, ready_pods=2),
                  Observation(2, ((T0 + 1, 10.0),)), T0 + 1)
    assert (d.desired, d.reason) == (2, "panic")  # Knative starts 2 ready pods in panic
    state = replace(initial_state(scaling, T0, ready_pods=2), panic_time=None)
    d, _ = decide(scaling, state, Observation(2, ((T0 + 1, 10.0),)), T0 + 1)
    assert (d.desired, d.reason) == (2, "stable")


def test_initial_scale_equal_to_the_count_keeps_the_stable_reason() -> None:
    scaling = {"initialScale": 2, "panicThresholdPercentage": 1000}
    d, _ = decide(scaling, initial_state(scaling, T0, ready_pods=1),
                  Observation(1, ((T0 + 1, 10.0),)), T0 + 1)
    assert (d.desired, d.reason) == (2, "stable")


def test_going_inactive_keeps_the_last_decided_count_else_the_ready_pods() -> None:
    # Active since 100 s, idle now: Inactive, pods kept for the grace period.
    restarted = initial_state({}, T0 - 100, ready_pods=1)  # nothing decided yet
    d, after = decide({}, restarted, Observation(1, ((T0, 0.0),)), T0)
    assert (d.desired, d.reason) == (1, "Inactive: pods kept for the grace period")
    assert after.inactive_since == T0
    d, _ = decide({}, after, Observation(1, ((T0 + 1, 0.0),)), T0 + 1)
    assert (d.desired, d.reason) == (1, "Inactive: pods kept until 30 s after going Inactive")
    decided_two = replace(restarted, last_desired=2)
    d, _ = decide({}, decided_two, Observation(1, ((T0, 0.0),)), T0)
    assert d.desired == 2


def test_scale_without_a_value_is_invalid_and_changes_nothing() -> None:
    state = new_scaler_state(T0, 1)
    for stable, panic in ((None, 5.0), (5.0, None)):
        assert scale(spec(), state, 1, stable, panic, T0) == (ScaleResult(0, 0, False), state)
    result, _ = scale(spec(), state, 1, 5.0, 5.0, T0)
    assert result.valid is True


def test_excess_burst_capacity_with_a_fractional_burst() -> None:
    # floor(2 x 10 - 0.5 - 3) = 16.
    result, _ = scale(spec(target_burst_capacity=0.5), new_scaler_state(T0, 0), 2, 3.0, 3.0,
                      T0)
    assert result.excess_burst_capacity == 16


def test_activation_scale_in_panic_applies_only_to_a_non_zero_panic_count() -> None:
    # In panic (since 1 s), ready 2 -> at least floor(2 / 2) = 1 pod.
    state = replace(new_scaler_state(T0 - 1, 2), max_panic_pods=0)
    result, _ = scale(spec(activation_scale=3), state, 2, 0.0, 0.0, T0)
    assert result.desired == 1  # nothing observed: activation scale does not apply
    result, _ = scale(spec(activation_scale=3), state, 2, 0.0, 5.0, T0)
    assert result.desired == 3  # ceil(5 / 7) = 1 > 0 -> raised to the activation scale


def test_a_sub_second_scale_down_delay_still_holds_within_its_bucket() -> None:
    s = spec(scale_down_delay=1.0)
    state = new_scaler_state(T0, 0)
    first, state = scale(s, state, 5, 35.0, 0.0, T0)  # ceil(35 / 7) = 5
    assert first.desired == 5
    second, _ = scale(s, state, 5, 0.0, 0.0, T0 + 0.5)  # same 2 s bucket
    assert second.desired == 5
