"""The dashboard's history: quantiles from histogram buckets, windows, bounded memory."""

from __future__ import annotations

import math

import pytest

from allinone.metrics import Metrics
from allinone.ui.history import Counters, History, Reading, quantile, read_counters

INF = math.inf


@pytest.mark.parametrize(("q", "before", "after", "expected"), [
    # 10 observations, all in (0.1, 0.2]: the median is halfway through the bucket
    (0.5, [(0.1, 0), (0.2, 0), (INF, 0)], [(0.1, 0), (0.2, 10), (INF, 10)], 0.15),
    # only the window's difference counts: 10 old fast ones are not in it
    (0.5, [(0.1, 10), (0.2, 10), (INF, 10)], [(0.1, 10), (0.2, 20), (INF, 20)], 0.15),
    # p95 of 19 fast and 1 slow beyond the last bound: the last finite bound
    (0.95, [(0.1, 0), (1.0, 0), (INF, 0)], [(0.1, 19), (1.0, 19), (INF, 20)], 0.1),
    (0.99, [(0.1, 0), (1.0, 0), (INF, 0)], [(0.1, 10), (1.0, 10), (INF, 20)], 1.0),
    # nothing observed in the window
    (0.5, [(0.1, 5), (INF, 5)], [(0.1, 5), (INF, 5)], None),
    (0.5, [], [], None),
    # a reset histogram (different shape) counts from zero
    (0.5, [(0.5, 3), (INF, 3)], [(0.1, 0), (0.2, 4), (INF, 4)], 0.15),
])
def test_quantile(q: float, before: list[tuple[float, float]],
                  after: list[tuple[float, float]], expected: float | None) -> None:
    got = quantile(q, before, after)
    assert got == (None if expected is None else pytest.approx(expected))


def reading(requests: float, buckets: list[tuple[float, float]], ready: int = 1,
            cold: float = 0) -> Reading:
    return Reading(desired=ready, ready=ready, stable=1.0, panic=2.0, panic_mode=False,
                   counters=Counters(requests, cold, buckets))


def test_rps_and_latency_over_the_window() -> None:
    h = History(keep_seconds=60, window_seconds=10)
    h.record(100.0, {"f": reading(0, [(0.01, 0), (INF, 0)])})
    h.record(102.0, {"f": reading(20, [(0.01, 20), (INF, 20)])})
    p = h.latest()["f"]
    assert p["rps"] == 10.0 and p["p50"] == pytest.approx(5.0)  # ms
    assert p["requests"] == 20
    # 12 s later the first reading has left the window: 20 new requests over 10 s
    h.record(112.0, {"f": reading(40, [(0.01, 40), (INF, 40)])})
    assert h.latest()["f"]["rps"] == pytest.approx(2.0)


def test_points_are_kept_for_keep_seconds_and_deleted_functions_forgotten() -> None:
    h = History(keep_seconds=10, window_seconds=4)
    for t in range(0, 30, 2):
        h.record(float(t), {"f": reading(t, []), "g": reading(0, [])})
    series = h.series("f")
    assert series is not None and series[0]["t"] >= 18 and series[-1]["t"] == 28
    h.record(30.0, {"f": reading(30, [])})
    assert h.series("g") is None and set(h.latest()) == {"f"}


def test_first_point_has_no_rate() -> None:
    h = History()
    h.record(5.0, {"f": reading(100, [(0.1, 100), (INF, 100)], ready=3, cold=2)})
    p = h.latest()["f"]
    assert p["rps"] == 0.0 and p["p50"] is None and p["ready"] == 3 and p["coldStarts"] == 2


def test_read_counters_from_the_activator_metrics() -> None:
    m = Metrics()
    m.invocations.labels("f", "200").inc(3)
    m.invocations.labels("f", "500").inc(1)
    m.cold_starts.labels("f").inc()
    m.latency.labels("f").observe(0.004)
    m.invocations.labels("other", "200").inc(7)
    c = read_counters(m.registry, ["f", "absent"])
    assert c["f"].requests == 4 and c["f"].cold_starts == 1
    assert c["f"].buckets[-1] == (INF, 1.0)
    assert dict(c["f"].buckets)[0.005] == 1.0 and dict(c["f"].buckets)[0.0025] == 0.0
    assert c["absent"].requests == 0 and "other" not in c
