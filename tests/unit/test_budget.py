"""The pod budget: admission (admit), memory held (committed_mib), run-time caps
(cap_replicas) as tables, and PodBudget against the in-memory store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from allinone import objects
from allinone.budget import (
    MEMORY_BUDGET,
    POD_CEILING,
    Limits,
    PodBudget,
    admit,
    cap_replicas,
    committed_mib,
    default_pod_memory_mib,
    limits_for,
    max_scale_given,
    with_ceiling,
)
from allinone.informer import Informer
from allinone.objects import ValidationError, normalize_spec, replicaset_for
from allinone.store.memory import MemoryStore
from allinone.testing import running

LIMITS = Limits(pod_memory_mib=1024, max_pods_per_function=10)


def fn(name: str, **spec: Any) -> dict[str, Any]:
    return objects.new_object("Function", name, normalize_spec(spec))


def mem(mib: int) -> dict[str, Any]:
    return {"memoryMiB": mib}


ADMIT_CASES = [
    # (id, spec, others, words of the error or None when admitted)
    ("defaults", {}, [], None),
    ("maxScale at the ceiling", {"scaling": {"maxScale": 10}}, [], None),
    ("maxScale over the ceiling", {"scaling": {"maxScale": 11}}, [],
     ["maxScale 11", "limit of 10 pods per function", "--max-pods-per-function"]),
    ("minScale over the ceiling", {"scaling": {"minScale": 11, "maxScale": 11},
                                   "resources": mem(16)}, [],
     ["maxScale 11"]),
    ("initialScale over the ceiling", {"scaling": {"initialScale": 11, "maxScale": 11},
                                       "resources": mem(16)}, [], ["maxScale 11"]),
    ("minScale fits exactly", {"scaling": {"minScale": 4}, "resources": mem(256)}, [], None),
    ("minScale over", {"scaling": {"minScale": 5}, "resources": mem(256)}, [],
     ["minScale 5 x resources.memoryMiB 256 = 1280 MiB", "budget of 1024 MiB",
      "at most 4 pods", "--pod-memory-budget"]),
    ("the issue's spec", {"scaling": {"minScale": 1000, "maxScale": 1000},
                          "resources": mem(65536)}, [], ["maxScale 1000"]),
    ("one pod over the budget", {"resources": mem(2048)}, [],
     ["memoryMiB 2048", "whole pod memory budget of 1024 MiB"]),
    ("initialScale over", {"scaling": {"initialScale": 9}, "resources": mem(128)}, [],
     ["initialScale 9 x resources.memoryMiB 128 = 1152 MiB", "at most 8 pods"]),
    ("maxScale x memory may exceed: capped at run time",
     {"scaling": {"maxScale": 10}, "resources": mem(1024)}, [], None),
    ("minScale next to others' minScale",
     {"scaling": {"minScale": 2}, "resources": mem(256)},
     [fn("a", scaling={"minScale": 2}, resources=mem(256))], None),
    ("minScale does not fit next to others",
     {"scaling": {"minScale": 3}, "resources": mem(256)},
     [fn("a", scaling={"minScale": 2}, resources=mem(256)), fn("b", resources=mem(512))],
     ["minScale 3", "768 MiB", "next to the 512 MiB", "512 MiB left"]),
    ("its own old object is not an other",
     {"scaling": {"minScale": 4}, "resources": mem(256)},
     [fn("me", scaling={"minScale": 4}, resources=mem(256))], None),
    ("minScale 0 never conflicts with others",
     {}, [fn("a", scaling={"minScale": 4}, resources=mem(256))], None),
]


@pytest.mark.parametrize(("spec", "others", "words"), [c[1:] for c in ADMIT_CASES],
                         ids=[c[0] for c in ADMIT_CASES])
def test_admit(spec: dict[str, Any], others: list[dict[str, Any]],
               words: list[str] | None) -> None:
    full = normalize_spec(spec)
    if words is None:
        admit("me", full, others, LIMITS)
        return
    with pytest.raises(ValidationError) as info:
        admit("me", full, others, LIMITS)
    for word in words:
        assert word in str(info.value), str(info.value)


WIDE = Limits(pod_memory_mib=1 << 20, max_pods_per_function=4)


@pytest.mark.parametrize(("user", "stored_max", "error"), [
    ({}, 4, None),  # the default 10 is not the user's wish: lowered to the ceiling
    ({"scaling": {"minScale": 1}}, 4, None),
    ({"scaling": {"maxScale": 3}}, 3, None),
    ({"scaling": {"maxScale": 4}}, 4, None),
    ({"scaling": {"maxScale": 10}}, None, "maxScale 10 is above"),  # given: refused
    ({"scaling": {"minScale": 6}}, None, "minScale 6 is above"),
    ({"scaling": {"initialScale": 5}}, None, "initialScale 5 is above"),
])
def test_ceiling_lowers_a_default_max_scale_and_refuses_a_given_one(
        user: dict[str, Any], stored_max: int | None, error: str | None) -> None:
    spec = with_ceiling(normalize_spec(user), WIDE, max_scale_given=max_scale_given(user))
    if error is None:
        admit("me", spec, [], WIDE)
        assert spec["scaling"]["maxScale"] == stored_max
        return
    with pytest.raises(ValidationError, match=error):
        admit("me", spec, [], WIDE)


def test_max_scale_given() -> None:
    assert max_scale_given({"scaling": {"maxScale": 3}})
    assert not max_scale_given({"scaling": {"minScale": 3}})
    assert not max_scale_given(None) and not max_scale_given({"scaling": 3})


def rs(name: str, replicas: int, running: int | None = None,
       memory: int | None = 256) -> dict[str, Any]:
    obj = replicaset_for(fn(name))
    obj["spec"]["replicas"] = replicas
    if memory is not None:
        obj["spec"]["template"] = {"image": "x", "resources": mem(memory)}
    if running is not None:
        obj["status"] = {"replicas": running}
    return obj


COMMITTED_CASES = [
    # (id, replicasets, functions, pending, expected MiB held by all but "me")
    ("nothing", [], {}, {}, 0),
    ("others' desired pods", [rs("a", 2), rs("b", 1, memory=512)], {}, {}, 1024),
    ("itself excluded", [rs("me", 3), rs("a", 1)], {}, {}, 256),
    ("draining pods still count", [rs("a", 1, running=3)], {}, {}, 768),
    ("starting pods count at desired", [rs("a", 3, running=1)], {}, {}, 768),
    ("a count just written counts before the cache shows it", [rs("a", 1)], {}, {"a": 3}, 768),
    ("a lower pending does not hide running pods", [rs("a", 3, running=3)], {}, {"a": 0},
     768),
    ("no template yet: the Function's memory", [rs("a", 2, memory=None)],
     {"a": fn("a", resources=mem(100))}, {}, 200),
    ("no template, no Function: the default", [rs("a", 1, memory=None)], {}, {},
     objects.DEFAULT_SPEC["resources"]["memoryMiB"]),
    ("pending without a ReplicaSet is nothing", [], {}, {"gone": 5}, 0),
]


@pytest.mark.parametrize(("replicasets", "functions", "pending", "expected"),
                         [c[1:] for c in COMMITTED_CASES], ids=[c[0] for c in COMMITTED_CASES])
def test_committed_mib(replicasets: list[dict[str, Any]], functions: dict[str, Any],
                       pending: dict[str, int], expected: int) -> None:
    assert committed_mib(replicasets, functions, "me", pending) == expected


CAP_CASES = [
    # (desired, memory, committed by others, limits, replicas, reason)
    (3, 256, 0, LIMITS, 3, None),
    (4, 256, 0, LIMITS, 4, None),
    (5, 256, 0, LIMITS, 4, MEMORY_BUDGET),
    (5, 256, 512, LIMITS, 2, MEMORY_BUDGET),
    (1, 256, 1024, LIMITS, 0, MEMORY_BUDGET),
    (2, 256, 2048, LIMITS, 0, MEMORY_BUDGET),  # over-committed (budget lowered): nothing
    (0, 256, 2048, LIMITS, 0, None),  # scale to zero is never capped
    (12, 64, 0, LIMITS, 10, POD_CEILING),
    (12, 100, 0, LIMITS, 10, POD_CEILING),  # 10 fit by memory too: the ceiling binds
    (12, 103, 0, LIMITS, 9, MEMORY_BUDGET),
]


@pytest.mark.parametrize(("desired", "memory", "committed", "limits", "replicas", "reason"),
                         CAP_CASES)
def test_cap_replicas(desired: int, memory: int, committed: int, limits: Limits,
                      replicas: int, reason: str | None) -> None:
    cap = cap_replicas(desired, memory, committed, limits)
    assert (cap.replicas, cap.reason, cap.requested) == (replicas, reason, desired)
    if reason is None:
        assert cap.status() is None and cap.message == ""
    else:
        status = cap.status()
        assert status is not None
        assert status["reason"] == reason and status["allowed"] == replicas
        assert f"capped at {replicas} of {desired} wanted pods" in cap.message


def test_memory_budget_message_says_why() -> None:
    cap = cap_replicas(5, 256, 512, LIMITS)
    assert "budget is 1024 MiB" in cap.message and "other functions hold 512 MiB" in cap.message
    assert "256 MiB" in cap.message and "--pod-memory-budget" in cap.message


def test_default_budget_is_a_share_of_the_host() -> None:
    assert default_pod_memory_mib(8192) == 6144
    assert limits_for(2048, 7) == Limits(2048, 7)
    assert limits_for(None, 7).pod_memory_mib > 0


# ---------------------------------------------------------------------------
# PodBudget on the in-memory store


class World:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.functions = Informer(self.store, objects.FUNCTIONS_PREFIX)
        self.replicasets = Informer(self.store, objects.REPLICASETS_PREFIX)
        self.budget = PodBudget(LIMITS, self.store, self.functions, self.replicasets)

    async def add(self, name: str, replicas: int = 0, **spec: Any) -> dict[str, Any]:
        f = await self.store.create(objects.function_key(name), fn(name, **spec))
        r = replicaset_for(f)
        r["spec"]["replicas"] = replicas
        await self.store.create(objects.replicaset_key(name), r)
        return f

    async def settle(self) -> None:
        """Yield until the informers have seen the last write (no real time passes)."""
        for _ in range(1000):
            seen = [int(o["metadata"]["resourceVersion"])
                    for o in self.functions.items() + self.replicasets.items()]
            if max(seen, default=0) >= self.store.revision:
                return
            await asyncio.sleep(0)
        raise AssertionError("the informers did not catch up")


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    async with running(w.functions.run(), w.replicasets.run()):
        await w.functions.synced.wait()
        await w.replicasets.synced.wait()
        yield w


async def test_cap_records_status_and_clears_it(world: World) -> None:
    f = await world.add("a", resources=mem(256))
    await world.add("b", replicas=2, resources=mem(256))
    await world.settle()
    cap = await world.budget.cap("a", f, 5)
    assert (cap.replicas, cap.reason) == (2, MEMORY_BUDGET)
    stored = await world.store.get(objects.function_key("a"))
    assert stored["status"]["capped"] == {
        "reason": MEMORY_BUDGET, "requested": 5, "allowed": 2, "message": cap.message}
    await world.settle()
    before = (await world.store.get(objects.function_key("a")))["metadata"]["resourceVersion"]
    await world.budget.cap("a", world.functions.get("a") or f, 5)  # unchanged: no write
    after = (await world.store.get(objects.function_key("a")))["metadata"]["resourceVersion"]
    assert before == after
    cap = await world.budget.cap("a", world.functions.get("a") or f, 2)
    assert not cap.capped
    stored = await world.store.get(objects.function_key("a"))
    assert "capped" not in stored["status"]


async def test_two_functions_in_one_tick_do_not_share_free_memory(world: World) -> None:
    a = await world.add("a", resources=mem(256))
    b = await world.add("b", resources=mem(256))
    await world.settle()
    # The autoscaler has not written a's replicas yet (the cache shows 0): b must still
    # see a's 3 pods.
    assert (await world.budget.cap("a", a, 3)).replicas == 3
    cap = await world.budget.cap("b", b, 3)
    assert (cap.replicas, cap.reason) == (1, MEMORY_BUDGET)


async def test_initial_replicas_fit_next_to_others(world: World) -> None:
    await world.add("a", replicas=3, resources=mem(256))
    await world.settle()
    spec = normalize_spec({"scaling": {"initialScale": 2}, "resources": mem(256)})
    assert world.budget.initial_replicas("new", spec) == 1
    spec = normalize_spec({"scaling": {"initialScale": 1}, "resources": mem(256)})
    assert world.budget.initial_replicas("new2", spec) == 1


async def test_admit_sees_other_functions(world: World) -> None:
    await world.add("a", scaling={"minScale": 3}, resources=mem(256))
    await world.settle()
    user = {"scaling": {"minScale": 2}, "resources": mem(256)}
    with pytest.raises(ValidationError, match="next to the 768 MiB"):
        world.budget.admit("b", normalize_spec(user), user)
    user = {"scaling": {"minScale": 4}, "resources": mem(256)}
    spec = world.budget.admit("a", normalize_spec(user), user)
    assert spec["scaling"]["maxScale"] == LIMITS.max_pods_per_function
