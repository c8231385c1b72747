"""SystemClock.wait_for, the real-time twin of ManualClock.wait_for: time-outs share one
event-loop timer per slot. Every time-out here is 0 (it fires within one 5 ms slot),
the only real time these tests spend."""

from __future__ import annotations

import asyncio

import pytest

from allinone.clock import SystemClock


async def test_a_wait_that_finishes_returns_and_leaves_no_timer_entry() -> None:
    clock = SystemClock()
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    fut.set_result(7)
    assert await clock.wait_for(fut, 30) == 7
    assert all(not waits for waits in clock._slots.values())


async def test_a_time_out_raises_cancels_the_awaited_and_leaves_the_task_uncancelled() -> None:
    clock = SystemClock()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await clock.wait_for(never, 0)
    assert never.cancelled()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert clock._slots == {}


async def test_waits_sharing_a_slot_time_out_alone() -> None:
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    never: asyncio.Future[str] = loop.create_future()
    a = asyncio.ensure_future(clock.wait_for(done, 0))
    b = asyncio.ensure_future(clock.wait_for(never, 0))
    await asyncio.sleep(0)
    done.set_result("in time")
    assert await a == "in time"
    with pytest.raises(TimeoutError):
        await b


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    clock = SystemClock()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(clock.wait_for(never, 30))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_inner_time_out_does_not_end_the_outer_wait() -> None:
    clock = SystemClock()
    loop = asyncio.get_running_loop()

    async def inner_then_answer() -> str:
        try:
            await clock.wait_for(loop.create_future(), 0)
        except TimeoutError:
            return "inner timed out"
        return "no"

    assert await clock.wait_for(inner_then_answer(), 30) == "inner timed out"
