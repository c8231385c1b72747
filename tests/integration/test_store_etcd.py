"""EtcdStore against the store contract on a real etcd, and etcd outages.

One etcd (started by :class:`EtcdProcess` on free ports in a temporary directory) serves
the contract tests; each test uses its own key prefix. The outage tests stop and start
their own etcd, so they never disturb the shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from allinone.services.etcd import EtcdProcess, free_port
from allinone.store.base import Obj, StoreError, Unavailable
from allinone.store.etcd import EtcdStore

# tests/ holds the shared contract module; it is not a package, so put it on the path.
from tests.store_contract import WAIT, StoreContract, make_obj, next_events

pytestmark = pytest.mark.integration

if not Path("/usr/bin/etcd").exists():
    pytest.skip("etcd is not installed (run `allinone setup`)", allow_module_level=True)


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdProcess]:
    # Synchronous on purpose: EtcdProcess keeps nothing tied to an event loop, so one
    # process can serve tests that each run on their own loop.
    tmp = Path(tempfile.mkdtemp(prefix="allinone-etcd-"))
    proc = EtcdProcess(tmp / "data", free_port())
    asyncio.run(proc.start())
    yield proc
    asyncio.run(proc.stop())
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
async def store(etcd: EtcdProcess) -> AsyncIterator[EtcdStore]:
    s = await EtcdStore.connect(etcd.url)
    yield s
    await s.close()


@pytest.fixture
async def own_etcd(tmp_path: Path) -> AsyncIterator[EtcdProcess]:
    """An etcd this test alone may stop and restart."""
    proc = EtcdProcess(tmp_path / "data", free_port(), log_path=tmp_path / "etcd.log")
    await proc.start()
    yield proc
    await proc.stop()


class TestEtcdStoreContract(StoreContract):
    pass


async def _write_retrying(store: EtcdStore, key: str, obj: Obj) -> Obj:
    """Create ``key``, retrying while the client reconnects to a restarted etcd."""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                return await store.create(key, obj)
            except Unavailable:
                await asyncio.sleep(0.05)


async def test_watch_survives_etcd_restart(own_etcd: EtcdProcess) -> None:
    prefix = f"/restart/{uuid.uuid4().hex[:8]}/"
    store = await EtcdStore.connect(own_etcd.url)
    try:
        _, revision = await store.list(prefix)
        async with contextlib.aclosing(store.watch(prefix, revision)) as events:
            before = await store.create(prefix + "before", make_obj("before"))
            (event,) = await next_events(events, 1)
            assert event.obj == before

            # The consumer is blocked in the watch while etcd goes away and comes back.
            pending = asyncio.ensure_future(next_events(events, 2))
            await own_etcd.stop()
            await asyncio.sleep(0.3)  # let the watch notice and start retrying
            assert not pending.done()
            await own_etcd.start()

            after = await _write_retrying(store, prefix + "after", make_obj("after"))
            again = await store.update(prefix + "after", after)
            got = await pending
            # Exactly the changes made after the restart: no gap, no replayed duplicate.
            assert [(e.type, e.obj) for e in got] == [("PUT", after), ("PUT", again)]
            assert int(before["metadata"]["resourceVersion"]) < got[0].revision
    finally:
        await store.close()


async def test_watch_resumes_with_changes_made_while_it_was_down(
        own_etcd: EtcdProcess) -> None:
    """Changes written by another client before the watch re-subscribes still arrive."""
    prefix = f"/resume/{uuid.uuid4().hex[:8]}/"
    watcher = await EtcdStore.connect(own_etcd.url)
    try:
        _, revision = await watcher.list(prefix)
        async with contextlib.aclosing(watcher.watch(prefix, revision)) as events:
            first = await watcher.create(prefix + "a", make_obj("a"))
            assert (await next_events(events, 1))[0].obj == first
            pending = asyncio.ensure_future(next_events(events, 3))
            await own_etcd.stop()
            await own_etcd.start()
            # A fresh client writes at once, racing the watch's re-subscription.
            writer = await EtcdStore.connect(own_etcd.url)
            try:
                written = [await writer.create(f"{prefix}b{i}", make_obj(f"b{i}"))
                           for i in range(3)]
            finally:
                await writer.close()
            got = await pending
            assert [e.obj for e in got] == written
    finally:
        await watcher.close()


async def test_unavailable_when_etcd_is_down(own_etcd: EtcdProcess) -> None:
    store = await EtcdStore.connect(own_etcd.url)
    try:
        created = await store.create("/down/a", make_obj("a"))
        await own_etcd.stop()
        with pytest.raises(Unavailable):
            await store.get("/down/a")
        with pytest.raises(Unavailable):
            await store.list("/down/")
        with pytest.raises(Unavailable):
            await store.create("/down/b", make_obj("b"))
        with pytest.raises(Unavailable):
            await store.update("/down/a", created)
        with pytest.raises(Unavailable):
            await store.delete("/down/a")
    finally:
        await store.close()
    with pytest.raises(Unavailable):
        await EtcdStore.connect(own_etcd.url)


async def test_watch_started_while_etcd_is_down_waits_for_it(own_etcd: EtcdProcess) -> None:
    store = await EtcdStore.connect(own_etcd.url)
    try:
        _, revision = await store.list("/late/")
        await own_etcd.stop()
        async with contextlib.aclosing(store.watch("/late/", revision)) as events:
            pending = asyncio.ensure_future(next_events(events, 1))
            await asyncio.sleep(0.3)
            assert not pending.done()
            await own_etcd.start()
            created = await _write_retrying(store, "/late/a", make_obj("a"))
            (event,) = await pending
            assert event.obj == created
    finally:
        await store.close()


async def test_close_ends_a_watch_that_is_retrying(own_etcd: EtcdProcess) -> None:
    store = await EtcdStore.connect(own_etcd.url)
    _, revision = await store.list("/closing/")
    await own_etcd.stop()
    events = store.watch("/closing/", revision)
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.3)
    await store.close()
    with pytest.raises(StopAsyncIteration):
        async with asyncio.timeout(WAIT):
            await pending


async def test_watch_detects_reset_etcd(tmp_path: Path) -> None:
    """An etcd that comes back with less history than was delivered is an error."""
    port = free_port()
    first = EtcdProcess(tmp_path / "one", port, log_path=tmp_path / "etcd.log")
    await first.start()
    store = await EtcdStore.connect(first.url)
    try:
        _, revision = await store.list("/reset/")
        async with contextlib.aclosing(store.watch("/reset/", revision)) as events:
            for i in range(5):
                await store.create(f"/reset/{i}", make_obj(str(i)))
            await next_events(events, 5)
            pending = asyncio.ensure_future(next_events(events, 1))
            await first.stop()
            # Same port, empty data directory: the revision counter starts over.
            second = EtcdProcess(tmp_path / "two", port, log_path=tmp_path / "etcd.log")
            await second.start()
            try:
                with pytest.raises(StoreError, match="reset"):
                    async with asyncio.timeout(WAIT):
                        await pending
            finally:
                await second.stop()
    finally:
        await store.close()


async def test_etcd_process_reports_early_exit(tmp_path: Path) -> None:
    # Holding etcd's peer port makes it exit at once ("address already in use").
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = EtcdProcess(tmp_path / "data", free_port(), taken.getsockname()[1],
                           log_path=tmp_path / "etcd.log")
        with pytest.raises(RuntimeError, match="exited with code") as info:
            await proc.start(timeout=10)
    assert "address already in use" in str(info.value)
    assert not proc.running


async def test_etcd_process_missing_binary(tmp_path: Path) -> None:
    proc = EtcdProcess(tmp_path / "data", free_port(), binary=str(tmp_path / "no-etcd"))
    with pytest.raises(RuntimeError, match="allinone setup"):
        await proc.start()


async def test_etcd_process_refuses_a_taken_port(own_etcd: EtcdProcess, tmp_path: Path) -> None:
    other = EtcdProcess(tmp_path / "other", own_etcd.client_port, log_path=tmp_path / "o.log")
    with pytest.raises(RuntimeError, match="already listens"):
        await other.start()
