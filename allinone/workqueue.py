"""A keyed work queue with client-go's guarantees, for the reconcilers.

- A key waiting in the queue is stored once, however often it is added.
- One key is processed by at most one worker at a time; a key added while it is being
  processed is processed again afterwards (so no change is lost).
- A failed sync is retried after a delay that doubles per consecutive failure of that
  key (0.5 s, 1 s, 2 s, ... capped at 30 s) and resets when it succeeds. A sync that
  raises :class:`RetryLater` is retried the same way, logged as one line (an expected
  wait, e.g. for the registry to come back) rather than with a traceback.
- A sync's exception is its key's alone: the workers and the other keys go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from allinone.clock import Clock, SystemClock

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """Not done yet for a reason outside this key (the message says which): retry."""


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

    def add_after(self, key: str, delay: float) -> None:
        """Add ``key`` in ``delay`` seconds (a periodic re-check of one key)."""
        task = asyncio.ensure_future(self._retry(key, delay))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

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
            except Exception as exc:
                n = self._failures[key] = self._failures.get(key, 0) + 1
                delay = min(0.5 * 2 ** (n - 1), 30.0)
                if isinstance(exc, RetryLater):
                    log.warning("%s: %s: %s (%d in a row); retrying in %.1f s",
                                self.name, key, exc, n, delay)
                else:
                    log.exception("%s: sync of %s failed (%d in a row); retrying in %.1f s",
                                  self.name, key, n, delay)
                self.add_after(key, delay)
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
