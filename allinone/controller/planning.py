"""Replica planning: which pods to create and which to remove. Pure.

Input: the desired replica count, the ReplicaSet's current template hash (None while
the function has never been built) and a view of the function's pods. Output: how many
pods to create and which pods to remove. :func:`plan` is idempotent: applying its
result and planning again gives an empty plan.

Rules, with why:

- Pods already ``Terminating`` are on their way out (draining); they count for nothing.
- ``Failed`` pods are removed, and replaced through the normal count.
- Current-template pods are brought to ``desired``. When there are too many, the
  not-ready ones go first (they serve nothing yet), then the newest (the oldest have
  warm caches and are known good), as the Kubernetes ReplicaSet controller does.
- Old-template pods (a rollout) are kept while the new ones are not Ready yet, so a
  rollout never leaves a gap: with desired 3 and 1 new pod Ready, 2 old pods stay;
  when 3 new pods are Ready, all old pods go. With desired 0 every pod goes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PENDING, RUNNING, TERMINATING, FAILED = "Pending", "Running", "Terminating", "Failed"


@dataclass(frozen=True)
class PodView:
    name: str
    template_hash: str
    phase: str
    ready: bool
    created: float


@dataclass(frozen=True)
class Plan:
    create: int = 0
    remove: tuple[str, ...] = field(default_factory=tuple)

    @property
    def empty(self) -> bool:
        return self.create == 0 and not self.remove


def _removal_order(pods: list[PodView]) -> list[PodView]:
    # not-ready first (False sorts before True), then newest first.
    return sorted(pods, key=lambda p: (p.ready, -p.created, p.name))


def plan(desired: int, template_hash: str | None, pods: list[PodView]) -> Plan:
    live = [p for p in pods if p.phase != TERMINATING]
    failed = [p for p in live if p.phase == FAILED]
    alive = [p for p in live if p.phase != FAILED]
    if template_hash is None:
        # Never built: nothing can run; pods of unknown templates are not ours to keep.
        return Plan(0, tuple(p.name for p in failed + alive))

    current = [p for p in alive if p.template_hash == template_hash]
    old = [p for p in alive if p.template_hash != template_hash]
    remove = [p.name for p in failed]
    create = 0
    if len(current) < desired:  # pragma: no mutate (at equality both branches do nothing)
        create = desired - len(current)
    elif len(current) > desired:  # pragma: no mutate (at equality the slice below is empty)
        remove += [p.name for p in _removal_order(current)[: len(current) - desired]]

    ready_current = min(sum(1 for p in current if p.ready), desired)
    # Keep old pods only to cover what the new template cannot serve yet.
    keep_old = max(0, desired - ready_current)
    if len(old) > keep_old:  # pragma: no mutate (at equality the slice below is empty)
        remove += [p.name for p in _removal_order(old)[: len(old) - keep_old]]
    return Plan(create, tuple(remove))
