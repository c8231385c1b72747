"""Scaling fields accept exactly Knative's ranges; anything else is a 400 naming it."""

from __future__ import annotations

from typing import Any

import pytest

from allinone.objects import DEFAULT_SCALING, ValidationError, normalize_spec

# (field, value accepted at the edge of Knative's range, value just outside, words of the
# message that name the range)
EDGES: list[tuple[str, Any, Any, str]] = [
    ("stableWindowSeconds", 6, 5, "between 6 and 3600"),
    ("stableWindowSeconds", 3600, 3601, "between 6 and 3600"),
    ("stableWindowSeconds", 60, 60.5, "whole number"),
    ("panicWindowPercentage", 1, 0.9, "between 1 and 100"),
    ("panicWindowPercentage", 100, 100.1, "between 1 and 100"),
    ("panicThresholdPercentage", 110, 109.9, "between 110 and 1000"),
    ("panicThresholdPercentage", 1000, 1000.5, "between 110 and 1000"),
    ("targetUtilizationPercentage", 1, 0.5, "between 1 and 100"),
    ("targetUtilizationPercentage", 100, 101, "between 1 and 100"),
    ("target", 0.01, 0.009, "between 0.01 and"),
    ("scaleDownDelaySeconds", 0, -1, "between 0 and 3600"),
    ("scaleDownDelaySeconds", 3600, 3601, "between 0 and 3600"),
    ("scaleDownDelaySeconds", 3, 2.5, "whole number"),
    ("scaleToZeroPodRetentionSeconds", 0, -0.5, "between 0 and 3600"),
    ("scaleToZeroPodRetentionSeconds", 3600, 3600.5, "between 0 and 3600"),
    ("scaleToZeroGracePeriodSeconds", 0.1, 0, "greater than 0"),
    ("maxScaleUpRate", 1.001, 1, "greater than 1"),
    ("maxScaleDownRate", 1.001, 1, "greater than 1"),
    ("targetBurstCapacity", -1, -2, "between -1 and"),
    ("targetBurstCapacity", 0, -0.5, "-1 for unlimited"),
    ("minScale", 0, -1, "between 0 and"),
    ("initialScale", 0, -1, "between 0 and"),
    ("containerConcurrency", 0, -1, "between 0 and"),
    ("activationScale", 2, 0, "between 1 and"),
]


@pytest.mark.parametrize(("field", "ok", "bad", "words"), EDGES,
                         ids=[f"{e[0]}={e[2]}" for e in EDGES])
def test_knative_ranges(field: str, ok: Any, bad: Any, words: str) -> None:
    assert normalize_spec({"scaling": {field: ok}})["scaling"][field] == ok
    with pytest.raises(ValidationError) as err:
        normalize_spec({"scaling": {field: bad}})
    assert f"spec.scaling.{field}" in str(err.value)
    assert words in str(err.value)


def test_metric_is_concurrency_or_rps() -> None:
    assert normalize_spec({"scaling": {"metric": "rps"}})["scaling"]["metric"] == "rps"
    with pytest.raises(ValidationError, match=r"spec.scaling.metric must be one of"):
        normalize_spec({"scaling": {"metric": "cpu"}})


@pytest.mark.parametrize(("scaling", "ok"), [
    ({"activationScale": 1, "minScale": 5}, True),  # 1 is "off", Knative's absent annotation
    ({"activationScale": 2}, True),
    ({"activationScale": 3, "minScale": 4}, False),  # Knative: min-scale > activation-scale
    ({"activationScale": 5, "maxScale": 4}, False),  # Knative: max-scale < activation-scale
    ({"activationScale": 4, "minScale": 4, "maxScale": 4}, True),
])
def test_activation_scale_within_min_and_max(scaling: dict[str, Any], ok: bool) -> None:
    if ok:
        normalize_spec({"scaling": scaling})
    else:
        with pytest.raises(ValidationError, match=r"spec\.scaling\.activationScale must be 1"):
            normalize_spec({"scaling": scaling})


def test_nan_and_infinity_are_refused() -> None:
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValidationError, match="must be a number"):
            normalize_spec({"scaling": {"target": bad}})


def test_every_default_is_in_range() -> None:
    assert normalize_spec({"scaling": dict(DEFAULT_SCALING)})["scaling"] == DEFAULT_SCALING
