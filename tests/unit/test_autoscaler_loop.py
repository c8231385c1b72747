"""The autoscaler loop's wiring of the metric: the activator's request counts become the
KPA's requests per second when ``metric`` is ``rps``, its concurrency otherwise; the
excess burst capacity reaches the status and /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from allinone import objects
from allinone.activator.activator import Activator
from allinone.autoscaler.loop import Autoscaler
from allinone.clock import ManualClock
from allinone.informer import Informer
from allinone.metrics import Metrics
from allinone.store.memory import MemoryStore
from allinone.testing import running, until


class Env:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.clock = ManualClock()
        self.metrics = Metrics()
        self.functions = Informer(self.store, objects.FUNCTIONS_PREFIX)
        self.replicasets = Informer(self.store, objects.REPLICASETS_PREFIX)
        self.activator = Activator(self.functions, self.clock, self.metrics)
        self.autoscaler = Autoscaler(self.store, self.functions, self.replicasets,
                                     self.activator, self.clock, self.metrics)

    async def put(self, name: str, **scaling: Any) -> None:
        fn = objects.new_object("Function", name, objects.normalize_spec({"scaling": scaling}))
        await self.store.create(objects.function_key(name), fn)
        rs = objects.new_object("ReplicaSet", name, {"replicas": 0},
                                namespace=objects.NAMESPACE)
        await self.store.create(objects.replicaset_key(name), rs)
        await until(lambda: self.functions.get(name) and self.replicasets.get(name),
                    f"the informers see {name}")

    def requests(self, name: str, count: int, seconds: float) -> None:
        """``count`` requests spread over ``seconds``, each finishing at once."""
        tracker = self.activator.route(name).tracker
        for _ in range(count):
            tracker.start(self.clock.now())
            tracker.finish(self.clock.now())
            self.clock.advance(seconds / count)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = Env()
    async with running(e.functions.run(), e.replicasets.run()):
        await e.functions.synced.wait()
        await e.replicasets.synced.wait()
        yield e


@pytest.mark.parametrize(("metric", "want"), [("rps", 3), ("concurrency", None)])
async def test_metric_choice(env: Env, metric: str, want: int | None) -> None:
    # 20 requests per second of zero duration: rps 20 -> ceil(20 / 7) = 3 pods; their
    # concurrency is 0, so the concurrency metric sees no load (but a request happened,
    # so it decides rather than "no data").
    await env.put("f", metric=metric)
    env.activator.route("f").tracker.take(env.clock.now())  # start the first interval
    env.requests("f", 40, 2.0)
    decision = await env.autoscaler.scale("f")
    assert decision is not None
    status = env.autoscaler.status("f")
    assert status["metric"] == metric
    if metric == "rps":
        assert decision.stable_concurrency == pytest.approx(20.0)
        assert decision.desired == want
    else:
        assert decision.stable_concurrency == 0.0 and decision.desired == 0
    rs = await env.store.get(objects.replicaset_key("f"))
    assert rs["spec"]["replicas"] == (want or 0)


async def test_excess_burst_capacity_in_status_and_metrics(env: Env) -> None:
    await env.put("g", targetBurstCapacity=5)
    env.activator.route("g").tracker.take(env.clock.now())
    env.requests("g", 2, 1.0)
    await env.autoscaler.scale("g")
    # No ready pod: floor(0 x 10 - 5 - panic 0) = -5.
    assert env.autoscaler.status("g")["excessBurstCapacity"] == -5
    text = env.metrics.render().decode()
    assert 'allinone_excess_burst_capacity{function="g"} -5.0' in text


async def test_a_standing_decision_is_kept_and_its_replicas_still_checked(env: Env) -> None:
    await env.put("f")
    tracker = env.activator.route("f").tracker
    tracker.take(env.clock.now())
    tracker.start(env.clock.now())
    env.clock.advance(1.0)
    tracker.finish(env.clock.now())
    first = await env.autoscaler.scale("f")
    assert first is not None and first.desired == 1 and first.stands_until > 60
    key = objects.replicaset_key("f")
    assert (await env.store.get(key))["spec"]["replicas"] == 1
    env.clock.advance(2.0)
    assert await env.autoscaler.scale("f") is first  # nothing happened: it stands
    # Someone else's write is still undone against the standing decision.
    rs = await env.store.get(key)
    rs["spec"]["replicas"] = 5
    await env.store.update(key, rs)
    await until(lambda: env.replicasets.get("f")["spec"]["replicas"] == 5, "the informer")
    env.clock.advance(2.0)
    assert await env.autoscaler.scale("f") is first
    assert (await env.store.get(key))["spec"]["replicas"] == 1
    # A poke decides anew.
    env.clock.advance(2.0)
    again = await env.autoscaler.scale("f", poked=True)
    assert again is not None and again is not first and again.desired == 1
