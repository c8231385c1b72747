"""Knative Serving's own autoscaler_test.go scenarios, replayed against kpa.scale.

The scenarios and Knative's expected values are data (data/knative_autoscaler_test.yaml,
see its header for the format); this file only drives them. Excess burst capacity is
compared within +-1, as Knative's test does (its approxEquateInt32).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from allinone.autoscaler.kpa import DeciderSpec, KPAState, new_scaler_state, scale

DATA = Path(__file__).parent / "data" / "knative_autoscaler_test.yaml"
SCENARIOS: list[dict[str, Any]] = yaml.safe_load(DATA.read_text())["scenarios"]
UTILIZATION = 0.75  # Knative's test presumes 75 %


def _spec(raw: dict[str, Any], base: DeciderSpec | None = None) -> DeciderSpec:
    raw = dict(raw)
    if "test_autoscaler" in raw:
        target, tbc = raw.pop("test_autoscaler")
        base = DeciderSpec(target_value=target, total_value=target / UTILIZATION,
                           target_burst_capacity=tbc, panic_threshold=2,
                           max_scale_up_rate=10, max_scale_down_rate=10, stable_window=60)
    raw.pop("metric", None)  # the observed values are given; the metric only names them
    if base is None:
        return DeciderSpec(**{"reachable": True, **raw})
    return replace(base, **raw)


def _expected_ebc(want: int | list[float]) -> int:
    if isinstance(want, list):
        tot_cap, target_bc, recorded, pods = want
        return math.floor(tot_cap / UTILIZATION * pods - target_bc - recorded)
    return want


def test_every_scenario_of_the_go_file_is_here() -> None:
    names = {s["name"].split("/")[0] for s in SCENARIOS}
    left_out = {"TestCantCountPods", "TestNewFail"}  # the pod counter cannot fail here
    go_tests = {  # every func Test* of autoscaler_test.go at the commit in the data file
        "TestAutoscalerScaleDownDelay", "TestAutoscalerScaleDownDelayNotReachable",
        "TestAutoscalerScaleDownDelayZero", "TestAutoscalerNoDataNoAutoscale",
        "TestAutoscalerStartMetrics", "TestAutoscalerMetrics", "TestAutoscalerMetricsWithRPS",
        "TestAutoscalerStableModeIncreaseWithConcurrencyDefault",
        "TestAutoscalerStableModeIncreaseWithRPS", "TestAutoscalerUnpanicAfterSlowIncrease",
        "TestAutoscalerExtendPanicWindow", "TestAutoscalerStableModeDecrease",
        "TestAutoscalerStableModeNoTrafficScaleToZero", "TestAutoscalerActivationScale",
        "TestAutoscalerPanicModeExponentialTrackAndStabilize", "TestAutoscalerScale",
        "TestAutoscalerPanicThenUnPanicScaleDown", "TestAutoscalerRateLimitScaleUp",
        "TestAutoscalerRateLimitScaleDown", "TestCantCountPods",
        "TestAutoscalerUseOnePodAsMinimumIfEndpointsNotFound", "TestAutoscalerUpdateTarget",
        "TestStartInPanicMode", "TestNewFail",
    }
    assert names == go_tests - left_out


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_knative_scenario(scenario: dict[str, Any]) -> None:
    spec = _spec(scenario["spec"])
    ready = scenario.get("ready", 1)
    state: KPAState = new_scaler_state(0.0, ready)
    if "start_panic" in scenario:
        assert (state.panic_time is not None) is scenario["start_panic"]
    if "start_max_panic_pods" in scenario:
        assert state.max_panic_pods == scenario["start_max_panic_pods"]
    if "state" in scenario:
        st = scenario["state"]
        state = replace(state, panic_time=float(st["panic_time"]),
                        max_panic_pods=st["max_panic_pods"])
    for i, step in enumerate(scenario["steps"]):
        if "spec" in step:
            spec = _spec(step["spec"], spec)
        ready = step.get("ready", ready)
        result, state = scale(spec, state, ready, step["stable"], step["panic"],
                              float(step["at"]))
        where = f"step {i} at {step['at']} s"
        assert result.valid is not step.get("invalid", False), where
        assert result.desired == step["want"], where
        assert abs(result.excess_burst_capacity - _expected_ebc(step["ebc"])) <= 1, where
        if "panic_time" in step:
            want_pt = step["panic_time"]
            assert state.panic_time == (None if want_pt is None else float(want_pt)), where
        if "in_panic" in step:
            assert (state.panic_time is not None) is step["in_panic"], where
