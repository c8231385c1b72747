"""The runner over the in-memory store: records, history, pruning, and resuming an
execution after a crash (the runner's tasks cancelled mid-way, a new runner started)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from allinone import objects
from allinone.clock import ManualClock
from allinone.metrics import Metrics
from allinone.store.memory import MemoryStore
from allinone.workflows.invoker import FakeInvoker
from allinone.workflows.runner import WorkflowNotFound, WorkflowRunner, workflow_object

CHAIN = {"StartAt": "a", "States": {
    "a": {"Type": "Task", "Resource": "add", "ResultPath": "$.sum", "Next": "b"},
    "b": {"Type": "Task", "Resource": "gate", "Parameters": {"x.$": "$.sum"}, "Next": "c"},
    "c": {"Type": "Pass", "End": True}}}


async def put(store: MemoryStore, name: str, definition: dict[str, Any]) -> None:
    await store.create(objects.workflow_key(name), workflow_object(name, definition))


async def settle(cond: Any, rounds: int = 200) -> None:
    for _ in range(rounds):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_sync_execution_is_recorded_with_history() -> None:
    store, clock, metrics = MemoryStore(), ManualClock(), Metrics()
    await put(store, "wf", CHAIN)
    runner = WorkflowRunner(store, FakeInvoker({"add": lambda a, b: a + b,
                                                "gate": lambda x: x * 10}), clock, metrics)
    out = await runner.start_execution("wf", {"a": 1, "b": 2}, wait=True)
    assert (out["status"], out["output"]) == ("SUCCEEDED", 30)
    full = await runner.describe("wf", out["executionId"])
    types = [e["type"] for e in full["events"]]
    assert types[0] == "ExecutionStarted" and types[-1] == "ExecutionSucceeded"
    assert [e["id"] for e in full["events"]] == list(range(1, len(types) + 1))
    assert full["input"] == {"a": 1, "b": 2} and full["stopDate"]
    text = metrics.render().decode()
    assert 'allinone_workflow_executions_total{status="SUCCEEDED",workflow="wf"} 1.0' in text
    with pytest.raises(WorkflowNotFound):
        await runner.start_execution("nope", {}, wait=True)


async def test_crash_and_resume_from_the_last_transition() -> None:
    store, clock = MemoryStore(), ManualClock()
    await put(store, "wf", CHAIN)
    calls: list[str] = []

    async def hang(x: int) -> int:
        calls.append("gate-1")
        await asyncio.Event().wait()
        return 0

    def add(a: int, b: int) -> int:
        calls.append("add")
        return a + b

    first = WorkflowRunner(store, FakeInvoker({"add": add, "gate": hang}), clock)
    started = await first.start_execution("wf", {"a": 1, "b": 2}, wait=False)
    assert started["status"] == "RUNNING"
    await settle(lambda: "gate-1" in calls)
    # The crash: every task of the first runner stops where it is.
    for t in list(first.running.values()):
        t.cancel()
    await asyncio.sleep(0)
    # A new definition meanwhile must not change the running execution.
    wf = await store.get(objects.workflow_key("wf"))
    wf["spec"]["definition"] = {"StartAt": "z", "States": {"z": {"Type": "Fail"}}}
    await store.update(objects.workflow_key("wf"), wf)

    def gate(x: int) -> int:
        calls.append("gate-2")
        return x * 10

    second = WorkflowRunner(store, FakeInvoker({"add": add, "gate": gate}), clock)
    assert await second.resume_all() == 1
    eid = started["executionId"]
    final = await second.wait("wf", eid)
    assert final is not None and (final["status"], final["output"]) == ("SUCCEEDED", 30)
    # "add" ran once; the task in flight at the crash ran again (at-least-once).
    assert calls == ["add", "gate-1", "gate-2"]
    types = [e["type"] for e in (await second.describe("wf", eid))["events"]]
    assert "ExecutionResumed" in types and types.count("ExecutionStarted") == 1


async def test_execution_timeout_counts_the_downtime() -> None:
    store, clock = MemoryStore(), ManualClock()
    await put(store, "slow", {"StartAt": "w", "TimeoutSeconds": 10, "States": {
        "w": {"Type": "Task", "Resource": "hang", "End": True}}})
    hung = asyncio.Event()

    async def hang() -> None:
        hung.set()
        await asyncio.Event().wait()

    first = WorkflowRunner(store, FakeInvoker({"hang": hang}), clock)
    started = await first.start_execution("slow", {}, wait=False)
    await settle(hung.is_set)
    for t in list(first.running.values()):
        t.cancel()
    await asyncio.sleep(0)
    clock.advance(30)  # the server was down for 30 s
    second = WorkflowRunner(store, FakeInvoker({"hang": hang}), clock)
    await second.resume_all()
    final = await second.wait("slow", started["executionId"])
    assert final is not None and (final["status"], final["error"]) == (
        "TIMED_OUT", "States.Timeout")


async def test_oldest_finished_executions_are_pruned() -> None:
    store, clock = MemoryStore(), ManualClock()
    await put(store, "wf", {"StartAt": "p", "States": {"p": {"Type": "Pass", "End": True}}})
    runner = WorkflowRunner(store, FakeInvoker({}), clock, max_executions=3)
    ids = []
    for i in range(5):
        clock.advance(1)
        ids.append((await runner.start_execution("wf", {"i": i}, wait=True))["executionId"])
    listed = await runner.list_executions("wf")
    assert [e["executionId"] for e in listed] == ids[:1:-1]  # newest first, 3 kept
    history, _ = await store.list(objects.HISTORY_PREFIX)
    assert {h["metadata"]["name"].rsplit("-", 1)[0] for h in history} == set(ids[2:])
    await runner.forget_workflow("wf")
    assert await runner.list_executions("wf") == []
    assert (await store.list(objects.HISTORY_PREFIX))[0] == []


async def test_concurrent_iterations_append_history_in_order() -> None:
    store, clock = MemoryStore(), ManualClock()
    await put(store, "fan", {"StartAt": "m", "States": {"m": {
        "Type": "Map", "End": True, "ItemSelector": {"x.$": "$$.Map.Item.Value"},
        "ItemProcessor": {"StartAt": "t", "States": {
            "t": {"Type": "Task", "Resource": "echo", "End": True}}}}}})

    async def echo(x: int) -> int:
        await asyncio.sleep(0)
        return x

    runner = WorkflowRunner(store, FakeInvoker({"echo": echo}), clock)
    out = await runner.start_execution("fan", list(range(60)), wait=True)
    assert out["output"] == list(range(60))
    events = (await runner.describe("fan", out["executionId"]))["events"]
    assert len(events) > 300  # several chunks, flushed while iterations ran
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))


async def test_concurrent_starts_prune_each_old_execution_once() -> None:
    store, clock = MemoryStore(), ManualClock()
    await put(store, "wf", {"StartAt": "p", "States": {"p": {"Type": "Pass", "End": True}}})
    runner = WorkflowRunner(store, FakeInvoker({}), clock, max_executions=3)
    for i in range(3):
        clock.advance(1)
        await runner.start_execution("wf", {"i": i}, wait=True)
    outs = await asyncio.gather(*(runner.start_execution("wf", {"i": i}, wait=True)
                                  for i in range(10)))
    assert all(o["status"] == "SUCCEEDED" for o in outs)
    assert len(await runner.list_executions("wf")) == 3
