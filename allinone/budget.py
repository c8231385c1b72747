"""Admission limits: the pod memory budget and the per-function pod ceiling.

The machine has so much memory; a spec must not ask for more pods than it can hold
(``minScale 1000, memoryMiB 65536`` once started 547 containers before the server was
stopped). Two limits, set on ``allinone serve``:

- the **pod memory budget** (``--pod-memory-budget MIB``, default
  :data:`DEFAULT_BUDGET_SHARE` of the host's memory): the sum of ``memoryMiB`` over all
  pods may not exceed it. ``memoryMiB`` is each pod's hard limit (the container's
  cgroup limit), so it is what a pod may take, and what the budget counts;
- the **pod ceiling** (``--max-pods-per-function N``): no function runs more pods.

They act twice:

1. **Admission** (:func:`admit`, at create and update, HTTP 400): a spec is refused
   when it cannot fit at all: a ``maxScale`` (``minScale``, ``initialScale``) above the
   ceiling; one pod, ``minScale`` or ``initialScale`` pods larger than the budget; or
   its ``minScale`` pods next to the ``minScale`` pods every other function keeps
   running. A ``maxScale`` the user left out (the default 10) is lowered to the
   ceiling rather than refused (:func:`with_ceiling`).
2. **Run time** (:func:`cap_replicas`, where the autoscaler writes desired replicas):
   a scale-up is capped at what fits next to the memory other functions hold now
   (:func:`committed_mib`: per ReplicaSet the larger of its desired and its running
   pods, so pods still draining count until they are gone). The Function's
   ``status.capped`` then says by how much and why.

Everything above is pure (objects and numbers in, a decision out) and table-tested.
:class:`PodBudget` is the thin stateful part: it reads the informers' caches and
writes ``status.capped``.

Invariant: as long as every write of ``replicas`` goes through :meth:`PodBudget.cap`
(the autoscaler) or :meth:`PodBudget.initial_replicas` (the apiserver at create), the
desired pods of all functions fit the budget. Paused pods (``serve --keep-paused``) are
not counted: they are kept only as long as they are not needed.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from allinone import objects
from allinone.informer import Informer
from allinone.objects import Obj, ValidationError
from allinone.store import Conflict, NotFound, Store

log = logging.getLogger(__name__)

# Of the host's memory, the share pods may take by default; the rest is for the
# server, etcd, the registry, the Docker engine, builds and the system.
DEFAULT_BUDGET_SHARE = 0.75
DEFAULT_MAX_PODS_PER_FUNCTION = 100

# status.capped reasons
MEMORY_BUDGET = "PodMemoryBudget"
POD_CEILING = "MaxPodsPerFunction"


@dataclass(frozen=True)
class Limits:
    pod_memory_mib: int
    max_pods_per_function: int


def host_memory_mib() -> int:
    """The host's physical memory in MiB."""
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024))


def default_pod_memory_mib(host_mib: int) -> int:
    return int(host_mib * DEFAULT_BUDGET_SHARE)


def limits_for(pod_memory_mib: int | None, max_pods_per_function: int) -> Limits:
    """The limits of a server; ``None`` takes the default share of this host's memory."""
    budget = pod_memory_mib if pod_memory_mib is not None else default_pod_memory_mib(
        host_memory_mib())
    return Limits(budget, max_pods_per_function)


def memory_of(spec: Mapping[str, object]) -> int:
    """memoryMiB of one pod of a Function spec or a ReplicaSet template."""
    resources = spec.get("resources")
    default = int(objects.DEFAULT_SPEC["resources"]["memoryMiB"])
    if isinstance(resources, Mapping):
        value = resources.get("memoryMiB", default)
        if isinstance(value, int | float):
            return int(value)
    return default


def _reserved(fn: Obj) -> int:
    """Memory a Function keeps running whatever its load: minScale pods."""
    return int(objects.scaling(fn["spec"]).get("minScale", 0)) * memory_of(fn["spec"])


_FLAGS = ("the server's operator sets it with `allinone serve --pod-memory-budget MIB`")


def max_scale_given(user_spec: object) -> bool:
    """Whether a user's (partial) spec sets scaling.maxScale itself."""
    scaling = user_spec.get("scaling") if isinstance(user_spec, Mapping) else None
    return isinstance(scaling, Mapping) and "maxScale" in scaling


def with_ceiling(spec: Obj, limits: Limits, *, max_scale_given: bool) -> Obj:
    """``spec`` with a maxScale the user did not give lowered to the ceiling.

    The default maxScale (10) is not the user's wish: on a server whose ceiling is
    lower it becomes the ceiling, instead of refusing every spec that leaves it out.
    A maxScale the user gave is checked by :func:`admit` and refused if too high.
    """
    ceiling = limits.max_pods_per_function
    if max_scale_given or objects.scaling(spec)["maxScale"] <= ceiling:
        return spec
    out = copy.deepcopy(spec)
    out["scaling"] = {**objects.scaling(spec), "maxScale": ceiling}
    return out


def admit(name: str, spec: Obj, others: Iterable[Obj], limits: Limits) -> None:
    """Refuse (ValidationError) a Function spec that cannot fit this server's limits.

    ``others`` are the other Functions (``name`` itself is skipped if present), whose
    ``minScale`` pods are always running.
    """
    sc = objects.scaling(spec)
    memory = memory_of(spec)
    budget = limits.pod_memory_mib
    ceiling = limits.max_pods_per_function
    for field in ("maxScale", "minScale", "initialScale"):
        if sc[field] > ceiling:
            raise ValidationError(
                f"spec.scaling.{field} {sc[field]} is above this server's limit of "
                f"{ceiling} pods per function: set {field} to at most {ceiling} (the "
                "server's operator sets the limit with `allinone serve "
                "--max-pods-per-function N`)")
    if memory > budget:
        raise ValidationError(
            f"spec.resources.memoryMiB {memory} is more than this server's whole pod memory "
            f"budget of {budget} MiB: lower memoryMiB ({_FLAGS})")
    fit = budget // memory
    for field in ("minScale", "initialScale"):
        n = int(sc[field])
        if n * memory > budget:
            raise ValidationError(
                f"spec.scaling.{field} {n} x resources.memoryMiB {memory} = {n * memory} MiB "
                f"cannot fit in this server's pod memory budget of {budget} MiB: at most "
                f"{fit} pods of {memory} MiB fit; lower {field} or memoryMiB ({_FLAGS})")
    mine = int(sc["minScale"]) * memory
    if mine:
        held = sum(_reserved(f) for f in others if f["metadata"]["name"] != name)
        if held + mine > budget:
            raise ValidationError(
                f"spec.scaling.minScale {sc['minScale']} x resources.memoryMiB {memory} = "
                f"{mine} MiB does not fit next to the {held} MiB that other functions keep "
                f"running with their minScale (pod memory budget {budget} MiB, "
                f"{max(budget - held, 0)} MiB left): lower minScale or memoryMiB here or on "
                f"another function ({_FLAGS})")


def committed_mib(replicasets: Iterable[Obj], functions: Mapping[str, Obj], exclude: str,
                  pending: Mapping[str, int] | None = None) -> int:
    """Memory held by the pods of every function but ``exclude``.

    Per ReplicaSet, pods = the largest of ``spec.replicas`` (what will run),
    ``status.replicas`` (what runs: a scale-down still draining) and ``pending`` (a
    count just written that the cache does not show yet). Memory per pod is the
    template's, else the Function's (a ReplicaSet whose first build is not done).
    """
    pending = pending or {}
    total = 0
    for rs in replicasets:
        name = rs["metadata"]["name"]
        if name == exclude:
            continue
        pods = max(int(rs["spec"].get("replicas") or 0),
                   int((rs.get("status") or {}).get("replicas") or 0),
                   pending.get(name, 0))
        if not pods:
            continue
        template = rs["spec"].get("template")
        if isinstance(template, Mapping):
            memory = memory_of(template)
        else:
            fn = functions.get(name)
            memory = memory_of(fn["spec"]) if fn is not None else memory_of({})
        total += pods * memory
    return total


@dataclass(frozen=True)
class Cap:
    replicas: int  # what may be written: min(desired, what fits)
    requested: int  # what the autoscaler (or initialScale) asked for
    reason: str | None  # MEMORY_BUDGET or POD_CEILING when capped, else None
    message: str  # for people; "" when not capped

    @property
    def capped(self) -> bool:
        return self.reason is not None

    def status(self) -> dict[str, object] | None:
        """The Function's ``status.capped``, or None when nothing is capped."""
        if self.reason is None:
            return None
        return {"reason": self.reason, "requested": self.requested,
                "allowed": self.replicas, "message": self.message}


def cap_replicas(desired: int, memory_mib: int, committed_others: int,
                 limits: Limits) -> Cap:
    """The replicas a function may have: ``desired``, or less when it does not fit."""
    free = max(limits.pod_memory_mib - committed_others, 0)
    by_memory = free // max(memory_mib, 1)
    allowed = min(by_memory, limits.max_pods_per_function)
    if desired <= allowed:
        return Cap(desired, desired, None, "")
    if allowed == limits.max_pods_per_function:  # the ceiling binds (perhaps memory too)
        return Cap(allowed, desired, POD_CEILING,
                   f"capped at {allowed} of {desired} wanted pods: this server runs at most "
                   f"{limits.max_pods_per_function} pods per function "
                   "(`allinone serve --max-pods-per-function`)")
    return Cap(allowed, desired, MEMORY_BUDGET,
               f"capped at {allowed} of {desired} wanted pods: the pod memory budget is "
               f"{limits.pod_memory_mib} MiB, other functions hold {committed_others} MiB, "
               f"and each pod of this function takes {memory_mib} MiB "
               "(`allinone serve --pod-memory-budget`)")


class PodBudget:
    """The budget against the live objects: admission and run-time caps.

    Reads the Function and ReplicaSet informers' caches; writes ``status.capped`` of a
    Function when it changes. One instance per server, shared by the apiserver and the
    autoscaler, both on the one event loop.
    """

    def __init__(self, limits: Limits, store: Store, functions: Informer,
                 replicasets: Informer) -> None:
        self.limits = limits
        self.store = store
        self.functions = functions
        self.replicasets = replicasets
        # Replicas handed out by cap() that the ReplicaSet cache may not show yet: two
        # functions scaled in one tick must not both count on the same free memory.
        self._pending: dict[str, int] = {}
        replicasets.add_handler(self._on_replicaset)

    def _on_replicaset(self, key: str, old: Obj | None, new: Obj | None) -> None:
        name = key.rsplit("/", 1)[-1]
        if new is None or int(new["spec"].get("replicas") or 0) == self._pending.get(name):
            self._pending.pop(name, None)

    def admit(self, name: str, spec: Obj, user_spec: object) -> Obj:
        """The spec to store (maxScale within the ceiling), or ValidationError."""
        spec = with_ceiling(spec, self.limits, max_scale_given=max_scale_given(user_spec))
        admit(name, spec, self.functions.items(), self.limits)
        return spec

    def _cap(self, name: str, desired: int, memory: int) -> Cap:
        functions = {f["metadata"]["name"]: f for f in self.functions.items()}
        committed = committed_mib(self.replicasets.items(), functions, name, self._pending)
        return cap_replicas(desired, memory, committed, self.limits)

    def initial_replicas(self, name: str, spec: Obj) -> int:
        """The replicas a new function's ReplicaSet starts with: initialScale if it fits."""
        cap = self._cap(name, int(objects.scaling(spec).get("initialScale", 0)),
                        memory_of(spec))
        self._pending[name] = cap.replicas
        return cap.replicas

    async def cap(self, name: str, fn: Obj, desired: int) -> Cap:
        """Cap a desired replica count, and record on the Function whether it is capped."""
        rs = self.replicasets.get(name)
        template = rs["spec"].get("template") if rs is not None else None
        memory = memory_of(template if isinstance(template, Mapping) else fn["spec"])
        cap = self._cap(name, desired, memory)
        self._pending[name] = cap.replicas
        await self._record(name, cap)
        return cap

    async def _record(self, name: str, cap: Cap) -> None:
        wanted = cap.status()
        fn = self.functions.get(name)
        for _ in range(5):
            if fn is None or fn["status"].get("capped") == wanted:
                return
            new = copy.deepcopy(fn)
            if wanted is None:
                new["status"].pop("capped", None)
            else:
                new["status"]["capped"] = wanted
                log.warning("%s: %s", name, cap.message)
            try:
                await self.store.update(objects.function_key(name), new)
                return
            except Conflict:
                try:
                    fn = await self.store.get(objects.function_key(name))
                except NotFound:
                    return
            except NotFound:
                return
