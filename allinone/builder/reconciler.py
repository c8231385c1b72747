"""The build reconciler: turns a Function's source into a Ready image, or a Failed status.

It watches Functions (through the shared informer) and syncs one function at a time
per key. A Function needs a build when ``metadata.generation`` differs from
``status.observedGeneration`` (new, or changed by ``PUT``). ``sync(name)``:

1. re-reads the Function; if it is gone, removes its image tags from the registry and
   its source archive when no other function uses it;
2. re-validates the stored source (cheap, and it catches a corrupted state directory),
   builds and pushes through :class:`~allinone.builder.builder.Builder`;
3. writes the pod template (image, handler, env, resources) into the ReplicaSet, then
   ``status.phase = Ready`` into the Function. The order matters: a crash in between
   leaves a Function that is still "Building" and is rebuilt (from cache) on restart,
   never a Ready Function whose ReplicaSet points at an old image.

A build failure becomes ``phase: Failed`` with the builder's message, which is written
for the user (e.g. which requirement pip could not install).

Scaling-only changes keep the template hash unchanged, so they do not roll pods.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from allinone import objects
from allinone.builder.builder import Builder, BuildError
from allinone.builder.sources import SourceStore
from allinone.builder.validate import validate_source
from allinone.informer import Informer
from allinone.metrics import Metrics
from allinone.store import AlreadyExists, Conflict, NotFound, Obj, Store
from allinone.workqueue import WorkQueue

log = logging.getLogger(__name__)


class BuildReconciler:
    def __init__(self, store: Store, functions: Informer, builder: Builder, sources: SourceStore,
                 metrics: Metrics, *, max_upload: int, max_unzipped: int, workers: int = 2) -> None:
        self.store = store
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
        generation = fn["metadata"]["generation"]
        if fn["status"].get("observedGeneration") == generation:
            return
        src = fn["spec"]["source"]
        handler = fn["spec"].get("handler", objects.DEFAULT_SPEC["handler"])
        try:
            data = self.sources.get(src["sha256"])
            validated = validate_source(src["filename"], data, handler,
                                        max_upload=self.max_upload, max_unzipped=self.max_unzipped)
            result = await self.builder.build(name, validated, handler)
        except (BuildError, ValueError, OSError) as exc:
            log.warning("build of %s (generation %s) failed: %s", name, generation, exc)
            self.metrics.builds.labels("failed").inc()
            await self._set_status(name, generation, {
                "phase": objects.FAILED, "message": str(exc), "observedGeneration": generation,
            })
            return
        self.metrics.builds.labels("cached" if result.cached else "built").inc()
        log.info("built %s generation %s in %.2f s%s: %s", name, generation, result.seconds,
                 " (cached)" if result.cached else "", result.image)
        template, thash = objects.pod_template(fn, result.image)
        await self._set_template(name, fn, template, thash)
        await self._set_status(name, generation, {
            "phase": objects.READY, "image": result.image, "message": "",
            "observedGeneration": generation, "buildSeconds": round(result.seconds, 3),
        })

    async def _set_template(self, name: str, fn: Obj, template: Obj, thash: str) -> None:
        key = objects.replicaset_key(name)
        for _ in range(10):
            try:
                rs = await self.store.get(key)
            except NotFound:
                rs = objects.replicaset_for(fn)
                rs["spec"].update(template=template, templateHash=thash)
                try:
                    await self.store.create(key, rs)
                    return
                except AlreadyExists:
                    continue
            if rs["spec"].get("template") == template and rs["spec"].get("templateHash") == thash:
                return
            new = copy.deepcopy(rs)
            new["spec"]["template"] = template
            new["spec"]["templateHash"] = thash
            new["metadata"]["generation"] = rs["metadata"].get("generation", 1) + 1
            try:
                await self.store.update(key, new)
                return
            except Conflict:
                continue  # the autoscaler moved replicas meanwhile; re-read and retry
        raise RuntimeError(f"could not update the ReplicaSet of {name}: too many conflicts")

    async def _set_status(self, name: str, generation: int, status: dict[str, Any]) -> None:
        key = objects.function_key(name)
        for _ in range(10):
            try:
                fn = await self.store.get(key)
            except NotFound:
                return
            if fn["metadata"]["generation"] != generation:
                return  # a newer PUT arrived during the build; its own sync takes over
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
        await self.builder.delete_image(name)
        sha = self._deleted_sources.pop(name, None)
        # Archives are content-addressed and may be shared by functions with equal source.
        if sha and sha not in {f["spec"]["source"]["sha256"] for f in self.functions.items()}:
            self.sources.delete(sha)
