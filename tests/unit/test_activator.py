"""The activator against fake pods (aiohttp servers on Unix sockets) and an in-memory store:
queue limit, timeout, containerConcurrency, draining, retry on refused connections,
and what held requests answer when the function fails or is deleted."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from allinone import objects
from allinone.activator.activator import Activator
from allinone.clock import ManualClock
from allinone.informer import Informer
from allinone.metrics import Metrics
from allinone.store.memory import MemoryStore
from allinone.testing import until


class FakePod:
    """A pod that answers POST / once ``release`` is set and records its concurrency."""

    def __init__(self) -> None:
        self.now = 0
        self.max_seen = 0
        self.calls = 0
        self.release = asyncio.Event()
        self.release.set()
        self.runner: web.AppRunner | None = None
        self.address = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.now += 1
        self.calls += 1
        self.max_seen = max(self.max_seen, self.now)
        try:
            body = await request.json()
            await self.release.wait()
            return web.json_response({"echo": body})
        finally:
            self.now -= 1

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self._dir = tempfile.TemporaryDirectory()
        self.address = str(Path(self._dir.name) / "http.sock")
        site = web.UnixSite(self.runner, self.address)
        await site.start()

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()
            self._dir.cleanup()


async def settle() -> None:
    """Let every ready task run a few turns (no time passes): for "still not done"."""
    for _ in range(20):
        await asyncio.sleep(0)


def dead_address() -> str:
    return "/nonexistent/allinone-test/http.sock"  # connecting fails: nothing was sent


class Env:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.functions = Informer(self.store, objects.FUNCTIONS_PREFIX)
        self.pokes: list[str] = []
        self.clock = ManualClock()
        self.activator = Activator(self.functions, self.clock, Metrics(), queue_limit=3,
                                   poke=self.pokes.append)

    async def put_function(self, name: str, *, image: str | None = "img", phase: str = "Ready",
                           message: str = "", **spec: Any) -> None:
        fn = objects.new_object("Function", name, objects.normalize_spec(spec))
        fn["spec"]["source"] = {"filename": "f.py", "sha256": "x", "size": 1}
        fn["status"] = {"phase": phase, "message": message}
        if image:
            fn["status"]["image"] = image
        key = objects.function_key(name)
        try:
            old = await self.store.get(key)
            fn["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            stored = await self.store.update(key, fn)
        except Exception:
            stored = await self.store.create(key, fn)
        version = stored["metadata"]["resourceVersion"]
        await until(lambda: (self.functions.get(name) or {}).get("metadata", {})
                    .get("resourceVersion") == version, f"the informer sees {name}")

    async def invoke(self, name: str, body: Any) -> tuple[int, Any]:
        result = await self.activator.invoke(name, json.dumps(body).encode())
        return result.status, json.loads(result.body)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    task = asyncio.ensure_future(e.functions.run())
    await e.functions.synced.wait()
    await e.activator.start()
    yield e
    await e.activator.close()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_forwards_to_a_ready_pod(env: Env) -> None:
    pod = FakePod()
    await pod.start()
    try:
        await env.put_function("f")
        env.activator.pod_ready("f", "f-1", pod.address)
        assert await env.invoke("f", {"x": 1}) == (200, {"echo": {"x": 1}})
    finally:
        await pod.stop()


async def test_unknown_function_is_404(env: Env) -> None:
    status, body = await env.invoke("nope", {})
    assert status == 404 and body["error"]["code"] == "NotFound"


async def test_request_at_zero_pokes_and_waits_for_a_pod(env: Env) -> None:
    pod = FakePod()
    await pod.start()
    try:
        await env.put_function("f")
        call = asyncio.ensure_future(env.invoke("f", {"a": 1}))
        await until(lambda: env.activator.queued("f") == 1, "the request waits")
        assert env.pokes == ["f"] and not call.done()
        assert env.activator.queued("f") == 1
        env.activator.pod_ready("f", "f-1", pod.address)
        assert await call == (200, {"echo": {"a": 1}})
    finally:
        await pod.stop()


async def test_cold_start_metric_counts_requests_that_arrive_at_zero_only(env: Env) -> None:
    pod = FakePod()
    await pod.start()
    try:
        await env.put_function("f")
        call = asyncio.ensure_future(env.invoke("f", {"a": 1}))
        await until(lambda: env.activator.queued("f") == 1, "the request waits at zero")
        env.activator.pod_ready("f", "f-1", pod.address)
        assert await call == (200, {"echo": {"a": 1}})
        assert await env.invoke("f", {"a": 2}) == (200, {"echo": {"a": 2}})  # warm
        registry = env.activator.metrics.registry
        assert registry.get_sample_value("allinone_cold_starts_total", {"function": "f"}) == 1
        assert registry.get_sample_value("allinone_cold_start_latency_seconds_count",
                                         {"function": "f"}) == 1
    finally:
        await pod.stop()


async def test_full_queue_answers_503_at_once(env: Env) -> None:
    await env.put_function("f")
    held = [asyncio.ensure_future(env.invoke("f", {})) for _ in range(3)]
    await until(lambda: env.activator.queued("f") == 3, "three requests wait")
    status, body = await asyncio.wait_for(env.invoke("f", {}), 1)
    assert status == 503 and body["error"]["code"] == "Overloaded"
    for h in held:
        h.cancel()
    await asyncio.gather(*held, return_exceptions=True)


async def test_no_pod_within_timeout_is_504(env: Env) -> None:
    await env.put_function("f", timeoutSeconds=0.2)
    call = asyncio.ensure_future(env.invoke("f", {}))
    await until(lambda: env.activator.queued("f") == 1, "the request waits")
    env.clock.advance(0.1)
    await settle()
    assert not call.done()  # half its timeout on the activator's clock
    env.clock.advance(0.15)
    status, body = await asyncio.wait_for(call, 1)
    assert status == 504 and "timeoutSeconds" in body["error"]["message"]


async def test_slow_pod_is_504_after_its_timeout(env: Env) -> None:
    pod = FakePod()
    await pod.start()
    try:
        await env.put_function("f", timeoutSeconds=5)
        env.activator.pod_ready("f", "f-1", pod.address)
        pod.release.clear()
        call = asyncio.ensure_future(env.invoke("f", {}))
        await until(lambda: pod.now == 1, "the pod holds the request")
        assert pod.now == 1 and not call.done()
        env.clock.advance(5.1)
        status, body = await asyncio.wait_for(call, 1)
        assert status == 504 and "did not answer" in body["error"]["message"]
        pod.release.set()
    finally:
        await pod.stop()


async def test_container_concurrency_holds_requests_for_a_free_slot(env: Env) -> None:
    pods = [FakePod(), FakePod()]
    for p in pods:
        await p.start()
    try:
        await env.put_function("f", scaling={"containerConcurrency": 1})
        env.activator.pod_ready("f", "f-1", pods[0].address)
        env.activator.pod_ready("f", "f-2", pods[1].address)
        env.activator.queue_limit = 100
        for p in pods:
            p.release.clear()
        calls = asyncio.gather(*(env.invoke("f", {"i": i}) for i in range(10)))
        await until(lambda: env.activator.queued("f") == 8, "eight wait for a free slot")
        for p in pods:
            p.release.set()
        results = await calls
        assert all(status == 200 for status, _ in results)
        assert [p.max_seen for p in pods] == [1, 1]
        assert sum(p.calls for p in pods) == 10
    finally:
        for p in pods:
            await p.stop()


async def test_least_in_flight_spreads_load(env: Env) -> None:
    pods = [FakePod() for _ in range(3)]
    for p in pods:
        await p.start()
    try:
        await env.put_function("f")
        for i, p in enumerate(pods):
            env.activator.pod_ready("f", f"f-{i}", p.address)
            p.release.clear()
        calls = asyncio.gather(*(env.invoke("f", {}) for _ in range(9)))
        await until(lambda: sum(p.now for p in pods) == 9, "nine requests on the pods")
        for p in pods:
            p.release.set()
        await calls
        assert [p.max_seen for p in pods] == [3, 3, 3]
    finally:
        for p in pods:
            await p.stop()


async def test_refused_connection_is_retried_on_another_pod(env: Env) -> None:
    good = FakePod()
    await good.start()
    try:
        # containerConcurrency 1 picks the first free pod in order: the dead one first.
        await env.put_function("f", scaling={"containerConcurrency": 1})
        env.activator.pod_ready("f", "f-dead", dead_address())
        env.activator.pod_ready("f", "f-good", good.address)
        assert await env.invoke("f", {"n": 1}) == (200, {"echo": {"n": 1}})
        assert good.calls == 1
    finally:
        await good.stop()


async def test_drain_stops_new_requests_and_waits_for_in_flight(env: Env) -> None:
    old, new = FakePod(), FakePod()
    for p in (old, new):
        await p.start()
    try:
        await env.put_function("f")
        env.activator.pod_ready("f", "f-old", old.address)
        old.release.clear()  # the request on the old pod hangs until released
        slow = asyncio.ensure_future(env.invoke("f", {"slow": True}))
        await until(lambda: old.now == 1, "the old pod holds the request")
        assert old.now == 1
        env.activator.pod_ready("f", "f-new", new.address)
        drain = asyncio.ensure_future(env.activator.drain("f", "f-old", timeout=5))
        await settle()
        assert not drain.done()  # still serving its in-flight request
        assert await env.invoke("f", {"after": 1}) == (200, {"echo": {"after": 1}})
        assert new.calls == 1 and old.calls == 1  # the draining pod got nothing new
        old.release.set()
        assert await slow == (200, {"echo": {"slow": True}})
        await asyncio.wait_for(drain, 1)
        assert env.activator.ready_pods("f") == 1
    finally:
        for p in (old, new):
            await p.stop()


async def test_held_request_gets_503_when_the_pod_fails(env: Env) -> None:
    await env.put_function("f")
    call = asyncio.ensure_future(env.invoke("f", {}))
    await until(lambda: env.activator.queued("f") == 1, "the request waits")
    env.activator.pod_failed("f", "f-1", "its container exited: see `allinone logs f`")
    status, body = await asyncio.wait_for(call, 1)
    assert status == 503 and "allinone logs f" in body["error"]["message"]


async def test_held_request_waits_for_the_first_build_then_fails_with_it(env: Env) -> None:
    await env.put_function("f", image=None, phase="Building")
    call = asyncio.ensure_future(env.invoke("f", {}))
    await until(lambda: env.activator.queued("f") == 1, "the request waits")
    assert not call.done() and env.pokes == []  # nothing to scale before an image exists
    await env.put_function("f", image=None, phase="Failed", message="pip could not install x")
    status, body = await asyncio.wait_for(call, 1)
    assert status == 503 and "pip could not install x" in body["error"]["message"]


async def test_held_request_gets_404_when_the_function_is_deleted(env: Env) -> None:
    await env.put_function("f")
    call = asyncio.ensure_future(env.invoke("f", {}))
    await until(lambda: env.activator.queued("f") == 1, "the request waits")
    await env.store.delete(objects.function_key("f"))
    status, _ = await asyncio.wait_for(call, 1)
    assert status == 404


class CrashingPod:
    """A pod whose connection breaks mid-request when ``crash`` is set (a killed container)."""

    def __init__(self) -> None:
        self.crash = asyncio.Event()
        self.received = 0
        self.server: asyncio.AbstractServer | None = None
        self._dir = tempfile.TemporaryDirectory()
        self.address = str(Path(self._dir.name) / "http.sock")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.received += 1
        await self.crash.wait()
        writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, self.address)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        self._dir.cleanup()


async def test_a_serving_pod_crash_fails_only_its_in_flight_requests(env: Env) -> None:
    crashing, replacement = CrashingPod(), FakePod()
    await crashing.start()
    await replacement.start()
    try:
        await env.put_function("f", scaling={"containerConcurrency": 1})
        env.activator.pod_ready("f", "f-1", crashing.address)
        in_flight = asyncio.ensure_future(env.invoke("f", {"n": 1}))
        await until(lambda: crashing.received == 1, "the pod holds the first request")
        held = asyncio.ensure_future(env.invoke("f", {"n": 2}))  # waits for the slot
        await until(lambda: env.activator.queued("f") == 1, "the second waits for the slot")
        assert crashing.received == 1 and env.activator.queued("f") == 1
        # The kubelet sees the container die (with Docker's reason), then removes it.
        env.activator.pod_failed("f", "f-1", "the function ran out of memory: it was "
                                 "killed for using more than its memory limit of 64 MiB")
        crashing.crash.set()
        await env.activator.drain("f", "f-1", 0)
        status, body = await asyncio.wait_for(in_flight, 1)
        assert status == 503
        assert "f-1" in body["error"]["message"] and "64 MiB" in body["error"]["message"]
        after = asyncio.ensure_future(env.invoke("f", {"n": 3}))  # arrives after the crash
        await until(lambda: env.activator.queued("f") == 2, "both wait for a replacement")
        assert not held.done() and not after.done()  # they wait for a replacement
        env.activator.pod_ready("f", "f-2", replacement.address)
        assert await asyncio.wait_for(held, 1) == (200, {"echo": {"n": 2}})
        assert await asyncio.wait_for(after, 1) == (200, {"echo": {"n": 3}})
    finally:
        await crashing.stop()
        await replacement.stop()


async def test_a_request_already_sent_to_a_pod_is_not_retried(env: Env) -> None:
    # Functions need not be idempotent: once the request reached a pod, a broken
    # connection is the caller's 503, never a second run on another pod.
    crashing, other = CrashingPod(), FakePod()
    await crashing.start()
    await other.start()
    try:
        # containerConcurrency 1 picks the first free pod in order: the crashing one.
        await env.put_function("f", scaling={"containerConcurrency": 1})
        env.activator.pod_ready("f", "f-crash", crashing.address)
        env.activator.pod_ready("f", "f-other", other.address)
        call = asyncio.ensure_future(env.invoke("f", {"n": 1}))
        await until(lambda: crashing.received == 1, "the pod received the request")
        env.activator.pod_failed("f", "f-crash", "its container exited with code 137")
        crashing.crash.set()
        status, body = await asyncio.wait_for(call, 5)
        assert status == 503 and body["error"]["code"] == "PodFailed"
        assert "not retried" in body["error"]["message"]
        assert crashing.received == 1 and other.calls == 0
    finally:
        await crashing.stop()
        await other.stop()


async def test_a_timed_out_request_retires_its_pod(env: Env) -> None:
    hung, other = FakePod(), FakePod()
    await hung.start()
    await other.start()
    retired: list[tuple[str, str]] = []
    env.activator.retire = lambda function, pod, reason: retired.append((function, pod))
    try:
        await env.put_function("f", timeoutSeconds=5, scaling={"containerConcurrency": 1})
        env.activator.pod_ready("f", "f-hung", hung.address)
        env.activator.pod_ready("f", "f-other", other.address)
        hung.release.clear()
        call = asyncio.ensure_future(env.invoke("f", {}))
        await until(lambda: hung.now == 1, "the pod holds the request")
        assert hung.now == 1
        env.clock.advance(5.1)
        status, _ = await asyncio.wait_for(call, 1)
        assert status == 504 and retired == [("f", "f-hung")]
        assert env.activator.ready_pods("f") == 1
        for i in range(3):  # nothing new reaches the retired pod, though its slot is free
            assert await env.invoke("f", {"i": i}) == (200, {"echo": {"i": i}})
        assert hung.calls == 1 and other.calls == 3
        hung.release.set()
    finally:
        await hung.stop()
        await other.stop()
