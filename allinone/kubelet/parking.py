"""Paused-pod retention ("parking"): the kubelet's rules, as pure functions.

The kubelet (:mod:`allinone.kubelet.kubelet`) does the I/O (``docker pause``, unpause,
removal) and the replica-set controller decides at each removal; the rules they apply
live here, so that the simulator (:mod:`allinone.simulator.engine`) runs the same ones
under its virtual clock. Time is passed in; a parked pod is anything with a
``template_hash`` and the clock time ``since`` it was parked.

Invariants:

- Only a healthy pod (ready, with a container) of the current template, removed by a
  scale-down while retention is on (``keep_paused`` > 0), is parked; failed and outdated
  pods are removed for good.
- A new pod resumes the most recently parked pod of its template (the warmest); parked
  pods of another template met on the way are to be removed.
- A parked pod is kept ``keep_paused`` seconds: it expires once ``now - since`` is
  greater than that (the kubelet checks every ``PARKED_CHECK_INTERVAL`` seconds).
- A standby container (created, never started: the kubelet's) is wanted for a function
  at zero (no replicas wanted, no pod left) when no parked pod of its current template
  would serve the next scale-up first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

PARKED_CHECK_INTERVAL = 1.0  # s between the kubelet's expiry checks of parked pods
# What a function at zero keeps (the kubelet's ``standby``): a container started and
# frozen once healthy, one created and never started, or none.
STANDBY_MODES = ("frozen", "created", "off")


class ParkedPod(Protocol):
    @property
    def template_hash(self) -> str: ...

    @property
    def since(self) -> float: ...


P = TypeVar("P", bound=ParkedPod)


def worth_parking(keep_paused: float, pod_template: str, current_template: str | None,
                  ready: bool, has_container: bool) -> bool:
    """Whether a pod the controller removes is parked rather than removed."""
    return (keep_paused > 0 and pod_template == current_template and ready
            and has_container)


def take(stack: list[P], template_hash: str) -> tuple[P | None, list[P]]:
    """Pop the parked pod a new pod of ``template_hash`` resumes (None: start one) off
    ``stack`` (oldest first), and the other-template pods popped on the way (remove)."""
    stale: list[P] = []
    while stack:
        p = stack.pop()  # the most recently parked: the warmest
        if p.template_hash == template_hash:
            return p, stale
        stale.append(p)
    return None, stale


def wants_standby(standby_on: bool, desired: int, pods: int, template_hash: str | None,
                  parked: Iterable[ParkedPod]) -> bool:
    """Whether a function should have a standby container of ``template_hash`` now."""
    return (standby_on and desired == 0 and pods == 0 and template_hash is not None
            and all(p.template_hash != template_hash for p in parked))


def expired(p: ParkedPod, now: float, keep_paused: float) -> bool:
    """Whether the parked pod ``p`` has been kept long enough at ``now``."""
    return now - p.since > keep_paused
