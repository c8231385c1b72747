"""Unit tests run on the manual clock: a real sleep fails the test that made it.

Waiting for a monitor, a loop or a timeout with ``time.sleep``/``asyncio.sleep`` makes
a test slow and, on a loaded machine, flaky; the unit tests drive time with
:class:`allinone.clock.ManualClock` instead. This autouse guard records every sleep
longer than :data:`REAL_SLEEP_LIMIT` seconds that the test (or the code under test)
makes on the main thread and fails the test when it ends, naming each call. The sleep
itself still happens: the guard only reports, so a loop that catches every exception
cannot hide it. ``asyncio.sleep(0)`` (a yield to the event loop) and sleeps on other
threads (a worker that stands in for Docker) are allowed. A test that polls a real OS
process (the shim, a child it stops) says so with ``@pytest.mark.real_process(why)``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

REAL_SLEEP_LIMIT = 0.002  # seconds; a yield to the loop is 0


@pytest.fixture(autouse=True)
def no_real_sleeps(monkeypatch: pytest.MonkeyPatch,
                   request: pytest.FixtureRequest) -> Iterator[None]:
    marker = request.node.get_closest_marker("real_process")
    if marker is not None:
        assert marker.args and marker.args[0], "real_process needs a reason: real_process(why)"
        yield
        return
    found: list[str] = []
    real_sleep, real_async_sleep = time.sleep, asyncio.sleep

    def note(kind: str, seconds: float) -> None:
        if seconds > REAL_SLEEP_LIMIT and threading.current_thread() is threading.main_thread():
            where = traceback.extract_stack(limit=3)[0]
            found.append(f"{kind}({seconds:g}) at {where.filename}:{where.lineno}")

    def sleep(seconds: float) -> None:
        note("time.sleep", seconds)
        real_sleep(seconds)

    async def async_sleep(delay: float, result: Any = None) -> Any:
        note("asyncio.sleep", delay)
        return await real_async_sleep(delay, result)

    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(asyncio, "sleep", async_sleep)
    yield
    if found:
        pytest.fail("real sleep in a unit test (drive time with allinone.clock.ManualClock "
                    "and wait for a condition, not for a while): " + "; ".join(found),
                    pytrace=False)
