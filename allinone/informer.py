"""A list+watch cache of one key prefix, client-go's informer in miniature.

``run`` lists the prefix, fills the cache, then watches from the list revision, so no
change is missed between the two. Each change updates the cache and calls the
registered handlers with ``(key, old, new)`` (``new`` is None on delete). Handlers must
be cheap and must not block: they enqueue keys; the work happens in ``sync``.

Cached objects are shared: treat them as read-only and ``copy.deepcopy`` before
changing one. When the watch breaks (etcd restarted), the store's watch re-subscribes
from the last revision it delivered; only when that is impossible (history compacted,
data reset) does the watch raise, and the informer relists and resumes, reporting the
differences to the handlers, so caches converge.

Error boundaries, so that one object never stops a loop: every object passes the
informer's ``validate`` (a shape check from :mod:`allinone.objects`) before it enters
the cache; a malformed one is logged once with its key and reason, kept out of the
cache (handlers see it as gone) and listed in ``invalid``. Each handler call is
guarded on its own: a handler that raises is logged with the key, the other handlers
still run, and the watch goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from allinone.store import Obj, Store, StoreError

log = logging.getLogger(__name__)

Handler = Callable[[str, Obj | None, Obj | None], None]


class Informer:
    def __init__(self, store: Store, prefix: str,
                 validate: Callable[[Obj], None] | None = None) -> None:
        self.store = store
        self.prefix = prefix
        self.validate = validate
        self.cache: dict[str, Obj] = {}
        # key -> why the stored object was rejected by ``validate``
        self.invalid: dict[str, str] = {}
        self.handlers: list[Handler] = []
        self.synced = asyncio.Event()

    def add_handler(self, handler: Handler) -> None:
        self.handlers.append(handler)

    def get(self, name: str) -> Obj | None:
        return self.cache.get(self.prefix + name)

    def items(self) -> list[Obj]:
        return list(self.cache.values())

    def _checked(self, key: str, obj: Obj) -> Obj | None:
        """``obj`` if it passes ``validate``; else None, logged once per reason."""
        if self.validate is not None:
            try:
                self.validate(obj)
            except (ValueError, KeyError, TypeError) as exc:
                reason = str(exc) or type(exc).__name__
                if self.invalid.get(key) != reason:
                    log.error("%s is malformed (%s); skipped until it is fixed or deleted",
                              key, reason)
                self.invalid[key] = reason
                return None
        self.invalid.pop(key, None)
        return obj

    def _put(self, key: str, obj: Obj) -> None:
        old = self.cache.get(key)
        checked = self._checked(key, obj)
        if checked is None:
            if old is not None:
                del self.cache[key]
                self._notify(key, old, None)
            return
        self.cache[key] = checked
        self._notify(key, old, checked)

    def _notify(self, key: str, old: Obj | None, new: Obj | None) -> None:
        for handler in self.handlers:
            try:
                handler(key, old, new)
            except Exception:  # a bad handler must not stop the others
                log.exception("informer handler failed for %s", key)

    async def _relist(self) -> int:
        objs, revision = await self.store.list(self.prefix)
        # The store names every object after its key (metadata.name), even one whose
        # stored value is malformed.
        fresh = {self.prefix + str(o["metadata"].get("name")): o for o in objs}
        for key in list(self.cache):
            if key not in fresh:
                old = self.cache.pop(key)
                self._notify(key, old, None)
        for key in list(self.invalid):
            if key not in fresh:
                del self.invalid[key]
        for key, obj in fresh.items():
            cached = self.cache.get(key)
            rv = obj["metadata"].get("resourceVersion")
            if cached is None or cached["metadata"]["resourceVersion"] != rv:
                self._put(key, obj)
        return revision

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                revision = await self._relist()
                self.synced.set()
                backoff = 0.2
                async for event in self.store.watch(self.prefix, revision):
                    if event.type == "PUT" and event.obj is not None:
                        self._put(event.key, event.obj)
                    elif event.type == "DELETE":
                        self.invalid.pop(event.key, None)
                        old = self.cache.pop(event.key, None)
                        if old is not None:
                            self._notify(event.key, old, None)
                return  # the store was closed
            except asyncio.CancelledError:
                raise
            except (StoreError, OSError) as exc:
                log.warning("watch of %s broke (%s); relisting in %.1f s",
                            self.prefix, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
