"""The store contract: the only way components read and write objects.

Objects are JSON dicts (Kubernetes-shaped, see :mod:`allinone.objects`). Every write
returns the object as stored, with ``metadata.resourceVersion`` set to the etcd mod
revision of that write, so callers never guess it. Rules both implementations keep:

- ``create`` fails with :class:`AlreadyExists` when the key is taken (an etcd
  transaction on ``version == 0``), so two creators never both win.
- ``update`` is a compare-and-swap on ``metadata.resourceVersion``: it fails with
  :class:`Conflict` when the stored object moved on, and callers re-read and retry.
- ``watch(prefix, from_revision)`` yields every change after ``from_revision`` in
  revision order, so ``list`` followed by ``watch(prefix, list_revision)`` misses nothing
  (the client-go list+watch pattern).
- Callers must not mutate returned objects they keep in caches; they copy first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Obj = dict[str, Any]


class StoreError(Exception):
    """Base class of store errors."""


class NotFound(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


class Conflict(StoreError):
    """The object's resourceVersion changed since it was read."""


class Unavailable(StoreError):
    """The backing store cannot be reached."""


@dataclass(frozen=True)
class WatchEvent:
    type: Literal["PUT", "DELETE"]
    key: str
    # For PUT the new object; for DELETE the last object stored under the key
    # (with resourceVersion = the deletion revision) or None when it is unknown.
    obj: Obj | None
    revision: int


class Store(Protocol):
    async def get(self, key: str) -> Obj:
        """The object at ``key``; raises :class:`NotFound`."""
        ...

    async def list(self, prefix: str) -> tuple[list[Obj], int]:
        """All objects under ``prefix`` (sorted by key) and the store revision read at."""
        ...

    async def create(self, key: str, obj: Obj) -> Obj:
        """Store a new object; raises :class:`AlreadyExists`. Returns it as stored."""
        ...

    async def update(self, key: str, obj: Obj) -> Obj:
        """CAS on ``obj['metadata']['resourceVersion']``; raises Conflict/NotFound."""
        ...

    async def delete(self, key: str, resource_version: str | None = None) -> None:
        """Delete (optionally only at that resourceVersion); raises NotFound/Conflict."""
        ...

    def watch(self, prefix: str, from_revision: int) -> AsyncIterator[WatchEvent]:
        """Changes under ``prefix`` strictly after ``from_revision``, in order."""
        ...

    async def close(self) -> None: ...
