"""Paused-pod retention rules (allinone.kubelet.parking), as the kubelet, the
controller and the simulator apply them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from allinone.kubelet import parking


@dataclass(frozen=True)
class P:
    name: str
    template_hash: str
    since: float


@pytest.mark.parametrize(("keep", "pod_t", "current", "ready", "container", "park"), [
    (60.0, "a", "a", True, True, True),
    (0.0, "a", "a", True, True, False),     # retention off
    (60.0, "a", "b", True, True, False),    # outdated template
    (60.0, "a", None, True, True, False),   # the ReplicaSet is gone
    (60.0, "a", "a", False, True, False),   # not healthy
    (60.0, "a", "a", True, False, False),   # no container to pause
])
def test_worth_parking(keep: float, pod_t: str, current: str | None, ready: bool,
                       container: bool, park: bool) -> None:
    assert parking.worth_parking(keep, pod_t, current, ready, container) is park


def test_take_resumes_the_warmest_of_the_template_and_returns_the_stale() -> None:
    stack = [P("old", "a", 1.0), P("x1", "b", 2.0), P("new", "a", 3.0), P("x2", "b", 4.0)]
    got, stale = parking.take(stack, "a")
    assert got == P("new", "a", 3.0)
    assert stale == [P("x2", "b", 4.0)]
    assert stack == [P("old", "a", 1.0), P("x1", "b", 2.0)]
    got, stale = parking.take(stack, "c")
    assert got is None and stale == [P("x1", "b", 2.0), P("old", "a", 1.0)] and stack == []


def test_expired_only_after_keep_seconds() -> None:
    p = P("p", "a", 100.0)
    assert not parking.expired(p, 160.0, 60.0)
    assert parking.expired(p, 160.5, 60.0)


@pytest.mark.parametrize(("on", "desired", "pods", "template", "parked", "wanted"), [
    (True, 0, 0, "a", [], True),
    (False, 0, 0, "a", [], False),                 # --no-standby
    (True, 1, 0, "a", [], False),                  # a pod is wanted: it starts anyway
    (True, 0, 1, "a", [], False),                  # a pod is still there (draining)
    (True, 0, 0, None, [], False),                 # no template: nothing to create
    (True, 0, 0, "a", [P("p", "a", 1.0)], False),  # a paused pod serves first
    (True, 0, 0, "a", [P("p", "b", 1.0)], True),   # ... not one of an old template
])
def test_wants_standby(on: bool, desired: int, pods: int, template: str | None,
                       parked: list[P], wanted: bool) -> None:
    assert parking.wants_standby(on, desired, pods, template, parked) is wanted
