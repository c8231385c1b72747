"""The store contract as tests, run against every Store implementation.

:class:`StoreContract` holds the tests; a test module subclasses it as ``TestXxx`` and
provides a ``store`` fixture (``tests/unit/test_store_memory.py`` with MemoryStore,
``tests/integration/test_store_etcd.py`` with EtcdStore on a real etcd). The in-memory
twin is only trustworthy for unit tests because it passes exactly these tests.

Every test works under its own random key prefix, so the suite can share one etcd.
Waiting for watch events is bounded by a timeout, and "nothing else arrived" is shown
by writing a sentinel and checking it is the next event, never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from allinone.store.base import (
    AlreadyExists,
    Conflict,
    NotFound,
    Obj,
    StoreError,
    WatchEvent,
)

WAIT = 10.0  # seconds; generous, so a loaded CI machine does not make tests flaky


def make_obj(name: str, **spec: Any) -> Obj:
    return {
        "apiVersion": "allinone/v1",
        "kind": "Thing",
        "metadata": {"name": name, "namespace": None, "resourceVersion": "0",
                     "labels": {"a": "b"}},
        "spec": dict(spec),
        "status": {},
    }


def rv(obj: Obj | None) -> int:
    assert obj is not None
    version = obj["metadata"]["resourceVersion"]
    assert isinstance(version, str) and version.isdigit(), version
    return int(version)


async def next_events(events: AsyncIterator[WatchEvent], n: int) -> list[WatchEvent]:
    got: list[WatchEvent] = []
    async with asyncio.timeout(WAIT):
        while len(got) < n:
            got.append(await anext(events))
    return got


class StoreContract:
    """Tests every Store must pass; subclasses provide the ``store`` fixture."""

    @pytest.fixture
    def prefix(self) -> str:
        return f"/contract/{uuid.uuid4().hex[:12]}/"

    # -- create / get ---------------------------------------------------------------

    async def test_create_get_roundtrip_sets_resource_version(self, store: Any,
                                                               prefix: str) -> None:
        obj = make_obj("a", x=1, nested={"list": [1, "two", None, 3.5, True]})
        created = await store.create(prefix + "a", obj)
        assert rv(created) > 0
        assert obj["metadata"]["resourceVersion"] == "0", "the caller's dict was changed"
        got = await store.get(prefix + "a")
        assert got == created
        assert got["spec"] == {"x": 1, "nested": {"list": [1, "two", None, 3.5, True]}}
        assert {k: v for k, v in got.items() if k != "metadata"} == {
            k: v for k, v in obj.items() if k != "metadata"}
        assert got["metadata"]["labels"] == {"a": "b"}

    async def test_create_existing_raises_already_exists(self, store: Any, prefix: str) -> None:
        first = await store.create(prefix + "a", make_obj("a", v=1))
        with pytest.raises(AlreadyExists):
            await store.create(prefix + "a", make_obj("a", v=2))
        assert await store.get(prefix + "a") == first

    async def test_concurrent_creates_one_wins(self, store: Any, prefix: str) -> None:
        results = await asyncio.gather(
            *(store.create(prefix + "a", make_obj("a", who=i)) for i in range(5)),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, dict)]
        assert len(winners) == 1
        assert all(isinstance(r, AlreadyExists) for r in results if not isinstance(r, dict))
        assert await store.get(prefix + "a") == winners[0]

    async def test_get_missing_raises_not_found(self, store: Any, prefix: str) -> None:
        with pytest.raises(NotFound):
            await store.get(prefix + "missing")

    async def test_every_write_bumps_one_global_revision(self, store: Any,
                                                         prefix: str) -> None:
        a = await store.create(prefix + "one/a", make_obj("a"))
        b = await store.create(prefix + "two/b", make_obj("b"))
        a2 = await store.update(prefix + "one/a", a)
        assert rv(a) < rv(b) < rv(a2)
        await store.delete(prefix + "two/b")
        _, revision = await store.list(prefix)
        assert revision > rv(a2)

    # -- update ---------------------------------------------------------------------

    async def test_update_cas_success_bumps_version(self, store: Any, prefix: str) -> None:
        created = await store.create(prefix + "a", make_obj("a", v=1))
        changed = dict(created, spec={"v": 2})
        updated = await store.update(prefix + "a", changed)
        assert rv(updated) > rv(created)
        assert updated["spec"] == {"v": 2}
        assert await store.get(prefix + "a") == updated
        # The returned object is good for the next CAS.
        again = await store.update(prefix + "a", dict(updated, spec={"v": 3}))
        assert rv(again) > rv(updated)

    async def test_stale_update_raises_conflict(self, store: Any, prefix: str) -> None:
        created = await store.create(prefix + "a", make_obj("a", v=1))
        current = await store.update(prefix + "a", dict(created, spec={"v": 2}))
        with pytest.raises(Conflict):
            await store.update(prefix + "a", dict(created, spec={"v": 3}))
        assert await store.get(prefix + "a") == current

    async def test_update_with_bad_resource_version_raises_conflict(self, store: Any,
                                                                    prefix: str) -> None:
        created = await store.create(prefix + "a", make_obj("a"))
        for bad in ("0", "", "abc", str(rv(created) + 1000)):
            obj = dict(created, metadata=dict(created["metadata"], resourceVersion=bad))
            with pytest.raises(Conflict):
                await store.update(prefix + "a", obj)
        assert await store.get(prefix + "a") == created

    async def test_concurrent_updates_one_wins(self, store: Any, prefix: str) -> None:
        created = await store.create(prefix + "a", make_obj("a", v=0))
        results = await asyncio.gather(
            *(store.update(prefix + "a", dict(created, spec={"v": i})) for i in range(1, 6)),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, dict)]
        assert len(winners) == 1
        assert all(isinstance(r, Conflict) for r in results if not isinstance(r, dict))

    async def test_update_missing_raises_not_found(self, store: Any, prefix: str) -> None:
        # "0" is what a never-stored object carries: it must not create the key.
        with pytest.raises(NotFound):
            await store.update(prefix + "a", make_obj("a"))
        created = await store.create(prefix + "b", make_obj("b"))
        await store.delete(prefix + "b")
        with pytest.raises(NotFound):
            await store.update(prefix + "b", created)
        with pytest.raises(NotFound):
            await store.get(prefix + "a")

    # -- delete ---------------------------------------------------------------------

    async def test_delete(self, store: Any, prefix: str) -> None:
        await store.create(prefix + "a", make_obj("a"))
        assert await store.delete(prefix + "a") is None
        with pytest.raises(NotFound):
            await store.get(prefix + "a")
        # The key can be created again afterwards.
        await store.create(prefix + "a", make_obj("a"))

    async def test_delete_missing_raises_not_found(self, store: Any, prefix: str) -> None:
        with pytest.raises(NotFound):
            await store.delete(prefix + "missing")
        with pytest.raises(NotFound):
            await store.delete(prefix + "missing", resource_version="5")

    async def test_delete_with_resource_version(self, store: Any, prefix: str) -> None:
        created = await store.create(prefix + "a", make_obj("a", v=1))
        current = await store.update(prefix + "a", dict(created, spec={"v": 2}))
        with pytest.raises(Conflict):
            await store.delete(prefix + "a", resource_version=str(rv(created)))
        assert await store.get(prefix + "a") == current
        await store.delete(prefix + "a", resource_version=str(rv(current)))
        with pytest.raises(NotFound):
            await store.get(prefix + "a")

    # -- list -----------------------------------------------------------------------

    async def test_list_by_prefix_sorted_with_revision(self, store: Any, prefix: str) -> None:
        for name in ("b", "c", "a"):
            await store.create(f"{prefix}items/{name}", make_obj(name))
        # Neighbours that share the beginning of the prefix but are not under it.
        await store.create(f"{prefix}itemsX/z", make_obj("z"))
        await store.create(f"{prefix}item", make_obj("item"))
        last = await store.create(f"{prefix}other/a", make_obj("other"))
        items, revision = await store.list(f"{prefix}items/")
        assert [o["metadata"]["name"] for o in items] == ["a", "b", "c"]
        assert all(rv(o) > 0 for o in items)
        assert revision >= rv(last)
        assert revision >= max(rv(o) for o in items)

    async def test_list_empty_prefix_result(self, store: Any, prefix: str) -> None:
        items, revision = await store.list(prefix + "nothing/")
        assert items == []
        assert isinstance(revision, int) and revision > 0

    async def test_list_revision_moves_with_writes(self, store: Any, prefix: str) -> None:
        _, before = await store.list(prefix)
        created = await store.create(prefix + "a", make_obj("a"))
        _, after = await store.list(prefix)
        assert before < rv(created) <= after

    # -- watch ----------------------------------------------------------------------

    async def test_watch_from_list_revision_sees_later_changes_in_order(
            self, store: Any, prefix: str) -> None:
        old = await store.create(prefix + "old", make_obj("old"))
        await store.update(prefix + "old", old)
        _, revision = await store.list(prefix)
        async with contextlib.aclosing(store.watch(prefix, revision)) as events:
            created = await store.create(prefix + "a", make_obj("a", v=1))
            updated = await store.update(prefix + "a", dict(created, spec={"v": 2}))
            await store.create(prefix.rstrip("/") + "X/b", make_obj("outside"))
            await store.delete(prefix + "a")
            sentinel = await store.create(prefix + "sentinel", make_obj("sentinel"))
            got = await next_events(events, 4)
        assert [(e.type, e.key) for e in got] == [
            ("PUT", prefix + "a"), ("PUT", prefix + "a"), ("DELETE", prefix + "a"),
            ("PUT", prefix + "sentinel")]
        put1, put2, deleted, last = got
        assert put1.obj == created and put1.revision == rv(created)
        assert put2.obj == updated and put2.revision == rv(updated)
        assert deleted.revision > rv(updated)
        # Both stores send the last object on DELETE, at the deletion revision.
        assert deleted.obj is not None
        assert deleted.obj["spec"] == {"v": 2}
        assert rv(deleted.obj) == deleted.revision
        assert last.obj == sentinel
        assert [e.revision for e in got] == sorted({e.revision for e in got})

    async def test_watch_from_older_revision_replays(self, store: Any, prefix: str) -> None:
        a = await store.create(prefix + "a", make_obj("a", v=1))
        a2 = await store.update(prefix + "a", dict(a, spec={"v": 2}))
        b = await store.create(prefix + "b", make_obj("b"))
        await store.delete(prefix + "b")
        async with contextlib.aclosing(store.watch(prefix, rv(a))) as events:
            got = await next_events(events, 3)
            assert [(e.type, e.key, e.revision) for e in got] == [
                ("PUT", prefix + "a", rv(a2)),
                ("PUT", prefix + "b", rv(b)),
                ("DELETE", prefix + "b", rv(b) + 1),
            ]
            # ...then live changes follow the replay.
            live = await store.create(prefix + "c", make_obj("c"))
            (event,) = await next_events(events, 1)
            assert (event.type, event.obj) == ("PUT", live)

    async def test_watch_from_compacted_revision_raises(self, store: Any, prefix: str) -> None:
        a = await store.create(prefix + "a", make_obj("a"))
        b = await store.update(prefix + "a", a)
        await store.compact(rv(b))
        with pytest.raises(StoreError):
            async with contextlib.aclosing(store.watch(prefix, rv(a) - 1)) as events:
                await next_events(events, 1)
        # Watching from the compaction point on is still fine.
        async with contextlib.aclosing(store.watch(prefix, rv(b) - 1)) as events:
            (event,) = await next_events(events, 1)
            assert event.revision == rv(b)

    async def test_concurrent_watches_each_see_everything(self, store: Any,
                                                          prefix: str) -> None:
        _, revision = await store.list(prefix)
        async with (
            contextlib.aclosing(store.watch(prefix, revision)) as w1,
            contextlib.aclosing(store.watch(prefix + "a", revision)) as w2,
        ):
            written = [await store.create(f"{prefix}a{i}", make_obj(f"a{i}")) for i in range(5)]
            got1 = await next_events(w1, 5)
            got2 = await next_events(w2, 5)
        assert [e.obj for e in got1] == written
        assert [e.obj for e in got2] == written

    async def test_close_ends_watch(self, store: Any, prefix: str) -> None:
        _, revision = await store.list(prefix)
        events = store.watch(prefix, revision)
        first = asyncio.ensure_future(anext(events))
        await store.create(prefix + "a", make_obj("a"))
        async with asyncio.timeout(WAIT):
            assert (await first).key == prefix + "a"
            await store.close()
            with pytest.raises(StopAsyncIteration):
                await anext(events)

    # -- copies -----------------------------------------------------------------------

    async def test_returned_objects_are_copies(self, store: Any, prefix: str) -> None:
        _, revision = await store.list(prefix)
        original = make_obj("a", v=1, deep={"x": [1]})
        created = await store.create(prefix + "a", original)
        pristine = await store.get(prefix + "a")

        # Mutating what we wrote or got back must not reach the store.
        original["spec"]["deep"]["x"].append(2)
        created["spec"]["deep"]["x"].append(3)
        created["metadata"]["labels"]["new"] = "label"
        got = await store.get(prefix + "a")
        assert got == pristine
        got["spec"]["v"] = 99
        listed, _ = await store.list(prefix)
        assert listed == [pristine]
        listed[0]["status"]["touched"] = True
        assert await store.get(prefix + "a") == pristine

        # Two watchers get independent objects, and neither can change the store.
        async with (
            contextlib.aclosing(store.watch(prefix, revision)) as w1,
            contextlib.aclosing(store.watch(prefix, revision)) as w2,
        ):
            (e1,) = await next_events(w1, 1)
            assert e1.obj is not None
            e1.obj["spec"]["v"] = 42
            (e2,) = await next_events(w2, 1)
            assert e2.obj == pristine
        assert await store.get(prefix + "a") == pristine
