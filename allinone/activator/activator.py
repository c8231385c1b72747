"""The activator: the HTTP trigger's data plane (the proxy around a throttler).

Every invocation (``POST /function/NAME``) passes through here, which is why the
autoscaler's metric needs no scraping: the activator counts in-flight requests per
function (including requests it holds) and per pod.

The decisions are the :class:`~allinone.activator.throttler.Throttler`'s (pure, one per
function): admission, the bounded queue (503 at once when it is full), pod choice
(least in-flight, respecting ``containerConcurrency``) and draining. This module is the
proxy, the only part doing I/O: it waits on asyncio futures as the throttler's queue
tickets, up to the function's ``timeoutSeconds`` (then 504), pokes the autoscaler when
no pod is ready (scale-from-zero starts at once, not at the next tick), and sends the
call over the pod's Unix socket through its :class:`~allinone.podclient.PodClient`
(pooled keep-alive connections, one client per pod, made when the pod turns ready and
closed when it is drained). A connect error (nothing was sent) is retried on another
pod; anything after the request may have reached the function is not retried, because
functions need not be idempotent. Deadlines and waits use the injected clock.

Failures: a pod that crashes while serving fails only its in-flight requests, whose
503 names the cause the kubelet reports (Docker's exit code, ``OOMKilled`` with the
memory limit); later requests wait for a replacement or go to other pods. A request
that outlives ``timeoutSeconds`` gets 504 and its pod is *retired* (:attr:`Activator.retire`):
no new requests, replaced once the others finished, because the shim cannot stop a
handler thread that never returns.

Draining (:meth:`Activator.drain`): a pod chosen for removal stops getting new
requests at once and is released when its in-flight requests have finished.

The routing table lives in memory, fed by the kubelet, so warm functions keep
serving while etcd or the registry is briefly down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from allinone import objects
from allinone.activator.balancer import Endpoint
from allinone.activator.stats import ConcurrencyTracker
from allinone.activator.throttler import QUEUE_LIMIT, Throttler
from allinone.clock import Clock
from allinone.informer import Informer
from allinone.metrics import Metrics
from allinone.podclient import ConnectError, PodClient, PodError
from allinone.runtime.base import POD_MAX_CONNECTIONS
from allinone.store import Obj

log = logging.getLogger(__name__)

# s a request that broke on a pod waits for the kubelet to say why the pod died
# (Docker's die event follows the broken connection by a few milliseconds).
CRASH_CAUSE_WAIT = 2.0


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


@dataclass
class Route:
    """The activator's view of one function: its throttler and what the proxy keeps."""

    throttler: Throttler[asyncio.Future[None]]
    tracker: ConcurrencyTracker = field(default_factory=ConcurrencyTracker)
    drained: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    # Why a pod that was serving failed (pod -> message), set when the kubelet says so;
    # a request that broke on that pod waits briefly for it to name the cause.
    crashes: dict[str, asyncio.Future[str]] = field(default_factory=dict)
    # Prometheus children of this function, looked up once.
    latency: Any = None
    counters: dict[int, Any] = field(default_factory=dict)

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        return self.throttler.endpoints

    def ready_count(self) -> int:
        return self.throttler.ready_count()


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
        queue_limit: int = QUEUE_LIMIT,
        poke: Callable[[str], None] | None = None,
    ) -> None:
        self.functions = functions
        self.clock = clock
        self.metrics = metrics
        self._queue_limit = queue_limit
        self.poke = poke or (lambda name: None)
        # Called with (function, pod, reason) when a pod must be replaced though its
        # container lives: a request outlived timeoutSeconds there, so its handler may
        # still be running (burning CPU). The kubelet retires the pod once drained.
        self.retire: Callable[[str, str, str], None] = lambda function, pod, reason: None
        self.routes: dict[str, Route] = {}
        self.rng = random.Random()
        functions.add_handler(self._on_function)

    @property
    def queue_limit(self) -> int:
        """Requests a function may have waiting; the one over gets 503 at once."""
        return self._queue_limit

    @queue_limit.setter
    def queue_limit(self, limit: int) -> None:
        self._queue_limit = limit
        for r in self.routes.values():
            r.throttler.queue_limit = limit

    def _on_function(self, key: str, old: Obj | None, new: Obj | None) -> None:
        # Held requests re-check the function: built, failed or deleted.
        r = self.routes.get(key.rsplit("/", 1)[-1])
        if r is not None:
            self._wake(r.throttler.wake_all())

    async def start(self) -> None:
        """Nothing to open: each pod's client is made when the pod turns ready."""

    def in_flight(self) -> int:
        """Invocations inside the activator: on a pod, or held waiting for one."""
        return sum(ep.in_flight for r in self.routes.values() for ep in r.endpoints.values()) \
            + sum(r.throttler.queued() for r in self.routes.values())

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
            r = self.routes[function] = Route(Throttler(self.queue_limit, self.rng))
        return r

    # -- EndpointSink (called by the kubelet) -------------------------------------------

    def pod_ready(self, function: str, pod: str, address: str) -> None:
        r = self.route(function)
        old, wake = r.throttler.add(Endpoint(pod=pod, address=address, in_flight=0,
                                             draining=False,
                                             client=PodClient(address, POD_MAX_CONNECTIONS)))
        if old is not None and old.client is not None:
            old.client.close()
        self.metrics.ready_replicas.labels(function).set(r.ready_count())
        self._wake(wake)

    def pod_failed(self, function: str, pod: str, message: str) -> None:
        r = self.route(function)
        ep = r.endpoints.get(pod)
        if ep is None:
            # Failed before it was ever ready: requests waiting for it stop waiting.
            self._wake(r.throttler.pod_failed_to_start(self.clock.now(), message))
            return
        # A serving pod crashed: only its in-flight requests fail (they learn why);
        # the others keep waiting for a replacement or go to other pods.
        r.throttler.drain(pod)
        self.metrics.ready_replicas.labels(function).set(r.ready_count())
        fut = r.crashes.get(pod)
        if fut is None:
            fut = r.crashes[pod] = asyncio.get_running_loop().create_future()
        if not fut.done():
            fut.set_result(message)
        if ep.in_flight == 0:
            r.crashes.pop(pod, None)

    async def drain(self, function: str, pod: str, timeout: float) -> None:
        r = self.routes.get(function)
        ep = r.throttler.drain(pod) if r else None
        if r is None or ep is None:
            return
        self.metrics.ready_replicas.labels(function).set(r.ready_count())
        if ep.in_flight > 0 and timeout > 0:
            fut = r.drained.setdefault(pod, asyncio.get_running_loop().create_future())
            try:
                await self.clock.wait_for(asyncio.shield(fut), timeout)
            except TimeoutError:
                log.warning("pod %s still had %d requests after %.0f s of draining",
                            pod, ep.in_flight, timeout)
        gone = r.throttler.remove(pod)
        if gone is not None and gone.client is not None:
            gone.client.close()
        r.drained.pop(pod, None)
        if ep.in_flight == 0:
            r.crashes.pop(pod, None)
        if self.functions.get(function) is None and not r.endpoints \
                and not r.throttler.queued():
            self.forget(function)  # the function was deleted and its last pod is gone

    # -- metrics for the autoscaler ----------------------------------------------

    def ready_pods(self, function: str) -> int:
        r = self.routes.get(function)
        return r.ready_count() if r else 0

    def pod_in_flight(self, function: str, pod: str) -> int:
        """Requests on one pod now (0 for a pod the data plane does not serve)."""
        r = self.routes.get(function)
        ep = r.endpoints.get(pod) if r else None
        return ep.in_flight if ep is not None else 0

    def queued(self, function: str) -> int:
        r = self.routes.get(function)
        return r.throttler.queued() if r else 0

    def forget(self, function: str) -> None:
        r = self.routes.pop(function, None)
        if r is not None:
            for ep in r.endpoints.values():
                if ep.client is not None:
                    ep.client.close()
            self._wake(r.throttler.wake_all())
        self.metrics.forget(function)

    # -- the request path (the proxy: the throttler decides, this does the I/O) -------

    @staticmethod
    def _wake(tickets: list[asyncio.Future[None]]) -> None:
        for w in tickets:
            if not w.done():
                w.set_result(None)

    def _release(self, r: Route, ep: Endpoint) -> None:
        drained, wake = r.throttler.release(ep)
        if drained:
            fut = r.drained.get(ep.pod)
            if fut is not None and not fut.done():
                fut.set_result(None)
        self._wake(wake)

    def _admit(self, function: str, r: Route, arrived: float) -> Result | bool:
        """Whether a request may look for a pod now (True), must wait (False), or ends.

        Re-evaluated every time the request wakes, because what it waits for changes:
        the function may be deleted (404), finish its first build (now it may run) or
        fail it (503), or its new pods may fail before they are ready (503 pointing
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
        failed = r.throttler.start_failure_for(arrived)
        if failed is not None:
            return Result(503, error_body(
                "PodFailed", f"the pod started for {function!r} failed: {failed}"))
        return True

    async def _acquire(self, function: str, r: Route, cc: int, arrived: float, deadline: float,
                       excluded: set[str]) -> Endpoint | Result:
        loop = asyncio.get_running_loop()
        while True:
            admitted = self._admit(function, r, arrived)
            if isinstance(admitted, Result):
                return admitted
            if admitted:
                ep = r.throttler.acquire(cc, excluded)
                if ep is not None:
                    return ep
                if r.ready_count() == 0:
                    self.poke(function)
            remaining = deadline - self.clock.now()
            if remaining <= 0:
                what = "no pod of it became free" if admitted else "its build did not finish"
                return Result(504, error_body(
                    "Timeout", f"{function!r} could not take the request within its "
                    f"timeoutSeconds: {what}; see `allinone function get {function}`"))
            fut: asyncio.Future[None] = loop.create_future()
            if not r.throttler.enqueue(fut, deadline):
                return Result(503, error_body(
                    "Overloaded", f"function {function!r} has {r.throttler.queued()} requests "
                    "waiting (the queue limit); retry later or raise scaling.maxScale"))
            self.metrics.queue_depth.labels(function).set(r.throttler.queued())
            try:
                await self.clock.wait_for(fut, remaining)
            except TimeoutError:
                pass
            finally:
                if not fut.done():
                    fut.cancel()
                r.throttler.dequeue(fut)
                self.metrics.queue_depth.labels(function).set(r.throttler.queued())

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

    async def _crash_cause(self, r: Route, pod: str) -> str | None:
        """Why ``pod`` failed, as the kubelet reports it (its container's death is seen
        a moment after the connection broke), or None if it does not say in time."""
        fut = r.crashes.get(pod)
        if fut is None:
            fut = r.crashes[pod] = asyncio.get_running_loop().create_future()
        try:
            return await self.clock.wait_for(asyncio.shield(fut), CRASH_CAUSE_WAIT)
        except TimeoutError:
            return None

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
                # The handler may run on (a thread in the shim cannot be stopped): the
                # pod gets no new requests and is replaced once the others finished.
                if r.throttler.drain(ep.pod) is not None:
                    self.metrics.ready_replicas.labels(function).set(r.ready_count())
                    self.retire(function, ep.pod, f"a request outlived timeoutSeconds "
                                f"({timeout:g} s); its handler may still be running")
                return Result(504, error_body(
                    "Timeout", f"function {function!r} did not answer within its "
                    f"timeoutSeconds ({timeout:g} s); raise spec.timeoutSeconds if it needs "
                    "longer"))
            except (PodError, OSError) as exc:
                cause = await self._crash_cause(r, ep.pod)
                what = f"crashed: {cause}" if cause else f"failed ({exc})"
                return Result(503, error_body(
                    "PodFailed", f"the pod {ep.pod} serving {function!r} {what}; the request "
                    "was not retried because it may have run"))
            finally:
                self._release(r, ep)
                if ep.draining and ep.in_flight == 0 and ep.pod not in r.endpoints:
                    r.crashes.pop(ep.pod, None)
