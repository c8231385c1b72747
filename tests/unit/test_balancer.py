"""Pod choice: capacity, draining, least loaded, spread, first-available for low CC."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from allinone.activator.balancer import P2C_ABOVE, Endpoint, pick


def eps(*in_flight: int) -> list[Endpoint]:
    return [Endpoint(f"p{i}", f"127.0.0.1:{9000 + i}", n) for i, n in enumerate(in_flight)]


def test_least_loaded_is_chosen() -> None:
    endpoints = eps(3, 1, 2)
    assert pick(endpoints, 0, random.Random(1)) is endpoints[1]


def test_skips_draining() -> None:
    endpoints = eps(0, 5)
    endpoints[0].draining = True
    assert pick(endpoints, 0, random.Random(1)) is endpoints[1]
    endpoints[1].draining = True
    assert pick(endpoints, 0, random.Random(1)) is None


@pytest.mark.parametrize("cc", [1, 2, 3, 4, 10])
def test_none_when_full(cc: int) -> None:
    assert pick(eps(cc, cc, cc), cc, random.Random(1)) is None


def test_no_endpoints() -> None:
    assert pick([], 0, random.Random(1)) is None


@pytest.mark.parametrize(("cc", "pods"), [(1, 3), (2, 3), (3, 2), (4, 3), (5, 12)])
def test_never_exceeds_container_concurrency(cc: int, pods: int) -> None:
    rng = random.Random(7)
    endpoints = eps(*([0] * pods))
    for step in range(1, 3 * pods * cc + 1):  # bounded: never loops forever
        ep = pick(endpoints, cc, rng)
        if ep is None:
            break
        ep.in_flight += 1
        assert all(e.in_flight <= cc for e in endpoints)
        if step % 3 == 0:  # now and then one finishes, on a random busy pod
            busy = [e for e in endpoints if e.in_flight > 0]
            rng.choice(busy).in_flight -= 1
    # It filled every slot, no more, and then said "wait".
    assert [e.in_flight for e in endpoints] == [cc] * pods
    assert pick(endpoints, cc, rng) is None


def test_low_concurrency_takes_the_first_available_in_order() -> None:
    endpoints = eps(1, 0, 0)
    rng = random.Random(3)
    # CC 1: p0 is full, p1 is the first free one; p2 stays idle for scale-down.
    assert all(pick(endpoints, 1, rng) is endpoints[1] for _ in range(20))
    # CC 3: p0 still has room (1 < 3) and comes first, although p1 is emptier.
    assert pick(endpoints, 3, rng) is endpoints[0]
    endpoints[0].draining = True
    assert pick(endpoints, 3, rng) is endpoints[1]


def test_above_three_least_loaded_respects_capacity() -> None:
    endpoints = eps(0, 4, 1)
    endpoints[0].draining = True
    assert pick(endpoints, 4, random.Random(1)) is endpoints[2]


def test_ties_spread_across_equal_pods() -> None:
    rng = random.Random(42)
    endpoints = eps(0, 0, 0, 0)
    counts: Counter[str] = Counter()
    for _ in range(4000):
        ep = pick(endpoints, 0, rng)
        assert ep is not None
        counts[ep.pod] += 1  # requests finish at once: every pick is a 4-way tie
    assert set(counts) == {"p0", "p1", "p2", "p3"}
    assert all(800 <= n <= 1200 for n in counts.values()), counts


def test_spread_under_load_keeps_pods_within_one_request() -> None:
    rng = random.Random(5)
    endpoints = eps(0, 0, 0, 0, 0)
    for _ in range(23):
        ep = pick(endpoints, 0, rng)
        assert ep is not None
        ep.in_flight += 1
    loads = sorted(e.in_flight for e in endpoints)
    assert loads == [4, 4, 5, 5, 5]


def test_many_pods_use_two_random_choices() -> None:
    rng = random.Random(11)
    endpoints = eps(*([0] * 20))
    for _ in range(2000):
        ep = pick(endpoints, 0, rng)
        assert ep is not None
        ep.in_flight += 1
    loads = [e.in_flight for e in endpoints]
    # 100 each on average; two choices keep the spread tight (random alone: about +-30).
    assert max(loads) - min(loads) <= 12, loads
    # The less loaded of the two wins, so a pod far above the rest is never picked.
    endpoints = eps(*([0] * 19), 1000)
    for _ in range(500):
        ep = pick(endpoints, 0, rng)
        assert ep is not endpoints[-1]


def test_many_pods_skip_full_and_draining() -> None:
    rng = random.Random(2)
    endpoints = eps(*([10] * 12), 3)
    endpoints[0].in_flight = 0
    endpoints[0].draining = True
    for _ in range(200):
        assert pick(endpoints, 10, rng) is endpoints[-1]


def test_eight_candidates_still_get_the_least_loaded() -> None:
    # Up to P2C_ABOVE candidates the scan is exhaustive: the one idle pod always wins.
    # Two random choices would miss it whenever neither draw is that pod.
    rng = random.Random(4)
    endpoints = eps(*([5] * (P2C_ABOVE - 1)), 0)
    assert len(endpoints) == P2C_ABOVE
    assert all(pick(endpoints, 0, rng) is endpoints[-1] for _ in range(200))
