"""The throttler on its own: admission, the bounded FIFO queue, pod choice respecting
containerConcurrency, draining, and which pod failures fail waiting requests. Pure:
tickets are strings, time is a number passed in."""

from __future__ import annotations

import random

import pytest

from allinone.activator.balancer import Endpoint
from allinone.activator.throttler import Throttler


def throttler(*pods: str, queue_limit: int = 3) -> Throttler[str]:
    t: Throttler[str] = Throttler(queue_limit, random.Random(7))
    for p in pods:
        t.add(Endpoint(p, f"/pods/{p}/http.sock"))
    return t


def test_acquire_counts_in_flight_and_release_gives_it_back() -> None:
    t = throttler("a")
    ep = t.acquire(0)
    assert ep is not None and ep.pod == "a" and ep.in_flight == 1
    assert t.release(ep) == (False, [])
    assert ep.in_flight == 0


@pytest.mark.parametrize(("cc", "pods", "admitted"), [
    (1, 1, 1), (1, 3, 3), (2, 2, 4), (3, 1, 3), (4, 2, 8), (10, 3, 30),
])
def test_container_concurrency_bounds_what_is_handed_out(cc: int, pods: int,
                                                         admitted: int) -> None:
    t = throttler(*(f"p{i}" for i in range(pods)))
    got = [t.acquire(cc) for _ in range(admitted + 5)]
    assert sum(1 for g in got if g is not None) == admitted
    assert all(e.in_flight == cc for e in t.endpoints.values())


@pytest.mark.parametrize(("cc", "capacity", "per_pod"), [
    (0, 200, 200),    # "unlimited" is bounded by what a pod's shim serves at once
    (500, 200, 200),  # so is a containerConcurrency above it
    (50, 200, 50),
    (0, 7, 7),
])
def test_pod_capacity_bounds_every_pod(cc: int, capacity: int, per_pod: int) -> None:
    t: Throttler[str] = Throttler(3, random.Random(1), pod_capacity=capacity)
    for p in ("a", "b"):
        t.add(Endpoint(p, f"/{p}"))
    got = [t.acquire(cc) for _ in range(2 * per_pod + 10)]
    assert sum(1 for g in got if g is not None) == 2 * per_pod
    assert [e.in_flight for e in t.endpoints.values()] == [per_pod, per_pod]


def test_least_in_flight_wins() -> None:
    t = throttler("a", "b", "c")
    t.endpoints["a"].in_flight, t.endpoints["b"].in_flight, t.endpoints["c"].in_flight = 5, 1, 3
    ep = t.acquire(10)
    assert ep is not None and ep.pod == "b"


def test_excluded_pods_are_skipped() -> None:
    t = throttler("a", "b")
    ep = t.acquire(1, excluded={"a"})
    assert ep is not None and ep.pod == "b"
    assert t.acquire(1, excluded={"a"}) is None


def test_queue_is_bounded_and_fifo() -> None:
    t = throttler(queue_limit=2)
    assert t.enqueue("r1", deadline=10) and t.enqueue("r2", deadline=10)
    assert not t.enqueue("r3", deadline=10)  # the caller answers 503 at once
    assert t.queued() == 2
    old, woken = t.add(Endpoint("a", "/a"))
    assert old is None and woken == ["r1", "r2"] and t.queued() == 0


def test_a_freed_slot_wakes_one_waiter_in_arrival_order() -> None:
    t = throttler("a")
    ep = t.acquire(1)
    assert ep is not None and t.acquire(1) is None
    for r in ("r1", "r2", "r3"):
        assert t.enqueue(r, deadline=10)
    assert t.release(ep) == (False, ["r1"])
    assert t.queued() == 2


def test_dequeue_and_expiry_by_the_time_passed_in() -> None:
    t = throttler()
    t.enqueue("early", deadline=5)
    t.enqueue("late", deadline=9)
    t.enqueue("gone", deadline=9)
    t.dequeue("gone")
    t.dequeue("never-queued")  # harmless
    assert t.expired(now=4.9) == []
    assert t.expired(now=5.0) == ["early"]
    assert t.expired(now=100) == ["late"]
    assert t.queued() == 0


def test_draining_pod_gets_nothing_new_and_reports_drained_once() -> None:
    t = throttler("a", "b")
    a = t.endpoints["a"]
    a.in_flight = 2
    assert t.drain("a") is a and t.ready_count() == 1
    assert all(t.acquire(0) is t.endpoints["b"] for _ in range(5))
    t.enqueue("r1", deadline=10)
    assert t.release(a) == (False, [])  # a draining pod's slot wakes nobody
    assert t.release(a) == (True, [])
    assert t.remove("a") is a and t.remove("a") is None
    assert t.drain("unknown") is None


def test_a_pod_replaced_under_the_same_name_hands_back_the_old_endpoint() -> None:
    t = throttler("a")
    old = t.endpoints["a"]
    replaced, _ = t.add(Endpoint("a", "/a2"))
    assert replaced is old and t.endpoints["a"].address == "/a2"


@pytest.mark.parametrize(("arrived", "failed_at", "ready_pods", "fails"), [
    (10.0, 11.0, 0, True),    # waited for a pod that then failed to start
    (10.0, 10.0, 0, True),    # same instant counts
    (12.0, 11.0, 0, False),   # arrived after the failure: waits for the next pod
    (10.0, 11.0, 1, False),   # another pod is ready: it will serve
])
def test_start_failures_fail_only_requests_that_waited_for_them(
        arrived: float, failed_at: float, ready_pods: int, fails: bool) -> None:
    t = throttler(*(f"p{i}" for i in range(ready_pods)))
    t.enqueue("r", deadline=100)
    assert t.pod_failed_to_start(failed_at, "import error") == ["r"]  # all re-check
    assert (t.start_failure_for(arrived) == "import error") is fails
