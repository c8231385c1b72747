"""MemoryStore against the store contract, plus what only the in-memory twin has.

The contract tests live in ``tests/store_contract.py`` and run unchanged against a real
etcd in ``tests/integration/test_store_etcd.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from allinone.store.base import StoreError, Unavailable
from allinone.store.memory import MemoryStore

# tests/ holds the shared contract module; it is not a package, so put it on the path.
from tests.store_contract import StoreContract, make_obj, next_events


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    yield s
    await s.close()


class TestMemoryStoreContract(StoreContract):
    pass


async def test_revisions_start_like_an_empty_etcd() -> None:
    s = MemoryStore()
    assert await s.list("/") == ([], 1)
    created = await s.create("/a", make_obj("a"))
    assert created["metadata"]["resourceVersion"] == "2"


async def test_bounded_history_reports_compaction() -> None:
    s = MemoryStore(max_history=3)
    first = await s.create("/k/a", make_obj("a"))
    for _ in range(3):
        await s.update("/k/a", await s.get("/k/a"))
    # The first write fell out of the history: watching from before it must fail...
    with pytest.raises(StoreError, match="compacted"):
        async with contextlib.aclosing(s.watch("/k/", 1)) as events:
            await anext(events)
    # ...while the retained three replay.
    async with contextlib.aclosing(s.watch("/k/", int(first["metadata"]["resourceVersion"]))) \
            as events:
        got = await next_events(events, 3)
    assert [e.revision for e in got] == [3, 4, 5]


async def test_values_must_be_json() -> None:
    s = MemoryStore()
    with pytest.raises(TypeError):
        await s.create("/a", {"metadata": {}, "spec": {"when": object()}})
    with pytest.raises(TypeError):
        await s.create("/a", ["not", "an", "object"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await s.create("/a", {"metadata": {}, "spec": {"x": float("nan")}})
    assert await s.list("/") == ([], 1), "a rejected value must not bump the revision"


async def test_closed_store_refuses_calls_and_watches_end() -> None:
    s = MemoryStore()
    await s.close()
    with pytest.raises(Unavailable):
        await s.get("/a")
    with pytest.raises(StopAsyncIteration):
        await anext(s.watch("/", 0))
