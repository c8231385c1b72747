"""Delivery records and the watch's seen-set in the store: what makes triggers crash-only.

Every event is written as a ``TriggerEvent`` record (phase ``Pending``) *before* it is
delivered, and its outcome (``Succeeded``, ``Failed``, ``Replaced``; ``Missed`` for
skipped schedule times) is written after. A server that dies mid-delivery finds the
``Pending`` records at start and delivers them again: at least once.

Records are keyed ``/allinone/trigger-events/TRIGGER/ID`` with IDs that sort in
creation order. A file event's record carries the file's stat; the seen-set
(``/allinone/trigger-seen/TRIGGER/HASH``, one key per file) is only a checkpoint that
is written after the record. At start the seen-set is rebuilt as the checkpoint
overlaid with the newest record of each path (:func:`replay`), so a crash between the
two writes neither loses nor repeats an event. History is bounded: only finished
records are pruned, oldest first, and a pruned record's seen entry was already written.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import secrets
from collections.abc import Callable
from typing import Any

from allinone import objects
from allinone.store import AlreadyExists, Conflict, NotFound, Obj, Store
from allinone.triggers.files import FileStat
from allinone.triggers.spec import events_prefix, seen_key, seen_prefix

log = logging.getLogger(__name__)

PENDING, SUCCEEDED, FAILED, REPLACED, MISSED = (
    "Pending", "Succeeded", "Failed", "Replaced", "Missed")
FINISHED = (SUCCEEDED, FAILED, REPLACED, MISSED)
HISTORY = 100
_seq = itertools.count()


def record_id(wall: float) -> str:
    """Sorts by creation time; unique within and across runs of the server."""
    return f"{int(wall * 1000):013d}-{next(_seq) % 10000:04d}{secrets.token_hex(2)}"


def replay(seen: dict[str, FileStat | None], records: list[Obj]) -> dict[str, FileStat]:
    """The seen-set: the checkpoint overlaid with each path's newest record (in key order)."""
    out = dict(seen)
    for rec in records:
        f = rec["spec"].get("file")
        if f:
            out[f["path"]] = FileStat(f["size"], f["mtimeNs"]) if f["exists"] else None
    return {k: v for k, v in out.items() if v is not None}


async def update_with_retry(store: Store, key: str, change: Callable[[Obj], None]) -> Obj:
    """Read, change a copy, compare-and-swap; again on a conflict. Raises NotFound."""
    while True:
        obj = copy.deepcopy(await store.get(key))
        change(obj)
        try:
            return await store.update(key, obj)
        except Conflict:
            await asyncio.sleep(0)


class Journal:
    def __init__(self, store: Store, history: int = HISTORY) -> None:
        self.store = store
        self.history = history

    async def create(self, trigger: Obj, wall: float, event: dict[str, Any],
                     file: dict[str, Any] | None = None, phase: str = PENDING,
                     status: dict[str, Any] | None = None) -> Obj:
        name, uid = trigger["metadata"]["name"], trigger["metadata"]["uid"]
        while True:
            rid = record_id(wall)
            rec = objects.new_object("TriggerEvent", rid, {
                "trigger": name, "triggerUid": uid, "event": event,
                **({"file": file} if file else {})})
            rec["status"] = {"phase": phase, "attempts": 0,
                             "time": objects.rfc3339(wall), **(status or {})}
            try:
                return await self.store.create(events_prefix(name) + rid, rec)
            except AlreadyExists:
                continue

    async def finish(self, rec: Obj, **status: Any) -> Obj | None:
        key = events_prefix(rec["spec"]["trigger"]) + rec["metadata"]["name"]
        try:
            return await update_with_retry(self.store, key, lambda o: o["status"].update(status))
        except NotFound:
            return None  # the trigger was deleted meanwhile

    async def list(self, name: str, uid: str | None = None) -> list[Obj]:
        items, _ = await self.store.list(events_prefix(name))
        return [r for r in items if uid is None or r["spec"].get("triggerUid") == uid]

    async def prune(self, name: str) -> int:
        """Delete the oldest finished records beyond the history limit."""
        items = await self.list(name)
        extra = len(items) - self.history
        removed = 0
        for rec in items:
            if extra <= 0:
                break
            if rec["status"].get("phase") in FINISHED:
                try:
                    await self.store.delete(events_prefix(name) + rec["metadata"]["name"])
                except NotFound:
                    pass
                extra -= 1
                removed += 1
        return removed

    async def delete_all(self, name: str, keep_uid: str | None = None) -> int:
        """Remove records and seen entries of ``name`` not belonging to ``keep_uid``."""
        removed = 0
        for prefix in (events_prefix(name), seen_prefix(name)):
            items, _ = await self.store.list(prefix)
            for o in items:
                if keep_uid is not None and o["spec"].get("triggerUid") == keep_uid:
                    continue
                try:
                    await self.store.delete(prefix + o["metadata"]["name"])
                    removed += 1
                except NotFound:
                    pass
        return removed

    # -- the seen-set checkpoint --------------------------------------------------

    async def load_seen(self, name: str, uid: str) -> dict[str, FileStat]:
        items, _ = await self.store.list(seen_prefix(name))
        return {o["spec"]["path"]: FileStat(o["spec"]["size"], o["spec"]["mtimeNs"])
                for o in items if o["spec"].get("triggerUid") == uid}

    async def put_seen(self, trigger: Obj, rel: str, st: FileStat | None) -> None:
        name, uid = trigger["metadata"]["name"], trigger["metadata"]["uid"]
        key = seen_key(name, rel)
        if st is None:
            try:
                await self.store.delete(key)
            except NotFound:
                pass
            return
        spec = {"trigger": name, "triggerUid": uid, "path": rel, "size": st.size,
                "mtimeNs": st.mtime_ns}
        try:
            await self.store.create(key, objects.new_object(
                "TriggerSeen", key.rsplit("/", 1)[-1], spec))
        except AlreadyExists:
            def change(o: Obj) -> None:
                o["spec"] = spec
            await update_with_retry(self.store, key, change)
