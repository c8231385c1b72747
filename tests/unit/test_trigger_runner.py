"""Watch triggers on the in-memory store and invoker: catch-up at start, restarts,
at-least-once redelivery, retries and the sink (no Docker, no etcd)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from allinone import objects
from allinone.clock import ManualClock
from allinone.metrics import Metrics
from allinone.store.memory import MemoryStore
from allinone.testing import until
from allinone.triggers import files as fs
from allinone.triggers.invoker import Answer, MemoryInvoker, Targets
from allinone.triggers.journal import FAILED, SUCCEEDED, Journal
from allinone.triggers.runner import TriggerManager
from allinone.triggers.spec import normalize, seen_key, trigger_key


class Env:
    def __init__(self, tmp: Path, spec: dict[str, Any],
                 answer: Callable[[str, dict[str, Any]], Answer] | None = None) -> None:
        self.store = MemoryStore()
        self.inbox = tmp / "inbox"
        self.inbox.mkdir()
        if "schedule" not in spec:
            spec = {**spec, "watch": {"path": str(self.inbox), **spec.get("watch", {})}}
        self.spec = normalize(spec)
        self.answer = answer or (
            lambda f, kw: Answer(200, json.dumps({"got": kw.get("name")}).encode()))

        async def handler(function: str, kwargs: dict[str, Any]) -> Answer:
            return self.answer(function, kwargs)
        self.invoker = MemoryInvoker(handler)
        self.mgr: TriggerManager | None = None
        self.task: asyncio.Task[None] | None = None

    async def create(self) -> dict[str, Any]:
        obj = objects.new_object("Trigger", "t", self.spec)
        return await self.store.create(trigger_key("t"), obj)

    async def start(self) -> TriggerManager:
        self.mgr = TriggerManager(self.store, ManualClock(), Targets(self.invoker), Metrics())
        self.task = asyncio.get_running_loop().create_task(self.mgr.run())
        mgr = self.mgr
        await until(lambda: "t" in mgr.runners, "runner started")
        await asyncio.wait_for(mgr.runners["t"].ready.wait(), 5)
        return mgr

    async def settle(self) -> None:
        assert self.mgr is not None
        runner = self.mgr.runners["t"]
        await until(lambda: not runner.active, "deliveries finished")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def records(self) -> list[dict[str, Any]]:
        return await Journal(self.store).list("t")

    def names(self) -> list[tuple[str, str]]:
        return [(kw["event"], kw["name"]) for _, kw in self.invoker.calls]


@pytest.fixture
async def make_env(tmp_path: Path) -> AsyncIterator[Callable[..., Env]]:
    """Builds Envs and stops their managers even when the test fails."""
    made: list[Env] = []

    def make(spec: dict[str, Any],
             answer: Callable[[str, dict[str, Any]], Answer] | None = None) -> Env:
        env = Env(tmp_path, spec, answer)
        made.append(env)
        return env
    yield make
    for env in made:
        await env.stop()


async def test_files_that_appeared_while_stopped_are_delivered_once(
        make_env: Callable[..., Env]) -> None:
    env = make_env({"target": {"function": "f"}, "watch": {"patterns": ["*.png"]}})
    (env.inbox / "a.png").write_bytes(b"AAAA")
    (env.inbox / "b.png").write_bytes(b"BB")
    (env.inbox / "notes.txt").write_bytes(b"ignored")
    await env.create()
    await env.start()
    await env.settle()
    assert sorted(env.names()) == [("created", "a.png"), ("created", "b.png")]
    kw = next(kw for _, kw in env.invoker.calls if kw["name"] == "a.png")
    assert base64.b64decode(kw["contentBase64"]) == b"AAAA"
    assert kw["size"] == 4 and kw["path"] == str(env.inbox / "a.png") and kw["trigger"] == "t"
    await env.stop()

    # While stopped: a.png changes, b.png goes, c.png arrives.
    (env.inbox / "a.png").write_bytes(b"AAAAAA")
    (env.inbox / "b.png").unlink()
    (env.inbox / "c.png").write_bytes(b"C")
    await env.start()
    await env.settle()
    assert sorted(env.names()[2:]) == [("created", "c.png"), ("modified", "a.png")]
    await env.stop()

    # Nothing changed: a restart delivers nothing again.
    await env.start()
    await env.settle()
    assert len(env.invoker.calls) == 4
    trigger = await env.store.get(trigger_key("t"))
    assert trigger["status"]["fires"] == 4 and trigger["status"]["lastStatus"] == SUCCEEDED
    assert [r["status"]["phase"] for r in await env.records()] == [SUCCEEDED] * 4
    await env.stop()


async def test_a_crash_between_record_and_checkpoint_neither_loses_nor_repeats(
        make_env: Callable[..., Env]) -> None:
    env = make_env({"target": {"function": "f"}})
    (env.inbox / "a.png").write_bytes(b"A")
    trigger = await env.create()
    # The state a crash leaves: the record written (Pending), the seen checkpoint not.
    st = fs.stat_file(env.inbox, "a.png")
    assert st is not None
    await Journal(env.store).create(
        trigger, 1.0, {"trigger": "t", "event": "created", "path": str(env.inbox / "a.png"),
                       "name": "a.png", "size": st.size, "modified": "x"},
        {"path": "a.png", "size": st.size, "mtimeNs": st.mtime_ns, "exists": True})
    await env.start()
    await env.settle()
    assert env.names() == [("created", "a.png")]
    assert base64.b64decode(env.invoker.calls[0][1]["contentBase64"]) == b"A"
    seen = await env.store.get(seen_key("t", "a.png"))  # the checkpoint was redone
    assert seen["spec"]["size"] == 1
    await env.stop()


async def test_failed_deliveries_are_retried_then_recorded(
        make_env: Callable[..., Env]) -> None:
    # One script of answers per file, not one shared list: the two deliveries run
    # concurrently, and which of them calls first (or retries before the other's first
    # call) depends on scheduling. A shared list handed the 200 to whichever call came
    # second, so a.png could take 503 then 200 and leave b.png three 500s: five calls,
    # read as a duplicate delivery (issue 12). Per file, every count is exact.
    scripts = {"a.png": [Answer(503, b'{"error": {"code": "NotReady", "message": "warming"}}'),
                         Answer(200, b'{"ok": 1}')],
               "b.png": [Answer(500, b"{}")] * 3}
    env = make_env({"target": {"function": "f"},
                    "retry": {"maxAttempts": 3, "backoffSeconds": 5}},
                   answer=lambda f, kw: scripts[kw["name"]].pop(0))
    (env.inbox / "a.png").write_bytes(b"A")
    (env.inbox / "b.png").write_bytes(b"B")
    await env.create()
    mgr = await env.start()
    await env.settle()
    by_name = {r["spec"]["event"]["name"]: r["status"] for r in await env.records()}
    assert len(await env.records()) == 2  # one record per file, no second event
    # a.png: 503 (retryable), then 200 after 5 s. b.png: 500 three times, given up
    # after maxAttempts, waiting 5 s then 10 s (exponential) between attempts.
    assert by_name["a.png"]["phase"] == SUCCEEDED and by_name["a.png"]["attempts"] == 2
    assert by_name["b.png"]["phase"] == FAILED and by_name["b.png"]["attempts"] == 3
    assert by_name["b.png"]["httpStatus"] == 500
    names = [kw["name"] for _, kw in env.invoker.calls]
    assert sorted(names) == ["a.png"] * 2 + ["b.png"] * 3
    assert scripts == {"a.png": [], "b.png": []}
    assert mgr.clock.now() == 1000.0 + 5 + (5 + 10)  # the backoffs, on the manual clock
    t = await env.store.get(trigger_key("t"))
    assert t["status"]["failures"] == 1 and t["status"]["fires"] == 2
    await env.stop()


async def test_sink_writes_results_and_files_and_survives_hostile_names(
        make_env: Callable[..., Env]) -> None:
    out = env_dir = Path(tempfile.mkdtemp())
    thumb = base64.b64encode(b"THUMB").decode()
    env = make_env({"target": {"function": "f"}, "sink": {"directory": str(out)}},
              answer=lambda f, kw: Answer(200, json.dumps(
                  {"files": {f"../../{kw['name']}.thumb.png": thumb}, "n": 1}).encode()))
    (env.inbox / "cat.png").write_bytes(b"C")
    await env.create()
    await env.start()
    await env.settle()
    assert sorted(os.listdir(env_dir)) == ["_.._cat.png.thumb.png", "cat.png.json"]
    assert (out / "_.._cat.png.thumb.png").read_bytes() == b"THUMB"
    assert json.loads((out / "cat.png.json").read_text())["n"] == 1
    (rec,) = await env.records()
    assert rec["status"]["sink"] == ["_.._cat.png.thumb.png", "cat.png.json"]
    await env.stop()


async def test_deleting_a_trigger_stops_it_and_removes_its_records(
        make_env: Callable[..., Env]) -> None:
    env = make_env({"target": {"function": "f"}})
    (env.inbox / "a.png").write_bytes(b"A")
    await env.create()
    mgr = await env.start()
    await env.settle()
    await env.store.delete(trigger_key("t"))
    await until(lambda: "t" not in mgr.runners, "runner stopped")
    await until(lambda: not env.store._data, "records and seen entries removed")
    await env.stop()


async def test_pending_records_of_a_stopped_delivery_are_delivered_at_start(
        make_env: Callable[..., Env]) -> None:
    env = make_env({"target": {"function": "f"}, "schedule": "@every 1h"})
    trigger = await env.create()
    when = objects.rfc3339(ManualClock().wall())
    await Journal(env.store).create(trigger, 1.0, {"trigger": "t", "scheduledTime": when})
    await env.start()
    await env.settle()
    assert [kw for _, kw in env.invoker.calls] == [{"trigger": "t", "scheduledTime": when}]
    assert [r["status"]["phase"] for r in await env.records()] == [SUCCEEDED]
    await env.stop()


async def test_a_malformed_trigger_does_not_stop_the_others(
        make_env: Callable[..., Env]) -> None:
    env = make_env({"target": {"function": "f"}})
    bad = objects.new_object("Trigger", "bad", {"target": {"function": "f"}, "watch": {}})
    await env.store.create(trigger_key("bad"), bad)
    (env.inbox / "a.png").write_bytes(b"A")
    await env.create()
    mgr = await env.start()
    await env.settle()
    assert env.names() == [("created", "a.png")]
    assert "bad" not in mgr.runners
