"""The activator's throttler: admission, a bounded queue, pod choice and draining.

After Knative's ``pkg/activator/net/throttler.go``, but pure: no I/O, no asyncio, no
clock of its own. Every method that depends on time takes ``now``; a waiting request is
an opaque *ticket* chosen by the caller (the activator's proxy uses an
``asyncio.Future``, the simulator a request id), and the throttler only says which
tickets to wake. The proxy (:mod:`allinone.activator.activator`) is the only part that
does I/O: it sends the request to the endpoint the throttler hands out and gives it
back with :meth:`Throttler.release`.

One :class:`Throttler` per function. Invariants:

- ``in_flight`` of an endpoint is the number of :meth:`acquire` calls not yet
  :meth:`release`\\ d; it never exceeds ``containerConcurrency`` (when > 0) nor
  ``pod_capacity`` (the connections a pod's shim serves at once,
  :data:`~allinone.runtime.base.POD_MAX_CONNECTIONS`): "unlimited" concurrency still
  has a bound per pod, and a request over it waits here for a slot or a new pod.
- A draining endpoint gets no new request; it is *drained* when its ``in_flight`` is 0
  (:meth:`release` reports that moment once).
- The queue never holds more than ``queue_limit`` tickets; :meth:`enqueue` refuses the
  one over (the caller answers 503 at once). Tickets are woken in arrival order (FIFO),
  one per freed slot, all of them when the set of pods changes.
- A request is failed by a pod failure only if the pod failed *before it was ever
  ready* (a broken image or handler: waiting longer would only reach the same end) and
  after the request arrived, while no pod is ready. A Running pod that crashes fails
  only what was in flight on it; later requests wait for its replacement.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import Generic, TypeVar

from allinone.activator.balancer import Endpoint, pick
from allinone.runtime.base import POD_MAX_CONNECTIONS

# Requests one function may have waiting for a pod; the one over is refused at once
# (503 Overloaded). `serve --queue-limit` overrides it; the simulator uses it too.
QUEUE_LIMIT = 10_000

T = TypeVar("T")


@dataclass(frozen=True)
class StartFailure:
    at: float  # the clock time the pod failed
    message: str


class Throttler(Generic[T]):
    def __init__(self, queue_limit: int, rng: random.Random | None = None,
                 pod_capacity: int = POD_MAX_CONNECTIONS) -> None:
        self.queue_limit = queue_limit
        self.pod_capacity = pod_capacity
        self.rng = rng or random.Random()
        self.endpoints: dict[str, Endpoint] = {}
        # Waiting tickets in arrival order, with the clock time each gives up.
        self._queue: collections.OrderedDict[T, float] = collections.OrderedDict()
        self.start_failure: StartFailure | None = None

    # -- pods ------------------------------------------------------------------------

    def add(self, endpoint: Endpoint) -> tuple[Endpoint | None, list[T]]:
        """A pod turned ready. Returns the endpoint it replaces (to close) and the
        tickets to wake (all: each re-checks, a new pod has room for many)."""
        old = self.endpoints.get(endpoint.pod)
        self.endpoints[endpoint.pod] = endpoint
        return old, self.wake_all()

    def drain(self, pod: str) -> Endpoint | None:
        """Stop giving ``pod`` new requests; its endpoint (None if unknown)."""
        ep = self.endpoints.get(pod)
        if ep is not None:
            ep.draining = True
        return ep

    def remove(self, pod: str) -> Endpoint | None:
        return self.endpoints.pop(pod, None)

    def pod_failed_to_start(self, now: float, message: str) -> list[T]:
        """A pod failed before it was ready: waiting requests re-check (see
        :meth:`start_failure_for`)."""
        self.start_failure = StartFailure(now, message)
        return self.wake_all()

    def start_failure_for(self, arrived: float) -> str | None:
        """The message a request that arrived at ``arrived`` should fail with, if any:
        a pod failed to start after it arrived and no pod is ready."""
        f = self.start_failure
        if f is not None and f.at >= arrived and self.ready_count() == 0:
            return f.message
        return None

    def ready_count(self) -> int:
        return sum(1 for e in self.endpoints.values() if not e.draining)

    # -- requests ------------------------------------------------------------------

    def acquire(self, container_concurrency: int,
                excluded: Collection[str] = ()) -> Endpoint | None:
        """The endpoint for a request (its ``in_flight`` counted), or None when no pod
        has a free slot. ``excluded`` pods (which refused this request) are skipped."""
        candidates = list(self.endpoints.values()) if not excluded else [
            e for e in self.endpoints.values() if e.pod not in excluded]
        cc = container_concurrency
        limit = min(cc, self.pod_capacity) if cc > 0 else self.pod_capacity
        ep = pick(candidates, limit, self.rng)
        if ep is not None:
            ep.in_flight += 1
        return ep

    def release(self, ep: Endpoint) -> tuple[bool, list[T]]:
        """A request on ``ep`` ended. Returns whether ``ep`` is now drained (draining,
        nothing in flight) and the tickets to wake (one, for the freed slot)."""
        ep.in_flight -= 1
        if ep.draining:
            return ep.in_flight == 0, []
        return False, self._pop(1)

    def enqueue(self, ticket: T, deadline: float) -> bool:
        """Hold ``ticket`` until woken or ``deadline``; False when the queue is full."""
        if len(self._queue) >= self.queue_limit:
            return False
        self._queue[ticket] = deadline
        return True

    def dequeue(self, ticket: T) -> None:
        """The ticket stopped waiting (woken, timed out, cancelled)."""
        self._queue.pop(ticket, None)

    def expired(self, now: float) -> list[T]:
        """Remove and return the tickets whose deadline has passed."""
        gone = [t for t, d in self._queue.items() if d <= now]
        for t in gone:
            del self._queue[t]
        return gone

    def queued(self) -> int:
        return len(self._queue)

    def wake_all(self) -> list[T]:
        return self._pop(len(self._queue))

    def _pop(self, n: int) -> list[T]:
        out = []
        while n > 0 and self._queue:
            ticket, _ = self._queue.popitem(last=False)
            out.append(ticket)
            n -= 1
        return out
