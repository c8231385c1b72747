"""A keyed work queue with client-go's guarantees, for the reconcilers.

- A key waiting in the queue is stored once, however often it is added.
- One key is processed by at most one worker at a time; a key added while it is being
  processed is processed again afterwards (so no change is lost).
- A failed sync is retried after a delay that doubles per consecutive failure of that
  key (0.5 s, 1 s, 2 s, ... capped at 30 s) and resets when it succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from allinone.clock import Clock, SystemClock

log = logging.getLogger(__name__)


class WorkQueue:
    def __init__(self, name: str, sync: Callable[[str], Awaitable[None]], workers: int = 2,
                 clock: Clock | None = None) -> None:
        self.name = name
        self.clock: Clock = clock or SystemClock()
        self.sync = sync
        self.workers = workers
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        self._retries: set[asyncio.Task[None]] = set()

    def add(self, key: str) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.put_nowait(key)

    async def _retry(self, key: str, delay: float) -> None:
        await self.clock.sleep(delay)
        self.add(key)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._dirty.discard(key)
            self._processing.add(key)
            try:
                await self.sync(key)
                self._failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except Exception:
                n = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(0.5 * 2 ** (n - 1), 30.0)
                log.exception("%s: sync of %s failed (%d in a row); retrying in %.1f s",
                              self.name, key, n, delay)
                task = asyncio.ensure_future(self._retry(key, delay))
                self._retries.add(task)
                task.add_done_callback(self._retries.discard)
            finally:
                self._processing.discard(key)
                if key in self._dirty:
                    self._queue.put_nowait(key)

    async def run(self) -> None:
        workers = [asyncio.ensure_future(self._worker()) for _ in range(self.workers)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers + list(self._retries):
                task.cancel()
