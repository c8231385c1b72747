"""Clocks: the one place the platform reads time.

Pure cores (the autoscaler's ``decide``, replica planning) take ``now`` as an argument;
the loops around them read it from a :class:`Clock` and wait through it (``sleep``,
``wait_for``), never through the event loop's clock. Tests pass a :class:`ManualClock`
and move it by hand, so no test sleeps to see a decision change or a timeout fire.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale (only differences are meaningful)."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch, for timestamps shown to people."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait_for(self, aw: Awaitable[T], timeout: float) -> T:
        """``aw``'s result, or TimeoutError after ``timeout`` seconds of this clock
        (``aw`` is cancelled then, as with :func:`asyncio.wait_for`)."""
        ...


# Time-outs of SystemClock.wait_for share one event-loop timer per slot of this many
# seconds, and fire up to one slot late. On the request path (one wait_for per proxied
# call) a timer each, as asyncio.timeout sets, was about a tenth of the server's Python
# CPU (uvloop makes and closes a libuv handle per timer).
TIMEOUT_SLOT = 0.005


class _Expiry:
    """One waiting ``wait_for``: its task, and whether its slot's timer cancelled it."""

    __slots__ = ("cancelling", "fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.cancelling = task.cancelling()
        self.fired = False


class SystemClock:
    def __init__(self) -> None:
        # (loop, slot number) -> the waits that time out in that slot (done ones leave).
        self._slots: dict[tuple[asyncio.AbstractEventLoop, int], set[_Expiry]] = {}

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, aw: Awaitable[T], timeout: float) -> T:
        # As asyncio.timeout (no extra task per call; the caller's task is cancelled and
        # the cancellation turned into TimeoutError), with the timer shared per slot.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        key = (loop, math.ceil((loop.time() + timeout) / TIMEOUT_SLOT))
        waits = self._slots.get(key)
        if waits is None:
            waits = self._slots[key] = set()
            loop.call_at(key[1] * TIMEOUT_SLOT, self._expire, key)
        expiry = _Expiry(task)
        waits.add(expiry)
        try:
            return await aw
        except asyncio.CancelledError:
            if expiry.fired and task.uncancel() <= expiry.cancelling:
                raise TimeoutError from None
            raise
        finally:
            waits.discard(expiry)

    def _expire(self, key: tuple[asyncio.AbstractEventLoop, int]) -> None:
        for expiry in self._slots.pop(key, ()):
            expiry.fired = True
            expiry.task.cancel()


class ManualClock:
    """A clock that only moves when told to.

    ``wait_for`` and (without ``auto_advance``) ``sleep`` wait until :meth:`advance`
    moves the clock past their deadline, so a test drives every timer of several
    concurrent loops by hand. With ``auto_advance`` (the default) ``sleep`` advances
    the clock by the time slept instead of waiting, for code that sleeps in one place.
    """

    def __init__(self, start: float = 1000.0, *, auto_advance: bool = True) -> None:
        self._now = start
        self.auto_advance = auto_advance
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return 1_700_000_000.0 + self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
        while self._timers and self._timers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._timers)
            if not fut.done():
                fut.set_result(None)

    def sleepers(self) -> int:
        """Timers still waiting (for tests that wait until a loop is parked on the clock)."""
        return sum(1 for _, _, f in self._timers if not f.done())

    def _timer(self, seconds: float) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if seconds <= 0:
            fut.set_result(None)
        else:
            heapq.heappush(self._timers, (self._now + seconds, next(self._seq), fut))
        return fut

    async def sleep(self, seconds: float) -> None:
        if self.auto_advance:
            self.advance(max(seconds, 0.0))
            await asyncio.sleep(0)
            return
        fut = self._timer(seconds)
        try:
            await fut
        finally:
            fut.cancel()

    async def wait_for(self, aw: Awaitable[T], timeout: float) -> T:
        task = asyncio.ensure_future(aw)
        timer = self._timer(timeout)
        waiting: set[asyncio.Future[Any]] = {task, timer}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        finally:
            timer.cancel()
        if task.done():
            return task.result()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        raise TimeoutError
