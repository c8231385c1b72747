"""Which ready pod gets the next request: a small pure policy.

The activator keeps one :class:`Endpoint` per ready pod of a function, increments
``in_flight`` when it forwards a request there and decrements it when the answer is
back; :func:`pick` only reads them. Invariants:

- A draining endpoint (pod chosen for removal) never gets a new request.
- With ``containerConcurrency`` N > 0 an endpoint never gets request N + 1: an endpoint
  with ``in_flight >= N`` is full. When every endpoint is full or draining, :func:`pick`
  returns None and the caller holds the request until a slot frees (or answers 503).
- Randomness comes only from the ``rng`` passed in, so tests are reproducible.

The policy, by ``containerConcurrency`` (CC), after Knative's activator throttler:

- CC 1..3: the first endpoint with a free slot, in the order given (callers keep a
  stable order, e.g. by pod name). With one to three slots per pod, "least loaded" is
  mostly a tie among empty pods; packing requests onto the first pods keeps the last
  ones idle, so a scale-down removes pods with nothing in flight and a burst finds
  whole free pods at the end. Knative uses first-available for CC <= 3 for this reason.
- otherwise, up to 8 candidates: least in-flight, ties broken at random so equal pods
  share the load (always taking index 0 would pile every quiet-period request on one).
  Knative round-robins here; our in-flight counts are exact and local, so the least
  loaded pod is known for free and beats round-robin when request times vary.
- more than 8 candidates: power of two choices (two distinct at random, the less
  loaded wins). It is O(1) per pick and, as Mitzenmacher showed, almost as even as
  least-loaded; Knative uses it for unlimited concurrency.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from allinone.podclient import PodClient

# Candidates above which the full least-loaded scan gives way to two random choices.
P2C_ABOVE = 8
# Container concurrency up to which the first free endpoint is taken (Knative: 3).
FIRST_AVAILABLE_MAX_CC = 3


@dataclass
class Endpoint:
    """One ready pod as the activator sees it; mutable, owned by the activator."""

    pod: str
    address: str  # the path of the pod's Unix socket
    in_flight: int = 0
    draining: bool = False
    # The pooled connections to the pod (set by the activator; None in policy tests).
    client: PodClient | None = field(default=None, repr=False, compare=False)


def _has_slot(ep: Endpoint, container_concurrency: int) -> bool:
    if ep.draining:
        return False
    return container_concurrency <= 0 or ep.in_flight < container_concurrency


def pick(
    endpoints: Sequence[Endpoint], container_concurrency: int, rng: random.Random
) -> Endpoint | None:
    """The endpoint for the next request, or None when none has a free slot.

    The caller increments the returned endpoint's ``in_flight`` before the next pick.
    """
    if 1 <= container_concurrency <= FIRST_AVAILABLE_MAX_CC:
        for ep in endpoints:
            if _has_slot(ep, container_concurrency):
                return ep
        return None

    candidates = [ep for ep in endpoints if _has_slot(ep, container_concurrency)]
    if not candidates:
        return None
    if len(candidates) > P2C_ABOVE:
        a, b = rng.sample(candidates, 2)
        # a and b are drawn at random, so which of two equal pods wins changes nothing.
        return b if b.in_flight < a.in_flight else a  # pragma: no mutate
    least = min(ep.in_flight for ep in candidates)
    tied = [ep for ep in candidates if ep.in_flight == least]
    # The shortcut only saves a draw: rng.choice of one element is that element.
    return tied[0] if len(tied) == 1 else rng.choice(tied)  # pragma: no mutate
