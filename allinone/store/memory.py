"""The in-memory twin of the etcd store, for unit tests and etcd-less runs.

It keeps the contract of :mod:`allinone.store.base` the way etcd does, so a component
tested against it behaves the same against :class:`~allinone.store.etcd.EtcdStore`
(one contract suite, ``tests/store_contract.py``, runs against both):

- One global revision counter. It starts at 1, like an empty etcd, and every write
  (create, update, delete) bumps it by one; an object's ``resourceVersion`` is the
  revision of the write that stored it (etcd's mod revision), as a string.
- Values are stored as JSON text, exactly as in etcd. That is how objects are copied:
  every read parses a fresh object, so no caller can mutate the store's state through
  an object it got back, and a value that etcd could not hold (say a ``datetime``)
  fails here too instead of only in production. ``resourceVersion`` is never part of
  the stored JSON; it is filled in from the revision on every read.
- Every change is appended to a history of events. ``watch(prefix, r)`` replays the
  history after ``r`` and then follows live changes, with no gap or duplicate between
  the two: the replay and the registration for live events happen without an ``await``
  in between, and everything here runs on one event loop.
- The history is bounded (``max_history`` events). Watching from a revision that has
  been dropped raises :class:`StoreError`, like a compacted etcd; the caller re-lists.
- ``close`` ends every watch cleanly (the iterator stops); later calls raise
  :class:`Unavailable`.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from allinone.store.base import (
    AlreadyExists,
    Conflict,
    NotFound,
    Obj,
    StoreError,
    Unavailable,
    WatchEvent,
)

__all__ = ["MemoryStore", "decode_listed", "decode_object", "encode_object",
           "parse_resource_version"]


# ---------------------------------------------------------------------------
# The codec both stores share, so they agree byte for byte on what is stored.


def encode_object(obj: Obj) -> str:
    """The JSON stored for ``obj``, without ``metadata.resourceVersion``.

    The revision of a write is only known once it commits, so storing a version in the
    value would always be stale; readers get it from the key's mod revision instead.
    """
    if not isinstance(obj, dict):
        raise TypeError(f"store objects are JSON objects (dicts), got {type(obj).__name__}")
    metadata = obj.get("metadata")
    if isinstance(metadata, dict) and "resourceVersion" in metadata:
        metadata = {k: v for k, v in metadata.items() if k != "resourceVersion"}
        obj = {**obj, "metadata": metadata}
    # allow_nan=False: NaN and Infinity are not JSON, and other etcd readers choke on them.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def decode_object(value: str | bytes, revision: int) -> Obj:
    """A fresh object parsed from stored JSON, with ``resourceVersion = str(revision)``."""
    try:
        obj = json.loads(value)
    except ValueError as e:
        raise StoreError(f"stored value is not JSON ({e}): {str(value)[:80]!r}") from None
    if not isinstance(obj, dict):
        raise StoreError(f"stored value is not a JSON object: {str(value)[:80]!r}")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = obj["metadata"] = {}
    metadata["resourceVersion"] = str(revision)
    return obj


def decode_listed(value: str | bytes, revision: int, key: str) -> Obj:
    """Like :func:`decode_object`, for lists and watches: never raises.

    One malformed value must not make a whole list (or watch) fail, or every consumer
    of the prefix would stop. The object is named after its key (``metadata.name``
    when it has none) so consumers can report it; a value that is not a JSON object
    becomes an object with only metadata and ``malformed``, which shape checks reject.
    """
    try:
        obj = decode_object(value, revision)
    except StoreError as exc:
        obj = {"metadata": {"resourceVersion": str(revision)}, "malformed": str(exc)}
    if not isinstance(obj["metadata"].get("name"), str):
        obj["metadata"]["name"] = key.rsplit("/", 1)[-1]
    return obj


def parse_resource_version(obj_or_version: Obj | str | None) -> int:
    """The revision an object (or a resourceVersion string) was read at.

    A version that cannot be a revision can never match the stored one, so it is a
    :class:`Conflict`, the same answer as a stale one (the HTTP layer turns it into 409).
    """
    if isinstance(obj_or_version, dict):
        metadata = obj_or_version.get("metadata")
        version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    else:
        version = obj_or_version
    if version is None or version == "":
        raise Conflict(
            "metadata.resourceVersion is missing: read the object first and send back the "
            "resourceVersion you read"
        )
    try:
        revision = int(version)
    except (TypeError, ValueError):
        raise Conflict(
            f"metadata.resourceVersion {version!r} is not a revision number; re-read the "
            "object and retry"
        ) from None
    if revision < 0:
        raise Conflict(f"metadata.resourceVersion {version!r} is negative; re-read and retry")
    return revision


# ---------------------------------------------------------------------------


@dataclass
class _Entry:
    value: str  # JSON without resourceVersion
    mod_revision: int


@dataclass(frozen=True)
class _Change:
    """One history entry; the object stays JSON so it can be handed out many times."""

    type: Literal["PUT", "DELETE"]
    key: str
    value: str
    revision: int

    def event(self) -> WatchEvent:
        return WatchEvent(self.type, self.key, decode_listed(self.value, self.revision, self.key),
                          self.revision)


@dataclass(eq=False)
class _Watcher:
    prefix: str
    # None is the end-of-stream marker that close() sends.
    queue: asyncio.Queue[_Change | None] = field(default_factory=asyncio.Queue)


class MemoryStore:
    """A :class:`~allinone.store.base.Store` in a dict, with etcd's revision semantics."""

    def __init__(self, max_history: int = 100_000) -> None:
        if max_history < 1:
            raise ValueError("max_history must be at least 1")
        self._data: dict[str, _Entry] = {}
        # An empty etcd is at revision 1; the first write is revision 2.
        self._revision = 1
        self._history: deque[_Change] = deque(maxlen=max_history)
        # The newest revision dropped from the history: a watch must start at or after
        # it (etcd's compact revision).
        self._compacted = 0
        self._watchers: set[_Watcher] = set()
        self._closed = False

    @property
    def revision(self) -> int:
        """The current store revision (the revision of the last write)."""
        return self._revision

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the store is closed")

    def _commit(self, type_: Literal["PUT", "DELETE"], key: str, value: str) -> int:
        """Bump the revision, record the change and hand it to matching watchers."""
        self._revision += 1
        change = _Change(type_, key, value, self._revision)
        if len(self._history) == self._history.maxlen:
            # The oldest change falls out of the deque on append.
            self._compacted = self._history[0].revision
        self._history.append(change)
        for watcher in self._watchers:
            if key.startswith(watcher.prefix):
                watcher.queue.put_nowait(change)
        return self._revision

    async def get(self, key: str) -> Obj:
        self._check_open()
        entry = self._data.get(key)
        if entry is None:
            raise NotFound(f"{key} not found")
        return decode_object(entry.value, entry.mod_revision)

    async def list(self, prefix: str) -> tuple[list[Obj], int]:
        self._check_open()
        items = [
            decode_listed(entry.value, entry.mod_revision, key)
            for key, entry in sorted(self._data.items())
            if key.startswith(prefix)
        ]
        return items, self._revision

    async def create(self, key: str, obj: Obj) -> Obj:
        self._check_open()
        value = encode_object(obj)
        if key in self._data:
            raise AlreadyExists(f"{key} already exists")
        revision = self._commit("PUT", key, value)
        self._data[key] = _Entry(value, revision)
        return decode_object(value, revision)

    async def update(self, key: str, obj: Obj) -> Obj:
        self._check_open()
        value = encode_object(obj)
        expected = parse_resource_version(obj)
        entry = self._data.get(key)
        if entry is None:
            raise NotFound(f"{key} not found")
        if entry.mod_revision != expected:
            raise Conflict(
                f"{key} was modified: you sent resourceVersion {expected}, it is now "
                f"{entry.mod_revision}; re-read it and retry"
            )
        revision = self._commit("PUT", key, value)
        self._data[key] = _Entry(value, revision)
        return decode_object(value, revision)

    async def delete(self, key: str, resource_version: str | None = None) -> None:
        self._check_open()
        entry = self._data.get(key)
        if entry is None:
            raise NotFound(f"{key} not found")
        if resource_version is not None:
            expected = parse_resource_version(resource_version)
            if entry.mod_revision != expected:
                raise Conflict(
                    f"{key} was modified: you sent resourceVersion {expected}, it is now "
                    f"{entry.mod_revision}; re-read it and retry"
                )
        # The DELETE event carries the last object, as etcd's prev_kv does.
        self._commit("DELETE", key, entry.value)
        del self._data[key]

    async def watch(self, prefix: str, from_revision: int) -> AsyncIterator[WatchEvent]:
        if self._closed:
            return
        if from_revision < self._compacted:
            raise StoreError(
                f"cannot watch {prefix!r} from revision {from_revision}: the history up to "
                f"revision {self._compacted} was compacted; list again and watch from the "
                "list's revision"
            )
        # Replay and registration happen with no await in between, so no change can
        # fall between them (see the module docstring).
        backlog = [c for c in self._history
                   if c.revision > from_revision and c.key.startswith(prefix)]
        watcher = _Watcher(prefix)
        self._watchers.add(watcher)
        try:
            for change in backlog:
                yield change.event()
            while True:
                change_or_end = await watcher.queue.get()
                if change_or_end is None:
                    return
                if change_or_end.revision > from_revision:
                    yield change_or_end.event()
        finally:
            self._watchers.discard(watcher)

    async def compact(self, revision: int) -> None:
        """Drop the history before ``revision``, like etcd's compaction.

        Afterwards a watch must start at ``revision`` or later, i.e. ``from_revision``
        must be at least ``revision - 1``; earlier ones raise :class:`StoreError`.
        """
        self._check_open()
        if revision > self._revision:
            raise StoreError(
                f"cannot compact to revision {revision}: the store is at {self._revision}")
        while self._history and self._history[0].revision < revision:
            self._history.popleft()
        self._compacted = max(self._compacted, revision - 1)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)


if TYPE_CHECKING:
    from allinone.store.base import Store

    def _conforms(store: MemoryStore) -> Store:
        """mypy checks here that MemoryStore satisfies the Store protocol."""
        return store
