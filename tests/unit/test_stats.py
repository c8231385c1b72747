"""ConcurrencyTracker: time-weighted in-flight concurrency, with worked numbers."""

from __future__ import annotations

import pytest

from allinone.activator.stats import ConcurrencyTracker


def test_two_requests_for_half_the_interval_average_one() -> None:
    t = ConcurrencyTracker(10.0)
    t.start(10.0)
    t.start(10.0)
    t.finish(10.5)
    t.finish(10.5)
    s = t.take(11.0)
    # 2 in flight for 0.5 s, 0 for 0.5 s: (2 x 0.5 + 0 x 0.5) / 1 = 1.0.
    assert s.average_concurrency == 1.0
    assert (s.at, s.interval) == (11.0, 1.0)
    assert (s.requests_started, s.in_flight, s.last_request_at) == (2, 0, 10.5)


def test_staggered_requests() -> None:
    t = ConcurrencyTracker(0.0)
    t.start(0.0)  # A: 0.0 .. 2.0
    t.start(1.0)  # B: 1.0 .. 1.5
    t.finish(1.5)
    t.finish(2.0)
    # Area: 1 x 1.0 + 2 x 0.5 + 1 x 0.5 = 2.5 over 2 s -> 1.25.
    s = t.take(2.0)
    assert s.average_concurrency == pytest.approx(1.25)
    assert s.requests_started == 2


def test_requests_still_in_flight_carry_into_the_next_interval() -> None:
    t = ConcurrencyTracker(0.0)
    t.start(0.5)
    t.start(1.5)
    first = t.take(2.0)
    # 1 in flight for 1 s, 2 for 0.5 s: (1 + 1) / 2 = 1.0; both still in flight.
    assert (first.average_concurrency, first.in_flight, first.requests_started) == (1.0, 2, 2)
    t.finish(3.0)
    second = t.take(4.0)
    # 2 for 1 s, then 1 for 1 s: 3 / 2 = 1.5; nothing new started in this interval.
    assert second.average_concurrency == 1.5
    assert (second.interval, second.in_flight, second.requests_started) == (2.0, 1, 0)
    assert second.last_request_at == 3.0


def test_held_request_counts_for_the_whole_time_it_waits() -> None:
    # At zero a request is held 1.8 s for a cold start, then served in 0.2 s.
    t = ConcurrencyTracker(100.0)
    t.start(100.0)
    t.finish(102.0)
    s = t.take(102.0)
    assert s.average_concurrency == 1.0


def test_idle_interval_is_zero() -> None:
    t = ConcurrencyTracker(0.0)
    s = t.take(2.0)
    assert (s.average_concurrency, s.requests_started, s.last_request_at) == (0.0, 0, None)


def test_zero_length_take_reports_the_current_count() -> None:
    t = ConcurrencyTracker(5.0)
    t.start(5.0)
    t.start(5.0)
    t.start(5.0)
    s = t.take(5.0)
    assert (s.interval, s.average_concurrency, s.in_flight) == (0.0, 3.0, 3)


def test_takes_cover_back_to_back_intervals() -> None:
    # One request from 0.5 to 3.5, takes every second: 0.5, 1, 1, 0.5; total area 3.
    t = ConcurrencyTracker(0.0)
    t.start(0.5)
    averages = []
    for now in (1.0, 2.0, 3.0):
        averages.append(t.take(now).average_concurrency)
    t.finish(3.5)
    averages.append(t.take(4.0).average_concurrency)
    assert averages == [0.5, 1.0, 1.0, 0.5]


def test_without_a_start_time_the_first_call_starts_the_clock() -> None:
    t = ConcurrencyTracker()
    t.start(50.0)
    s = t.take(51.0)
    assert (s.interval, s.average_concurrency) == (1.0, 1.0)


def test_time_going_backwards_counts_as_no_time() -> None:
    t = ConcurrencyTracker(10.0)
    t.start(10.0)
    t.take(11.0)
    s = t.take(10.5)
    assert (s.at, s.interval, s.average_concurrency) == (11.0, 0.0, 1.0)


def test_finish_without_start_is_an_error() -> None:
    t = ConcurrencyTracker(0.0)
    with pytest.raises(RuntimeError):
        t.finish(1.0)
    assert t.in_flight == 0


def test_properties() -> None:
    t = ConcurrencyTracker(0.0)
    assert (t.in_flight, t.last_request_at) == (0, None)
    t.start(1.0)
    assert (t.in_flight, t.last_request_at) == (1, 1.0)
    t.finish(4.0)
    assert (t.in_flight, t.last_request_at) == (0, 4.0)
