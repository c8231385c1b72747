"""The socket watch wakes a starting pod's probe when its socket file appears."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from allinone.kubelet.sockwatch import SocketWatch
from allinone.runtime.base import SOCKET_NAME


async def test_socket_creation_sets_the_pods_event(tmp_path: Path) -> None:
    root = tmp_path / "pods"
    root.mkdir()
    watch = SocketWatch(root)
    watch.start()
    try:
        assert watch.active
        (root / "p1").mkdir()  # as the kubelet does before the container starts
        (root / "p2").mkdir()
        mine, other = asyncio.Event(), asyncio.Event()
        watch.watch("p1", mine)
        watch.watch("p2", other)
        await asyncio.to_thread((root / "p1" / "notes.txt").write_text, "not a socket")
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(root / "p1" / SOCKET_NAME))
            await asyncio.wait_for(mine.wait(), 10)
        assert not other.is_set()
    finally:
        watch.stop()
    assert not watch.active


def test_only_the_socket_name_of_a_watched_pod_counts(tmp_path: Path) -> None:
    watch = SocketWatch(tmp_path)
    ev = asyncio.Event()
    watch.watch("p1", ev)
    watch._touched(str(tmp_path / "p1" / "other"))
    watch._touched(str(tmp_path / "p9" / SOCKET_NAME))
    assert not ev.is_set()
    watch._touched(str(tmp_path / "p1" / SOCKET_NAME))
    assert ev.is_set()
    ev.clear()
    watch.forget("p1")
    watch._touched(str(tmp_path / "p1" / SOCKET_NAME))
    assert not ev.is_set()


def test_a_missing_root_leaves_it_inactive(tmp_path: Path) -> None:
    async def go() -> SocketWatch:
        watch = SocketWatch(tmp_path / "absent")
        watch.start()
        return watch

    watch = asyncio.run(go())
    assert not watch.active
