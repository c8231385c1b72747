"""The activator: the HTTP trigger's data plane.

Every invocation (``POST /function/NAME``) passes through here, which is why the
autoscaler's metric needs no scraping: the activator counts in-flight requests per
function (including requests it holds) and per pod.

Per request: pick a ready pod (:func:`~allinone.activator.balancer.pick`: least
in-flight, respecting ``containerConcurrency``); if none has a free slot, wait in the
function's bounded queue (503 at once when it is full) until a pod becomes ready or a
slot frees, up to the function's ``timeoutSeconds`` (then 504). With no ready pod at
all, the autoscaler is poked so scale-from-zero starts at once, not at the next tick.
The call goes over the pod's Unix socket through its :class:`~allinone.podclient.PodClient`
(pooled keep-alive connections, one client per pod, made when the pod turns ready and
closed when it is drained). A connect error (nothing was sent) is retried on another
pod; anything after the request may have reached the function is not retried, because
functions need not be idempotent. Deadlines and waits use the injected clock.

Draining (:meth:`Activator.drain`): a pod chosen for removal stops getting new
requests at once and is released when its in-flight requests have finished.

The routing table lives in memory, fed by the controller, so warm functions keep
serving while etcd or the registry is briefly down.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from allinone import objects
from allinone.activator.balancer import Endpoint, pick
from allinone.activator.stats import ConcurrencyTracker
from allinone.clock import Clock
from allinone.informer import Informer
from allinone.metrics import Metrics
from allinone.podclient import ConnectError, PodClient, PodError
from allinone.store import Obj

log = logging.getLogger(__name__)



def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


@dataclass
class Route:
    """The activator's view of one function."""

    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    waiters: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    tracker: ConcurrencyTracker = field(default_factory=ConcurrencyTracker)
    drained: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    # (clock time, message) of the last pod that failed before or while serving.
    failure: tuple[float, str] | None = None
    # Prometheus children of this function, looked up once.
    latency: Any = None
    counters: dict[int, Any] = field(default_factory=dict)

    def ready_count(self) -> int:
        return sum(1 for e in self.endpoints.values() if not e.draining)


@dataclass(frozen=True)
class Result:
    status: int
    body: bytes


class Activator:
    def __init__(
        self,
        functions: Informer,
        clock: Clock,
        metrics: Metrics,
        queue_limit: int = 10_000,
        poke: Callable[[str], None] | None = None,
    ) -> None:
        self.functions = functions
        self.clock = clock
        self.metrics = metrics
        self.queue_limit = queue_limit
        self.poke = poke or (lambda name: None)
        self.routes: dict[str, Route] = {}
        self.rng = random.Random()
        functions.add_handler(self._on_function)

    def _on_function(self, key: str, old: Obj | None, new: Obj | None) -> None:
        # Held requests re-check the function: built, failed or deleted.
        r = self.routes.get(key.rsplit("/", 1)[-1])
        if r is not None:
            self._wake(r, len(r.waiters))

    async def start(self) -> None:
        """Nothing to open: each pod's client is made when the pod turns ready."""

    def in_flight(self) -> int:
        """Invocations inside the activator: on a pod, or held waiting for one."""
        return sum(ep.in_flight for r in self.routes.values() for ep in r.endpoints.values()) \
            + sum(len(r.waiters) for r in self.routes.values())

    async def drain_all(self, timeout: float, poll: float = 0.05) -> int:
        """Wait until nothing is in flight, at most ``timeout`` s; returns what is left.

        Shutdown calls it after the listening socket is closed (see app.py)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Polled: in-flight counts change on many paths, and this runs once, at shutdown.
        while (left := self.in_flight()) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(poll)
        return left

    async def close(self) -> None:
        for r in self.routes.values():
            for ep in r.endpoints.values():
                if ep.client is not None:
                    ep.client.close()

    def route(self, function: str) -> Route:
        r = self.routes.get(function)
        if r is None:
            r = self.routes[function] = Route()
        return r

    # -- EndpointSink (called by the controller) ---------------------------------

    def pod_ready(self, function: str, pod: str, address: str) -> None:
        r = self.route(function)
        old = r.endpoints.get(pod)
        if old is not None and old.client is not None:
            old.client.close()
        r.endpoints[pod] = Endpoint(pod=pod, address=address, in_flight=0, draining=False,
                                    client=PodClient(address))
        self.metrics.ready_replicas.labels(function).set(r.ready_count())
        self._wake(r, len(r.waiters))

    def pod_failed(self, function: str, pod: str, message: str) -> None:
        r = self.route(function)
        r.failure = (self.clock.now(), message)
        self._wake(r, len(r.waiters))

    async def drain(self, function: str, pod: str, timeout: float) -> None:
        r = self.routes.get(function)
        ep = r.endpoints.get(pod) if r else None
        if r is None or ep is None:
            return
        ep.draining = True
        self.metrics.ready_replicas.labels(function).set(r.ready_count())
        if ep.in_flight > 0 and timeout > 0:
            fut = r.drained.setdefault(pod, asyncio.get_running_loop().create_future())
            try:
                await self.clock.wait_for(asyncio.shield(fut), timeout)
            except TimeoutError:
                log.warning("pod %s still had %d requests after %.0f s of draining",
                            pod, ep.in_flight, timeout)
        gone = r.endpoints.pop(pod, None)
        if gone is not None and gone.client is not None:
            gone.client.close()
        r.drained.pop(pod, None)
        if self.functions.get(function) is None and not r.endpoints and not r.waiters:
            self.forget(function)  # the function was deleted and its last pod is gone

    # -- metrics for the autoscaler ----------------------------------------------

    def ready_pods(self, function: str) -> int:
        r = self.routes.get(function)
        return r.ready_count() if r else 0

    def queued(self, function: str) -> int:
        r = self.routes.get(function)
        return len(r.waiters) if r else 0

    def forget(self, function: str) -> None:
        r = self.routes.pop(function, None)
        if r is not None:
            for ep in r.endpoints.values():
                if ep.client is not None:
                    ep.client.close()
            for w in r.waiters:
                if not w.done():
                    w.set_result(None)
        self.metrics.forget(function)

    # -- the request path ----------------------------------------------------------

    def _wake(self, r: Route, n: int) -> None:
        while n > 0 and r.waiters:
            w = r.waiters.popleft()
            if not w.done():
                w.set_result(None)
                n -= 1

    def _release(self, r: Route, ep: Endpoint) -> None:
        ep.in_flight -= 1
        if ep.draining:
            if ep.in_flight == 0:
                fut = r.drained.get(ep.pod)
                if fut is not None and not fut.done():
                    fut.set_result(None)
        elif r.waiters:
            self._wake(r, 1)

    def _admit(self, function: str, r: Route, arrived: float) -> Result | bool:
        """Whether a request may look for a pod now (True), must wait (False), or ends.

        Re-evaluated every time the request wakes, because what it waits for changes:
        the function may be deleted (404), finish its first build (now it may run) or
        fail it (503), or its new pods may crash before they are ready (503 pointing
        at the logs, rather than a 504 a whole timeoutSeconds later).
        """
        fn = self.functions.get(function)
        if fn is None:
            return Result(404, error_body(
                "NotFound", f"no function named {function!r}; deploy it first "
                "(`allinone function deploy NAME --file FILE`)"))
        status = fn.get("status", {})
        if not status.get("image"):  # never built yet (a rebuild keeps serving the old image)
            if status.get("phase") == objects.FAILED:
                return Result(503, error_body(
                    "NotReady", f"function {function!r} failed to build: "
                    f"{status.get('message', '')}"))
            return False
        if r.failure is not None and r.failure[0] >= arrived and r.ready_count() == 0:
            return Result(503, error_body(
                "PodFailed", f"the pod started for {function!r} failed: {r.failure[1]}"))
        return True

    async def _acquire(self, function: str, r: Route, cc: int, arrived: float, deadline: float,
                       excluded: set[str]) -> Endpoint | Result:
        loop = asyncio.get_running_loop()
        while True:
            admitted = self._admit(function, r, arrived)
            if isinstance(admitted, Result):
                return admitted
            if admitted:
                candidates = [e for e in r.endpoints.values() if e.pod not in excluded] \
                    if excluded else list(r.endpoints.values())
                ep = pick(candidates, cc, self.rng)
                if ep is not None:
                    ep.in_flight += 1
                    return ep
                if r.ready_count() == 0:
                    self.poke(function)
            if len(r.waiters) >= self.queue_limit:
                return Result(503, error_body(
                    "Overloaded", f"function {function!r} has {len(r.waiters)} requests waiting "
                    "(the queue limit); retry later or raise scaling.maxScale"))
            remaining = deadline - self.clock.now()
            if remaining <= 0:
                what = "no pod of it became free" if admitted else "its build did not finish"
                return Result(504, error_body(
                    "Timeout", f"{function!r} could not take the request within its "
                    f"timeoutSeconds: {what}; see `allinone function get {function}`"))
            fut: asyncio.Future[None] = loop.create_future()
            r.waiters.append(fut)
            self.metrics.queue_depth.labels(function).set(len(r.waiters))
            try:
                await self.clock.wait_for(fut, remaining)
            except TimeoutError:
                pass
            finally:
                if not fut.done():
                    fut.cancel()
                if fut in r.waiters:
                    r.waiters.remove(fut)
                self.metrics.queue_depth.labels(function).set(len(r.waiters))

    async def invoke(self, function: str, body: bytes) -> Result:
        if not self.functions.synced.is_set():
            # Just after start the cache is still empty: a 404 now would be a lie.
            await self.functions.synced.wait()
        fn = self.functions.get(function)
        if fn is None:
            return Result(404, error_body(
                "NotFound", f"no function named {function!r}; deploy it first "
                "(`allinone function deploy NAME --file FILE`)"))
        r = self.route(function)
        t0 = self.clock.now()
        # Latency by perf_counter: uvloop's loop.time() ticks in whole milliseconds, which
        # would record every ~0.4 ms warm request as 0 or 1 ms.
        started = time.perf_counter()
        timeout = float(fn["spec"].get("timeoutSeconds", 60))
        cc = int(fn["spec"].get("scaling", {}).get("containerConcurrency", 0))
        cold = r.ready_count() == 0
        r.tracker.start(self.clock.now())
        try:
            if cold:
                self.metrics.cold_starts.labels(function).inc()
            result = await self._forward(function, r, cc, body, t0, timeout)
        finally:
            r.tracker.finish(self.clock.now())
        elapsed = time.perf_counter() - started
        if r.latency is None:  # labels() takes a lock and a dict lookup: once per function
            r.latency = self.metrics.latency.labels(function)
        r.latency.observe(elapsed)
        if cold:
            self.metrics.cold_start_latency.labels(function).observe(elapsed)
        return self._count(function, result)

    def _count(self, function: str, result: Result) -> Result:
        r = self.routes.get(function)
        counter = r.counters.get(result.status) if r is not None else None
        if counter is None:
            counter = self.metrics.invocations.labels(function, str(result.status))
            if r is not None:
                r.counters[result.status] = counter
        counter.inc()
        return result

    async def _forward(self, function: str, r: Route, cc: int, body: bytes,
                       arrived: float, timeout: float) -> Result:
        deadline = arrived + timeout
        excluded: set[str] = set()
        while True:
            got = await self._acquire(function, r, cc, arrived, deadline, excluded)
            if isinstance(got, Result):
                return got
            ep = got
            assert ep.client is not None
            try:
                remaining = max(deadline - self.clock.now(), 0.001)
                status, payload = await self.clock.wait_for(
                    ep.client.request("POST", "/", body), remaining)
                return Result(status, payload)
            except ConnectError as exc:
                # Nothing reached the pod: safe to try another one.
                log.warning("pod %s refused the connection (%s); retrying elsewhere", ep.pod, exc)
                excluded.add(ep.pod)
            except TimeoutError:
                return Result(504, error_body(
                    "Timeout", f"function {function!r} did not answer within its "
                    f"timeoutSeconds ({timeout:g} s); raise spec.timeoutSeconds if it needs "
                    "longer"))
            except (PodError, OSError) as exc:
                return Result(503, error_body(
                    "PodFailed", f"the pod serving {function!r} failed during the request "
                    f"({type(exc).__name__}); the request was not retried because it may "
                    "have run"))
            finally:
                self._release(r, ep)
