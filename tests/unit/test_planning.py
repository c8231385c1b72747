"""Replica planning: a table of pod sets and the plan each must give."""

from __future__ import annotations

import pytest

from allinone.controller.planning import FAILED, PENDING, RUNNING, TERMINATING, PodView, plan


def pod(name: str, h: str = "new", phase: str = RUNNING, ready: bool = True,
        created: float = 0.0) -> PodView:
    return PodView(name, h, phase, ready, created)


@pytest.mark.parametrize(
    ("desired", "pods", "create", "remove"),
    [
        pytest.param(1, [], 1, set(), id="scale from zero"),
        pytest.param(3, [pod("a")], 2, set(), id="scale up"),
        pytest.param(0, [pod("a"), pod("b")], 0, {"a", "b"}, id="scale to zero"),
        pytest.param(1, [pod("a", created=1), pod("b", created=2)], 0, {"b"},
                     id="scale down removes the newest"),
        pytest.param(1, [pod("a", created=1), pod("b", phase=PENDING, ready=False, created=0)],
                     0, {"b"}, id="scale down removes not-ready first"),
        pytest.param(2, [pod("a"), pod("b", phase=TERMINATING, ready=False)], 1, set(),
                     id="terminating pods count for nothing"),
        pytest.param(1, [pod("a", phase=FAILED, ready=False)], 1, {"a"},
                     id="failed pod is replaced"),
        pytest.param(2, [pod("o1", "old"), pod("o2", "old")], 2, set(),
                     id="rollout: old pods stay while new ones start"),
        pytest.param(2, [pod("o1", "old"), pod("o2", "old"), pod("n1"),
                         pod("n2", phase=PENDING, ready=False)], 0, {"o1"},
                     id="rollout: one new ready, one old goes"),
        pytest.param(2, [pod("o1", "old"), pod("o2", "old"), pod("n1"), pod("n2")], 0,
                     {"o1", "o2"}, id="rollout: all new ready, old all go"),
        pytest.param(0, [pod("o1", "old"), pod("n1")], 0, {"o1", "n1"},
                     id="rollout at zero removes everything"),
        pytest.param(2, [pod("a"), pod("b")], 0, set(), id="steady: nothing to do"),
    ],
)
def test_plan(desired: int, pods: list[PodView], create: int, remove: set[str]) -> None:
    p = plan(desired, "new", pods)
    assert p.create == create
    assert set(p.remove) == remove


def test_no_template_keeps_nothing() -> None:
    p = plan(3, None, [pod("a")])
    assert p.create == 0 and p.remove == ("a",)


def test_plan_is_idempotent_once_applied() -> None:
    pods = [pod("a", created=1), pod("b", created=2), pod("o", "old")]
    p = plan(1, "new", pods)
    after = [q for q in pods if q.name not in p.remove]
    after += [pod(f"x{i}") for i in range(p.create)]
    assert plan(1, "new", after).empty


def test_failed_pods_go_along_with_a_scale_down() -> None:
    # Both removals in one plan: the scale-down must add to the failed pods, not replace them.
    pods = [pod("f", phase=FAILED, ready=False), pod("a", created=1), pod("b", created=2)]
    p = plan(1, "new", pods)
    assert p.create == 0
    assert set(p.remove) == {"f", "b"}


def test_failed_old_pod_goes_during_a_rollout() -> None:
    pods = [pod("f", "old", phase=FAILED, ready=False), pod("o", "old"), pod("n", ready=False,
                                                                          phase=PENDING)]
    p = plan(1, "new", pods)
    assert p.create == 0
    assert set(p.remove) == {"f"}  # the healthy old pod covers the one not ready yet
