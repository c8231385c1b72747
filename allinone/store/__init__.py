"""store: the only package that talks to etcd (see :mod:`allinone.store.base`)."""

from allinone.store.base import (
    AlreadyExists,
    Conflict,
    NotFound,
    Obj,
    Store,
    StoreError,
    Unavailable,
    WatchEvent,
)

__all__ = [
    "AlreadyExists",
    "Conflict",
    "NotFound",
    "Obj",
    "Store",
    "StoreError",
    "Unavailable",
    "WatchEvent",
]
