"""The synthetic trace generator: shapes, seeds, reproducibility."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from allinone.simulator.generate import DAY, Shape, day_mix, generate, uniform


def arrivals(shape: Shape, seconds: float, seed: int = 1) -> list[float]:
    return generate({"f": shape}, seconds, seed).arrival


def test_same_seed_same_trace_bytes(tmp_path: Path) -> None:
    a = uniform("spiky", 3, 3600, seed=5, rate=0.5, spike_every=300, spike_size=20)
    b = uniform("spiky", 3, 3600, seed=5, rate=0.5, spike_every=300, spike_size=20)
    a.write_csv(tmp_path / "a.csv")
    b.write_csv(tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    c = uniform("spiky", 3, 3600, seed=6, rate=0.5, spike_every=300, spike_size=20)
    assert c.arrival != a.arrival


def test_adding_a_function_does_not_move_another() -> None:
    one = generate({"x": Shape("steady", rate=2)}, 600, 3)
    two = generate({"w": Shape("bursty", rate=5), "x": Shape("steady", rate=2)}, 600, 3)
    assert [t for n, t, _ in two.rows() if n == "x"] == one.arrival


def test_steady_rate() -> None:
    a = arrivals(Shape("steady", rate=5), 2000)
    assert abs(len(a) - 10000) < 4 * math.sqrt(10000)
    assert all(0 <= t < 2000 for t in a)


def test_diurnal_peaks_at_noon() -> None:
    a = arrivals(Shape("diurnal", rate=1, amplitude=0.9), DAY)
    night = sum(1 for t in a if t < 3 * 3600 or t >= 21 * 3600)
    noon = sum(1 for t in a if 9 * 3600 <= t < 15 * 3600)
    assert noon > 5 * night
    assert abs(len(a) - DAY) < 4 * math.sqrt(DAY)  # mean rate over a whole day


def test_bursty_is_silent_when_off() -> None:
    a = arrivals(Shape("bursty", rate=10, on=30, off=90), 1200)
    assert a and all(t % 120 < 30 for t in a)
    assert abs(len(a) - 10 * 30 * 10) < 4 * math.sqrt(3000)


def test_spiky_has_spikes_over_a_base() -> None:
    a = arrivals(Shape("spiky", rate=0.1, spike_every=100, spike_size=50), 2000)
    per_second = [0] * 2000
    for t in a:
        per_second[int(t)] += 1
    busy = [n for n in per_second if n >= 20]
    assert len(busy) >= 5  # about 20 spikes of 50 spread over one or two seconds
    assert max(per_second) <= 50 + 5


def test_rare_counts_per_day() -> None:
    a = arrivals(Shape("rare", per_day=48), DAY / 2)
    assert len(a) == 24


def test_lognormal_durations_have_the_median() -> None:
    t = generate({"f": Shape("steady", rate=20, duration_ms=100, sigma=0.5)}, 500, 2)
    d = sorted(t.duration)
    assert 0.09 < d[len(d) // 2] < 0.11
    assert d[0] != d[-1]
    fixed = generate({"f": Shape("steady", rate=5, duration_ms=40)}, 100, 2)
    assert set(fixed.duration) == {0.04}


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"kind": "flat"}, "unknown shape"),
    ({"kind": "steady", "rate": -1}, "rate"),
    ({"kind": "diurnal", "amplitude": 2}, "amplitude"),
    ({"kind": "bursty", "on": 0}, "on must be"),
])
def test_bad_shapes(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Shape(**kwargs)  # type: ignore[arg-type]


def test_day_mix_shape_of_the_benchmark() -> None:
    t = day_mix(seconds=3600)  # one hour of it: the full day is the benchmark's job
    assert len(t.functions) == 100
    assert 30000 < len(t) < 60000  # ~1.04 M a day, busier at noon than at 00:00-01:00
