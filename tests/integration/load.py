"""A small closed-loop load generator for integration tests (aiohttp, loopback only).

``run_load`` keeps ``concurrency`` requests in flight for ``duration`` seconds and
returns every outcome, so tests can assert "no request failed" and inspect bodies.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Outcome:
    status: int
    body: Any
    started: float
    seconds: float


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != 200]

    def summary(self) -> str:
        codes: dict[int, int] = {}
        for o in self.outcomes:
            codes[o.status] = codes.get(o.status, 0) + 1
        bad = [o.body for o in self.failures[:3]]
        return f"{len(self.outcomes)} requests, codes {codes}, first failures {bad}"


async def _one(session: aiohttp.ClientSession, url: str, body: Any) -> Outcome:
    t0 = time.monotonic()
    try:
        async with session.post(url, json=body) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = await resp.text()
            return Outcome(resp.status, data, t0, time.monotonic() - t0)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(-1, repr(exc), t0, time.monotonic() - t0)


async def burst(url: str, n: int, body: Any, timeout: float = 120) -> LoadResult:
    """``n`` requests at once."""
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as s:
        outcomes = await asyncio.gather(*(_one(s, url, body) for _ in range(n)))
    return LoadResult(list(outcomes))


async def run_load(url: str, concurrency: int, duration: float, body: Any,
                   stop: asyncio.Event | None = None, timeout: float = 120) -> LoadResult:
    """``concurrency`` users, each sending its next request when the last one answers."""
    result = LoadResult()
    conn = aiohttp.TCPConnector(limit=0)
    deadline = time.monotonic() + duration
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as s:
        async def user() -> None:
            while time.monotonic() < deadline and not (stop and stop.is_set()):
                result.outcomes.append(await _one(s, url, body))
        await asyncio.gather(*(user() for _ in range(concurrency)))
    return result
