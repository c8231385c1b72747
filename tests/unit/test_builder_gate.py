"""The builder's gate: local images are removed only between builds, because removing
an image makes the engine delete its untagged parents, the build cache a concurrent
build of another function is using (issue 8's 50-delete test found builds failing with
"unable to find image"). No Docker: a fake engine records what is asked of it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from allinone.builder.builder import Builder, BuildError
from allinone.testing import free_port


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def images(self, name: str) -> list[dict[str, Any]]:
        self.calls.append(f"images {name}")
        return []


class FakeClient:
    def __init__(self) -> None:
        self.api = FakeApi()


async def yield_a_while() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_local_removal_waits_for_running_builds_and_holds_new_ones(
        tmp_path: Path) -> None:
    client = FakeClient()
    # A registry nobody listens on: the registry half of prune fails after the local half.
    builder = Builder("base", f"127.0.0.1:{free_port()}", tmp_path, client=client)
    builder._begin()  # a build of another function is running
    prune = asyncio.create_task(builder.prune("gone", frozenset()))
    await yield_a_while()
    assert client.api.calls == []  # waits for the build
    assert not builder._open.is_set()  # and new builds wait for it
    builder._end()  # the build ends
    try:
        await prune
    except BuildError as exc:
        assert exc.infrastructure  # the registry is not running here
    assert client.api.calls == [f"images {builder.repository('gone')}"]
    assert builder._open.is_set()  # builds go on


async def test_exclusive_holders_overlap_and_the_last_one_opens_the_gate(
        tmp_path: Path) -> None:
    builder = Builder("base", f"127.0.0.1:{free_port()}", tmp_path, client=FakeClient())
    first_in, release_first = asyncio.Event(), asyncio.Event()

    async def hold_first() -> None:
        async with builder.exclusive():
            first_in.set()
            await release_first.wait()

    first = asyncio.create_task(hold_first())
    await first_in.wait()
    async with builder.exclusive():  # the registry's GC while a removal is inside
        release_first.set()
        await first
        assert not builder._open.is_set()  # the first leaving does not let builds in
    assert builder._open.is_set()
