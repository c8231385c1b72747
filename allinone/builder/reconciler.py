"""The build reconciler: turns a Function's source into a Ready image, or a Failed status.

It watches Functions (through the shared informer) and syncs one function at a time
per key. A Function needs a build when ``metadata.generation`` differs from
``status.observedGeneration`` (new, or changed by ``PUT``). ``sync(name)``:

1. re-reads the Function; if it is gone, waits until none of its pods is left, then
   removes its image tags from the registry and the engine, its saved logs, and its
   source archive when no other function uses it;
2. re-validates the stored source (cheap, and it catches a corrupted state directory),
   builds and pushes through :class:`~allinone.builder.builder.Builder`;
3. writes the pod template (image, handler, env, resources) into the ReplicaSet, then
   ``status.phase = Ready`` into the Function. The order matters: a crash in between
   leaves a Function that is still "Building" and is rebuilt (from cache) on restart,
   never a Ready Function whose ReplicaSet points at an old image;
4. removes the images of earlier generations that no pod uses any more (checked again
   every ``gc_interval`` seconds while old pods are still draining).

A build failure caused by the function becomes ``phase: Failed`` with the builder's
message, written for the user (e.g. which requirement pip could not install). A failure
of the platform (registry or Docker engine unreachable) keeps ``phase: Building`` with
a message saying so, and the build is retried with backoff until it goes through.

A Function deleted while it builds stays deleted: the ReplicaSet is only created while
the Function (same uid) exists, and is removed again if the Function went meanwhile;
the deletion's own sync then removes the image the build pushed.

Scaling-only changes keep the template hash unchanged, so they do not roll pods.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from pathlib import Path
from typing import Any

from allinone import objects
from allinone.builder.builder import Builder, BuildError
from allinone.builder.sources import SourceStore
from allinone.builder.validate import validate_source
from allinone.informer import Informer
from allinone.metrics import Metrics
from allinone.store import AlreadyExists, Conflict, NotFound, Obj, Store
from allinone.workqueue import RetryLater, WorkQueue

log = logging.getLogger(__name__)


def pod_template(fn: Obj, image: str) -> tuple[Obj, str]:
    """The ReplicaSet's pod template for a built function, and its hash.

    ``generation`` and ``timeoutSeconds`` are recorded but left out of the hash: they
    do not change what runs in the container, so changing them must not replace pods.
    """
    spec = fn["spec"]
    template = {
        "image": image,
        "handler": spec.get("handler", "run"),
        "env": dict(spec.get("env") or {}),
        "resources": dict(spec.get("resources") or {}),
    }
    if spec.get("network", "none") != "none":  # absent by default: older hashes stay valid
        template["network"] = spec["network"]
    thash = objects.template_hash(template)
    template["timeoutSeconds"] = spec.get("timeoutSeconds", 60)
    template["generation"] = fn["metadata"]["generation"]
    return template, thash


class BuildReconciler:
    def __init__(self, store: Store, functions: Informer, builder: Builder, sources: SourceStore,
                 metrics: Metrics, *, max_upload: int, max_unzipped: int, workers: int = 2,
                 logs_dir: Path | None = None, gc_interval: float = 10.0) -> None:
        self.store = store
        self.logs_dir = logs_dir
        self.gc_interval = gc_interval
        self.functions = functions
        self.builder = builder
        self.sources = sources
        self.metrics = metrics
        self.max_upload = max_upload
        self.max_unzipped = max_unzipped
        self.queue = WorkQueue("build-reconciler", self.sync, workers)
        # Source hashes of deleted functions, from the informer's last view of them.
        self._deleted_sources: dict[str, str] = {}
        functions.add_handler(self._on_function)

    def _on_function(self, key: str, old: Obj | None, new: Obj | None) -> None:
        if new is None and old is not None:
            self._deleted_sources[old["metadata"]["name"]] = old["spec"]["source"]["sha256"]
        if new is None or new["metadata"]["generation"] != new["status"].get("observedGeneration"):
            self.queue.add(key.rsplit("/", 1)[-1])

    async def run(self) -> None:
        await self.queue.run()

    async def sync(self, name: str) -> None:
        try:
            fn = await self.store.get(objects.function_key(name))
        except NotFound:
            await self._cleanup(name)
            return
        try:
            objects.check_function(fn)
        except ValueError as exc:
            # Logged by the informer; nothing can be built from it until it is fixed.
            log.debug("not building %s: malformed (%s)", name, exc)
            return
        if fn["status"].get("observedGeneration") != fn["metadata"]["generation"]:
            if not await self._build(name, fn):
                return
        await self._collect(name)

    async def _build(self, name: str, fn: Obj) -> bool:
        """Build ``fn``'s generation; True when its image is now the one pods run."""
        generation = fn["metadata"]["generation"]
        uid = fn["metadata"].get("uid")
        src = fn["spec"]["source"]
        handler = fn["spec"].get("handler", "run")
        try:
            data = self.sources.get(src["sha256"])
            validated = validate_source(src["filename"], data, handler,
                                        max_upload=self.max_upload, max_unzipped=self.max_unzipped)
            result = await self.builder.build(name, validated, handler)
        except BuildError as exc:
            if not exc.infrastructure:
                await self._failed(name, uid, generation, exc)
                return False
            self.metrics.builds.labels("retried").inc()
            await self._set_status(name, uid, generation, {
                "phase": objects.BUILDING,
                "message": f"waiting for the platform: {exc}; the build is retried by itself",
            })
            raise RetryLater(f"build of generation {generation} hit an infrastructure "
                             f"failure: {exc}") from exc
        except (ValueError, OSError) as exc:
            await self._failed(name, uid, generation, exc)
            return False
        self.metrics.builds.labels("cached" if result.cached else "built").inc()
        log.info("built %s generation %s in %.2f s%s: %s", name, generation, result.seconds,
                 " (cached)" if result.cached else "", result.image)
        template, thash = pod_template(fn, result.image)
        if not await self._set_template(name, fn, template, thash):
            log.info("%s was deleted while it built; not starting it", name)
            self.queue.add(name)  # the deletion's sync removes what the build pushed
            return False
        await self._set_status(name, uid, generation, {
            "phase": objects.READY, "image": result.image, "message": "",
            "observedGeneration": generation, "buildSeconds": round(result.seconds, 3),
        })
        return True

    async def _failed(self, name: str, uid: str | None, generation: int,
                      exc: Exception) -> None:
        log.warning("build of %s (generation %s) failed: %s", name, generation, exc)
        self.metrics.builds.labels("failed").inc()
        await self._set_status(name, uid, generation, {
            "phase": objects.FAILED, "message": str(exc), "observedGeneration": generation,
        })

    async def _alive(self, name: str, uid: str | None) -> bool:
        """The Function ``name`` still exists as the same object (not deleted and re-made)."""
        try:
            fn = await self.store.get(objects.function_key(name))
        except NotFound:
            return False
        return bool(fn.get("metadata", {}).get("uid") == uid)

    async def _pods_of(self, name: str) -> list[Obj]:
        pods, _ = await self.store.list(objects.PODS_PREFIX)
        return [p for p in pods if isinstance(p.get("spec"), dict)
                and p["spec"].get("function") == name]

    async def _collect(self, name: str) -> None:
        """Remove images of ``name`` that neither its current generation nor a pod uses."""
        keep: set[str] = set()
        try:
            fn = await self.store.get(objects.function_key(name))
            keep.add(str(fn.get("status", {}).get("image", "")))
            rs = await self.store.get(objects.replicaset_key(name))
            keep.add(str(((rs.get("spec") or {}).get("template") or {}).get("image", "")))
        except NotFound:
            return  # deleted meanwhile: the deletion's sync removes everything
        current = _digests(keep)
        if not current:
            return  # nothing built yet: nothing to tell old from new by
        in_use = _digests({str(p["spec"].get("image", "")) for p in await self._pods_of(name)})
        try:
            done = await self.builder.prune(name, current | in_use)
        except BuildError as exc:
            log.warning("removing old images of %s failed (%s); trying again later", name, exc)
            done = False
        if not done or in_use - current:
            # Pods of an earlier generation still run (draining): their image goes
            # once they are gone, at a later pass.
            self.queue.add_after(name, self.gc_interval)

    async def _set_template(self, name: str, fn: Obj, template: Obj, thash: str) -> bool:
        """Point the ReplicaSet at the new template; False when the Function is gone."""
        key = objects.replicaset_key(name)
        uid = fn["metadata"].get("uid")
        for _ in range(10):
            if not await self._alive(name, uid):
                return False
            try:
                rs = await self.store.get(key)
            except NotFound:
                rs = replicaset_for(fn)
                rs["spec"].update(template=template, templateHash=thash)
                try:
                    created = await self.store.create(key, rs)
                except AlreadyExists:
                    continue
                if await self._alive(name, uid):
                    return True
                # The Function was deleted between our check and the create: take the
                # ReplicaSet back so nothing of the function remains.
                with contextlib.suppress(NotFound, Conflict):
                    await self.store.delete(key, created["metadata"]["resourceVersion"])
                return False
            if rs["spec"].get("template") == template and rs["spec"].get("templateHash") == thash:
                return True
            new = copy.deepcopy(rs)
            new["spec"]["template"] = template
            new["spec"]["templateHash"] = thash
            new["metadata"]["generation"] = rs["metadata"].get("generation", 1) + 1
            try:
                await self.store.update(key, new)
                return True
            except Conflict:
                continue  # the autoscaler moved replicas meanwhile; re-read and retry
        raise RuntimeError(f"could not update the ReplicaSet of {name}: too many conflicts")

    async def _set_status(self, name: str, uid: str | None, generation: int,
                          status: dict[str, Any]) -> None:
        key = objects.function_key(name)
        for _ in range(10):
            try:
                fn = await self.store.get(key)
            except NotFound:
                return
            if fn["metadata"].get("uid") != uid or fn["metadata"]["generation"] != generation:
                return  # deleted and re-made, or a newer PUT: its own sync takes over
            new = copy.deepcopy(fn)
            new["status"] = {**fn.get("status", {}), **status}
            if status["phase"] == objects.FAILED:
                new["status"].pop("buildSeconds", None)
            try:
                await self.store.update(key, new)
                return
            except Conflict:
                continue
        raise RuntimeError(f"could not update the status of {name}: too many conflicts")

    async def _cleanup(self, name: str) -> None:
        if await self._pods_of(name):
            # Their containers still use the image and still write logs: wait for the
            # controller to remove them.
            raise RetryLater(f"waiting for the pods of deleted function {name} to go")
        if not await self.builder.delete_image(name):
            raise RetryLater(f"an image of deleted function {name} is still in use")
        if self.logs_dir is not None:
            # NAME.log and its rotations (NAME.log.1...); names have no dots, so this
            # matches no other function's logs.
            for path in self.logs_dir.glob(f"{name}.log*"):
                path.unlink(missing_ok=True)
        sha = self._deleted_sources.pop(name, None)
        # Archives are content-addressed and may be shared by functions with equal source.
        if sha and sha not in {f["spec"]["source"]["sha256"] for f in self.functions.items()}:
            self.sources.delete(sha)


def _digests(images: set[str]) -> frozenset[str]:
    """The sha256:... digests of image references REPO@DIGEST (others are ignored)."""
    return frozenset(ref.rpartition("@")[2] for ref in images if "@" in ref)


def replicaset_for(fn: Obj) -> Obj:
    """A function's ReplicaSet: same name, namespace serverless, starting at initialScale."""
    name = fn["metadata"]["name"]
    initial = int(objects.scaling(fn["spec"]).get("initialScale", 0))
    rs = objects.new_object(
        "ReplicaSet", name,
        {"replicas": initial, "selector": {"function": name}, "template": None,
         "templateHash": None},
        namespace=objects.NAMESPACE, labels={"function": name},
    )
    rs["metadata"]["ownerReferences"] = [
        {"kind": "Function", "name": name, "uid": fn["metadata"]["uid"]}]
    return rs
