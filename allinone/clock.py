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


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, aw: Awaitable[T], timeout: float) -> T:
        # asyncio.timeout, not asyncio.wait_for: no extra task per call (the request path).
        async with asyncio.timeout(timeout):
            return await aw


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
