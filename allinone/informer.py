"""A list+watch cache of one key prefix, client-go's informer in miniature.

``run`` lists the prefix, fills the cache, then watches from the list revision, so no
change is missed between the two. Each change updates the cache and calls the
registered handlers with ``(key, old, new)`` (``new`` is None on delete). Handlers must
be cheap and must not block: they enqueue keys; the work happens in ``sync``.

Cached objects are shared: treat them as read-only and ``copy.deepcopy`` before
changing one. When the watch breaks (etcd restarted), the informer relists and
resumes, reporting the differences to the handlers, so caches converge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from allinone.store import Obj, Store, StoreError

log = logging.getLogger(__name__)

Handler = Callable[[str, Obj | None, Obj | None], None]


class Informer:
    def __init__(self, store: Store, prefix: str) -> None:
        self.store = store
        self.prefix = prefix
        self.cache: dict[str, Obj] = {}
        self.handlers: list[Handler] = []
        self.synced = asyncio.Event()

    def add_handler(self, handler: Handler) -> None:
        self.handlers.append(handler)

    def get(self, name: str) -> Obj | None:
        return self.cache.get(self.prefix + name)

    def items(self) -> list[Obj]:
        return list(self.cache.values())

    def _notify(self, key: str, old: Obj | None, new: Obj | None) -> None:
        for handler in self.handlers:
            try:
                handler(key, old, new)
            except Exception:  # a bad handler must not stop the others
                log.exception("informer handler failed for %s", key)

    async def _relist(self) -> int:
        objs, revision = await self.store.list(self.prefix)
        fresh = {self.prefix + o["metadata"]["name"]: o for o in objs}
        for key in list(self.cache):
            if key not in fresh:
                old = self.cache.pop(key)
                self._notify(key, old, None)
        for key, obj in fresh.items():
            cached = self.cache.get(key)
            rv = obj["metadata"]["resourceVersion"]
            if cached is None or cached["metadata"]["resourceVersion"] != rv:
                self.cache[key] = obj
                self._notify(key, cached, obj)
        return revision

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                revision = await self._relist()
                self.synced.set()
                backoff = 0.2
                async for event in self.store.watch(self.prefix, revision):
                    old = self.cache.get(event.key)
                    if event.type == "PUT" and event.obj is not None:
                        self.cache[event.key] = event.obj
                        self._notify(event.key, old, event.obj)
                    elif event.type == "DELETE":
                        self.cache.pop(event.key, None)
                        self._notify(event.key, old, None)
                return  # the store was closed
            except asyncio.CancelledError:
                raise
            except (StoreError, OSError) as exc:
                log.warning("watch of %s broke (%s); relisting in %.1f s",
                            self.prefix, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
